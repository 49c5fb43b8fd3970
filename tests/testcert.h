/* testcert.h — a throwaway TLS identity for tests: a fresh self-signed P-256
 * certificate and its key, written as PEM files. Never use outside tests. */
#ifndef HUBU_TESTCERT_H
#define HUBU_TESTCERT_H

#include <stddef.h>

/* Writes a new key and a self-signed certificate for it: CN=localhost, SAN
 * DNS:localhost and IP:127.0.0.1, valid from a minute ago for `days` days.
 * The key file is created 0600. The certificate is its own CA, so a client
 * can trust it by loading cert_path as its CA file. Returns 0, or -1 with
 * a reason in err. */
int hubu_testcert_write(const char *cert_path, const char *key_path, int days, char *err, size_t err_size);

#endif
