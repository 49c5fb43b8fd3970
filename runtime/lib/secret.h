/* secret.h — the token secret as stored in a file (DIR/secret or --secret @FILE).
 * hubud and hubuctl read it with this one function, so both hold the same bytes. */
#ifndef HUBU_SECRET_H
#define HUBU_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define HUBU_SECRET_FILE_MAX 4096

/* Reads path: its bytes with trailing whitespace stripped. On success *out is
 * malloc'd and owned by the caller (wipe it with OPENSSL_cleanse before free).
 * Returns 0; -1 with errno set when it cannot be read; -2 when it is empty or
 * larger than HUBU_SECRET_FILE_MAX. */
int hubu_secret_read_file(const char *path, uint8_t **out, size_t *out_len);

#endif
