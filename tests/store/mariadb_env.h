/* mariadb_env.h — reading the env file a private MariaDB server writes
 * (scripts/mariadb-private.sh: KEY=VALUE lines, values shell-quoted only when
 * they must be), for the tests that find their server through
 * HUBU_MARIADB_ENV. */
#ifndef HUBU_TEST_MARIADB_ENV_H
#define HUBU_TEST_MARIADB_ENV_H

#include <stdio.h>
#include <string.h>

/* KEY's value from file into out: 0, or -1 when the file or the key is missing. */
static inline int env_value(const char *file, const char *key, char *out, size_t size) {
  FILE *f = fopen(file, "r");
  if (!f) return -1;
  char line[1024];
  size_t klen = strlen(key);
  int found = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) != 0 || line[klen] != '=') continue;
    char *v = line + klen + 1;
    v[strcspn(v, "\r\n")] = '\0';
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') { /* shell-quoted */
      v[n - 1] = '\0';
      v++;
    }
    n = strlen(v);
    if (n >= size) n = size - 1; /* cut to fit, as snprintf would */
    memcpy(out, v, n);
    out[n] = '\0';
    found = 0;
    break;
  }
  fclose(f);
  return found;
}

#endif
