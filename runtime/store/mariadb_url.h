/* mariadb_url.h — the MariaDB store's URL, taken apart:
 *
 *   mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTIONS]
 *   mariadb://USER@[IPV6]:PORT/DATABASE
 *   mariadb:///DATABASE?socket=PATH          (a unix socket; user from ?user=)
 *
 * OPTIONS, '&'-separated: socket=PATH, user=NAME, password_file=PATH (the
 * password is the file's first line), connect_timeout=S, read_timeout=S,
 * write_timeout=S, lock_wait_timeout=S (InnoDB's lock wait),
 * idle_transaction_timeout=S (how long the server lets the store's
 * connection sit idle inside a transaction before closing it; default 5,
 * store_mariadb.c). USER, PASSWORD and option values are percent-decoded.
 * Without a password in the URL or a password_file, the environment's
 * HUBU_STORE_PASSWORD is used, so the secret need not show in `ps`. */
#ifndef HUBU_STORE_MARIADB_URL_H
#define HUBU_STORE_MARIADB_URL_H

#include <stddef.h>

#define HUBU_MARIADB_SCHEME "mariadb://"
#define HUBU_MARIADB_PASSWORD_ENV "HUBU_STORE_PASSWORD"

typedef struct {
  char user[81];
  char password[257];
  int has_password;
  char host[256]; /* "" with a socket */
  unsigned port;  /* 0: the default, 3306 */
  char socket[256];
  char database[65];
  char password_file[256];
  unsigned connect_timeout_s; /* 0: the default */
  unsigned read_timeout_s;
  unsigned write_timeout_s;
  unsigned lock_wait_timeout_s; /* 0: the default */
  unsigned idle_txn_timeout_s;  /* 0: the default */
} hubu_mariadb_url;

/* Parses url into out. 0, or -1 with err saying what is wrong (never the
 * password). Reads neither the file nor the environment. */
int hubu_mariadb_url_parse(const char *url, hubu_mariadb_url *out, char *err, size_t err_size);

/* Fills out->password from password_file, else from HUBU_STORE_PASSWORD,
 * unless the URL had one. 0, or -1 with err. */
int hubu_mariadb_url_password(hubu_mariadb_url *out, char *err, size_t err_size);

/* The URL with the password replaced by "***", for logs. */
void hubu_mariadb_url_redact(const char *url, char *out, size_t size);

#endif
