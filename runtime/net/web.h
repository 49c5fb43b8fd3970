/* web.h — the chat page's static files (web/ in the source tree): built into
 * hubud at build time, or read from --web-root DIR on each request (for
 * editing the page without a rebuild). */
#ifndef HUBU_NET_WEB_H
#define HUBU_NET_WEB_H

#include <stddef.h>

typedef struct {
  const char *name; /* "index.html": flat, [a-z0-9_.-] */
  const unsigned char *data;
  size_t len;
} hubu_web_asset;

/* The file for a request path ("/" is "/index.html"): from root when root is
 * not NULL (read into *owned, which the caller frees), else built in. The
 * content type goes to *type. 0, or -1 when there is no such file (a path
 * outside the flat folder never is one). */
int hubu_web_find(const char *root, const char *path, size_t path_len, const unsigned char **data, size_t *len,
                  unsigned char **owned, const char **type);

#endif
