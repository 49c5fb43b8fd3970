"""bench_medians.py: the medians the bench-*.sh scripts print their tables from.

medians(path, width, keys) reads the lines of path that have exactly width
fields, the first not starting with '#'. The first keys fields name a row (a
tuple of them, or the field itself when keys is 1); the others are numbers.
It returns ({name: [the median of each column]}, the most lines any name had,
i.e. the rounds run).
"""
import collections
import statistics


def medians(path, width, keys):
    rows = collections.defaultdict(list)
    with open(path) as lines:
        for line in lines:
            f = line.split()
            if len(f) != width or f[0].startswith("#"):
                continue
            name = f[0] if keys == 1 else tuple(f[:keys])
            rows[name].append([float(x) for x in f[keys:]])
    med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
    return med, max((len(v) for v in rows.values()), default=0)
