/* web.c — static files of the HTTP listener (see web.h). The built-in table
 * is generated from web/ by cmake/embed_dir.cmake. */
#include "web.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const hubu_web_asset hubu_web_assets[];
extern const size_t hubu_web_assets_count;

#define MAX_FILE (8u << 20) /* a file of --web-root above this is not served */

static const char *type_of(const char *name) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
  };
  const char *dot = strrchr(name, '.');
  for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
    if (!strcmp(dot, types[i].ext)) return types[i].type;
  return "application/octet-stream";
}

/* A flat file name: [a-z0-9_.-], not starting with a dot, at most 64 bytes. */
static int name_ok(const char *s, size_t len) {
  if (!len || len > 64 || s[0] == '.') return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return 0;
  }
  return 1;
}

int hubu_web_find(const char *root, const char *path, size_t path_len, const unsigned char **data, size_t *len,
                  unsigned char **owned, const char **type) {
  *owned = NULL;
  if (!path_len || path[0] != '/') return -1;
  const char *name = path + 1;
  size_t name_len = path_len - 1;
  if (!name_len) {
    name = "index.html";
    name_len = strlen(name);
  }
  if (!name_ok(name, name_len)) return -1;
  char file[80];
  snprintf(file, sizeof file, "%.*s", (int)name_len, name);
  *type = type_of(file);
  if (!root) {
    for (size_t i = 0; i < hubu_web_assets_count; i++)
      if (!strcmp(hubu_web_assets[i].name, file)) {
        *data = hubu_web_assets[i].data;
        *len = hubu_web_assets[i].len;
        return 0;
      }
    return -1;
  }
  char full[4200];
  if ((size_t)snprintf(full, sizeof full, "%s/%s", root, file) >= sizeof full) return -1;
  FILE *f = fopen(full, "rb");
  if (!f) return -1;
  unsigned char *buf = NULL;
  size_t n = 0;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size >= 0 && (unsigned long)size <= MAX_FILE && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) != NULL)
      n = fread(buf, 1, (size_t)size, f);
  }
  fclose(f);
  if (!buf) return -1;
  *data = *owned = buf;
  *len = n;
  return 0;
}
