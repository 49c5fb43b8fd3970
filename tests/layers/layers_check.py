#!/usr/bin/env python3
"""layers_check.py — the server's folders are layers (docs/architecture.md):
a file may include headers of its own folder and of the layers below it,
never above, and no two folders include each other.

  layers_check.py RUNTIME_DIR            check the tree; exit 1 on any violation
  layers_check.py --self-test RUNTIME    copy the tree, plant an upward include
                                         and a folder cycle, and check that
                                         each is reported (exit 0 when both are)

The order, lowest first. The top (runtime/ itself: main.c, config) may
include every layer. Headers outside runtime/ (system, libraries, generated
protobuf) are not the concern of this check.
"""
import os
import re
import shutil
import sys
import tempfile

LAYERS = ["lib", "store", "core", "cluster", "plugin", "net", "admin", "."]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def rank(folder):
    return LAYERS.index(folder) if folder in LAYERS else None


def scan(root):
    """Returns (headers: name -> folder, files: [(folder, path)])."""
    headers, files = {}, []
    for folder in LAYERS:
        d = os.path.join(root, folder)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not os.path.isfile(path) or not name.endswith((".c", ".h")):
                continue
            files.append((folder, path))
            if name.endswith(".h"):
                headers.setdefault(name, folder)
    return headers, files


def check(root):
    headers, files = scan(root)
    problems, edges = [], {}
    for folder, path in files:
        with open(path, errors="replace") as f:
            text = f.read()
        for inc in INCLUDE.findall(text):
            target = headers.get(os.path.basename(inc))
            if target is None or target == folder:
                continue
            edges.setdefault(folder, set()).add(target)
            if rank(target) > rank(folder):
                rel = os.path.relpath(path, root)
                problems.append(f"upward include: {rel} ({folder}) includes {inc} ({target})")
    for a, outs in edges.items():
        for b in outs:
            if a < b and a in edges.get(b, ()):
                problems.append(f"folder cycle: {a} <-> {b}")
    for folder in sorted({f for f, _ in files}):
        print(f"{folder or '.'} -> {', '.join(sorted(edges.get(folder, ()))) or '-'}")
    return problems


def self_test(root):
    tmp = tempfile.mkdtemp(prefix="hubu-layers-")
    try:
        copy = os.path.join(tmp, "runtime")
        shutil.copytree(root, copy)
        if check(copy):
            print("self-test: the tree itself has violations; fix those first")
            return 1
        # An upward include: core reaching into net.
        with open(os.path.join(copy, "core", "planted.c"), "w") as f:
            f.write('#include "conn.h"\n')
        up = check(copy)
        # A cycle (and an upward include): lib including core.
        with open(os.path.join(copy, "lib", "planted.c"), "w") as f:
            f.write('#include "session.h"\n')
        both = check(copy)
        ok = any("upward include: core/planted.c" in p for p in up) and any("folder cycle" in p for p in both)
        print("self-test:", "planted violations reported" if ok else "a planted violation was NOT reported")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp)


def main(argv):
    if len(argv) == 3 and argv[1] == "--self-test":
        return self_test(argv[2])
    if len(argv) != 2:
        print(__doc__)
        return 2
    problems = check(argv[1])
    for p in problems:
        print(p)
    print(f"{len(problems)} layering problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
