/* test_mariadb_url.c — mariadb:// store URLs: every accepted form, every
 * refusal with its message, the password sources (URL, file, environment),
 * and the redaction used in logs. No database needed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "mariadb_url.h"

static int parse(const char *url, hubu_mariadb_url *u, char *err) {
  err[0] = '\0';
  return hubu_mariadb_url_parse(url, u, err, 256);
}

static void accepted_forms(void) {
  hubu_mariadb_url u;
  char err[256];
  CHECK_EQ_U64(parse("mariadb://hubu:secret@127.0.0.1:3307/hubu", &u, err), 0);
  CHECK_EQ_STR(u.user, "hubu");
  CHECK_EQ_STR(u.password, "secret");
  CHECK(u.has_password);
  CHECK_EQ_STR(u.host, "127.0.0.1");
  CHECK_EQ_U64(u.port, 3307);
  CHECK_EQ_STR(u.database, "hubu");
  CHECK_EQ_STR(u.socket, "");

  CHECK_EQ_U64(parse("mariadb://app@db.example/im_prod", &u, err), 0);
  CHECK_EQ_STR(u.host, "db.example");
  CHECK_EQ_U64(u.port, 0); /* the default */
  CHECK(!u.has_password);
  CHECK_EQ_STR(u.database, "im_prod");

  CHECK_EQ_U64(parse("mariadb:///hubu?socket=/run/mysqld/mysqld.sock&user=hubu", &u, err), 0);
  CHECK_EQ_STR(u.host, "");
  CHECK_EQ_STR(u.socket, "/run/mysqld/mysqld.sock");
  CHECK_EQ_STR(u.user, "hubu");

  CHECK_EQ_U64(parse("mariadb://hubu:pw@localhost/hubu?socket=%2Ftmp%2Fm.sock", &u, err), 0);
  CHECK_EQ_STR(u.socket, "/tmp/m.sock");

  CHECK_EQ_U64(parse("mariadb://hubu@[::1]:3306/hubu", &u, err), 0);
  CHECK_EQ_STR(u.host, "::1");
  CHECK_EQ_U64(u.port, 3306);

  /* percent-encoded user and password: ':' '@' '/' and '%' inside */
  CHECK_EQ_U64(parse("mariadb://us%40er:p%3Aa%40s%2Fs%25@h/d", &u, err), 0);
  CHECK_EQ_STR(u.user, "us@er");
  CHECK_EQ_STR(u.password, "p:a@s/s%");

  CHECK_EQ_U64(parse("mariadb://u@h/d?connect_timeout=2&read_timeout=20&write_timeout=21&password_file=/x"
                     "&lock_wait_timeout=7",
                     &u, err),
               0);
  CHECK_EQ_U64(u.lock_wait_timeout_s, 7);
  CHECK_EQ_U64(u.connect_timeout_s, 2);
  CHECK_EQ_U64(u.read_timeout_s, 20);
  CHECK_EQ_U64(u.write_timeout_s, 21);
  CHECK_EQ_STR(u.password_file, "/x");
}

static void refused_forms(void) {
  static const struct {
    const char *url;
    const char *says; /* a part of the error message */
  } bad[] = {
      {"mysql://u@h/d", "want mariadb://"},
      {"mariadb://u@h", "no /DATABASE"},
      {"mariadb://u@h/", "database name"},
      {"mariadb://u@h/a-b", "letters, digits"},
      {"mariadb://u@h/d;drop", "letters, digits"},
      {"mariadb://u@h:0/d", "port"},
      {"mariadb://u@h:65536/d", "port"},
      {"mariadb://u@h:12x/d", "port"},
      {"mariadb://u@[::1/d", "IPv6"},
      {"mariadb://u@[::1]x/d", "IPv6"},
      {"mariadb://h/d", "want a user"},
      {"mariadb:///d", "want a host"},
      {"mariadb://u:p%zz@h/d", "password"},
      {"mariadb://u:p%00@h/d", "password"},
      {"mariadb://u@h/d?socket", "NAME=VALUE"},
      {"mariadb://u@h/d?colour=blue", "unknown option"},
      {"mariadb://u@h/d?connect_timeout=0", "seconds"},
      {"mariadb://u@h/d?read_timeout=abc", "seconds"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hubu_mariadb_url u;
    char err[256];
    if (!CHECK(parse(bad[i].url, &u, err) == -1)) {
      fprintf(stderr, "    accepted: %s\n", bad[i].url);
      continue;
    }
    if (!CHECK(strstr(err, bad[i].says) != NULL)) fprintf(stderr, "    %s: \"%s\"\n", bad[i].url, err);
    CHECK(strstr(err, "p%") == NULL); /* never the password */
  }
  /* too long: a user of 81 bytes */
  char url[256];
  snprintf(url, sizeof url, "mariadb://%081d@h/d", 0);
  hubu_mariadb_url u;
  char err[256];
  CHECK(parse(url, &u, err) == -1);
  CHECK(strstr(err, "user") != NULL);
}

static void password_sources(void) {
  hubu_mariadb_url u;
  char err[256];
  /* the URL's wins over the environment */
  setenv(HUBU_MARIADB_PASSWORD_ENV, "from-env", 1);
  CHECK_EQ_U64(parse("mariadb://u:in-url@h/d", &u, err), 0);
  CHECK_EQ_U64(hubu_mariadb_url_password(&u, err, sizeof err), 0);
  CHECK_EQ_STR(u.password, "in-url");
  /* without one, the environment */
  CHECK_EQ_U64(parse("mariadb://u@h/d", &u, err), 0);
  CHECK_EQ_U64(hubu_mariadb_url_password(&u, err, sizeof err), 0);
  CHECK_EQ_STR(u.password, "from-env");
  CHECK(u.has_password);
  /* a file: its first line, without the line end */
  char path[] = "/tmp/hubu-pw-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd >= 0) {
    CHECK(write(fd, "file-pw\r\nsecond line\n", 21) == 21);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "mariadb://u@h/d?password_file=%s", path);
    CHECK_EQ_U64(parse(url, &u, err), 0);
    CHECK_EQ_U64(hubu_mariadb_url_password(&u, err, sizeof err), 0);
    CHECK_EQ_STR(u.password, "file-pw");
    unlink(path);
    /* a missing file is an error that names it */
    CHECK_EQ_U64(parse(url, &u, err), 0);
    CHECK(hubu_mariadb_url_password(&u, err, sizeof err) == -1);
    CHECK(strstr(err, path) != NULL);
  }
  /* none anywhere: no password (the server may allow that, e.g. unix_socket authentication) */
  unsetenv(HUBU_MARIADB_PASSWORD_ENV);
  CHECK_EQ_U64(parse("mariadb://u@h/d", &u, err), 0);
  CHECK_EQ_U64(hubu_mariadb_url_password(&u, err, sizeof err), 0);
  CHECK(!u.has_password);
}

static void redaction(void) {
  char out[256];
  hubu_mariadb_url_redact("mariadb://hubu:s3cret@127.0.0.1:3306/hubu", out, sizeof out);
  CHECK_EQ_STR(out, "mariadb://hubu:***@127.0.0.1:3306/hubu");
  hubu_mariadb_url_redact("mariadb://hubu@h/d?socket=/x", out, sizeof out);
  CHECK_EQ_STR(out, "mariadb://hubu@h/d?socket=/x");
  hubu_mariadb_url_redact("mariadb://a:b@c@h/d", out, sizeof out); /* the last '@' ends the password */
  CHECK_EQ_STR(out, "mariadb://a:***@h/d");
  hubu_mariadb_url_redact("mariadb://u:se/cret@h/db", out, sizeof out); /* does not parse: hidden all the same */
  CHECK_EQ_STR(out, "mariadb://u:***@h/db");
  hubu_mariadb_url_redact("mysql://u:pw@h/db", out, sizeof out); /* another scheme */
  CHECK_EQ_STR(out, "mysql://u:***@h/db");
  hubu_mariadb_url_redact("sqlite:/var/lib/hubu/hubu.db", out, sizeof out);
  CHECK_EQ_STR(out, "sqlite:/var/lib/hubu/hubu.db");
}

int main(int argc, char **argv) {
  (void)argc;
  accepted_forms();
  refused_forms();
  password_sources();
  redaction();
  return check_summary(argv[0]);
}
