/* fuzz_replay.h — what the fuzz targets' plain programs (-DHUBU_FUZZ_REPLAY)
 * share: writing their seeds as a kept corpus, and replaying the files of
 * corpus directories through the target. Header-only; static functions. */
#ifndef HUBU_FUZZ_REPLAY_H
#define HUBU_FUZZ_REPLAY_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>

/* Writes seed i (get(i, &len)) as DIR/seed-NN for i < n. 0, or 1 (reported). */
static int fuzz_write_seeds(const char *dir, size_t n, const uint8_t *(*get)(size_t i, size_t *len)) {
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    size_t len;
    const uint8_t *p = get(i, &len);
    snprintf(path, sizeof path, "%s/seed-%02zu", dir, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
      perror(path);
      return 1;
    }
  }
  return 0;
}

/* Runs fn on each file (up to 64 KiB of it) of dirs[0..n). Returns how many
 * files ran, or -1 when a directory does not open (reported). */
static long fuzz_replay_dirs(char **dirs, int n, void (*fn)(const uint8_t *p, size_t len)) {
  long files = 0;
  for (int a = 0; a < n; a++) {
    DIR *d = opendir(dirs[a]);
    if (!d) {
      perror(dirs[a]);
      return -1;
    }
    for (struct dirent *e; (e = readdir(d));) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", dirs[a], e->d_name);
      FILE *f = fopen(path, "rb");
      if (!f) continue;
      static uint8_t buf[1 << 16];
      size_t len = fread(buf, 1, sizeof buf, f);
      fclose(f);
      fn(buf, len);
      files++;
    }
    closedir(d);
  }
  return files;
}

#endif
