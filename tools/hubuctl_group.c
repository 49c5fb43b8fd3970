/* hubuctl_group.c — `hubuctl group`: create groups and change their members.
 * While hubud runs, through its admin listener (found with --admin, else
 * $HUBU_ADMIN, else DIR/hubud.admin, which hubud writes at start): the
 * server changes the store and every copy of the group it holds in memory,
 * so a new member may send at once. Without a running server, directly in
 * the store (--store, else sqlite:DIR/hubu.db). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mariadb_url.h"
#include "store.h"
#include "token.h"

int hubuctl_group(int argc, char **argv);
int hubuctl_group_admin(const char *admin, const char *token_arg, int quiet, const char *verb, const char *group,
                        const char *const *users, size_t n_users); /* hubuctl_admin.c */

static int usage(void) {
  fprintf(stderr,
          "usage: hubuctl group create g:NAME [USER...] [OPTIONS]\n"
          "       hubuctl group add g:NAME USER... [OPTIONS]\n"
          "       hubuctl group remove g:NAME USER... [OPTIONS]\n"
          "       hubuctl group members g:NAME [OPTIONS]\n"
          "options: --data DIR | --store URL, --admin HOST:PORT, --admin-token TOKEN|@FILE, --offline\n"
          "While hubud runs, the change goes through its admin listener (--admin, else $HUBU_ADMIN, else the\n"
          "address hubud wrote to DIR/hubud.admin), so the running server sees it at once; with nobody\n"
          "listening there, or with --offline, it is made in the store: --store (or $HUBU_STORE) is hubud's\n"
          "--store, the default sqlite:DIR/hubu.db.\n");
  return 2;
}

int hubuctl_group(int argc, char **argv) {
  const char *data = "./data", *url = getenv("HUBU_STORE");
  const char *verb = NULL, *group = NULL, *admin = getenv("HUBU_ADMIN"), *admin_token = NULL;
  const char *users[1024];
  size_t n_users = 0;
  int offline = 0, store_given = url && *url;
  if (admin && !*admin) admin = NULL;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--data") && i + 1 < argc) {
      data = argv[++i];
    } else if (!strcmp(argv[i], "--store") && i + 1 < argc) {
      url = argv[++i];
      store_given = 1;
    } else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
      admin = argv[++i];
    } else if (!strcmp(argv[i], "--admin-token") && i + 1 < argc) {
      admin_token = argv[++i];
    } else if (!strcmp(argv[i], "--offline")) {
      offline = 1;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "hubuctl: group: unknown option %s\n", argv[i]);
      return usage();
    } else if (!verb) {
      verb = argv[i];
    } else if (!group) {
      group = argv[i];
    } else if (n_users < sizeof users / sizeof *users) {
      if (!hubu_id_valid(argv[i], strlen(argv[i]))) {
        fprintf(stderr, "hubuctl: '%s' is not a valid user id\n", argv[i]);
        return 2;
      }
      users[n_users++] = argv[i];
    } else {
      fprintf(stderr, "hubuctl: too many users\n");
      return 2;
    }
  }
  if (!verb || !group) return usage();
  if (hubu_session_id_check(group, strlen(group)) != HUBU_SESSION_GROUP) {
    fprintf(stderr, "hubuctl: '%s' is not a group id (g:NAME)\n", group);
    return 2;
  }
  int create = !strcmp(verb, "create"), add = !strcmp(verb, "add"), remove = !strcmp(verb, "remove"),
      members = !strcmp(verb, "members");
  if (!(create || add || remove || members) || ((add || remove) && !n_users)) return usage();

  /* The running server first: an explicit --admin must answer; the address
   * hubud wrote into the data directory may be stale (a crash left it). */
  char found[300] = "";
  int explicit_admin = admin != NULL;
  if (!offline && !admin && !store_given) {
    char path[4200];
    snprintf(path, sizeof path, "%s/hubud.admin", data);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(found, sizeof found, f)) found[strcspn(found, "\r\n")] = '\0';
      fclose(f);
      if (found[0]) admin = found;
    }
  }
  if (!offline && admin) {
    int r = hubuctl_group_admin(admin, admin_token, !explicit_admin, verb, group, users, n_users);
    if (r >= 0) return r;
    if (explicit_admin) return 1;
    fprintf(stderr, "hubuctl: group: no hubud answers at %s (from %s/hubud.admin); changing the store directly\n",
            admin, data);
  }

  char default_url[4200], err[256];
  if (!url || !*url) {
    if (hubu_store_default_url(data, default_url, sizeof default_url) != 0) {
      fprintf(stderr, "hubuctl: --data path too long\n");
      return 2;
    }
    url = default_url;
  }
  hubu_store_config cfg = {.url = url, .fsync = HUBU_FSYNC_BATCH};
  const hubu_store_backend *backend = hubu_store_backend_for_url(url, err, sizeof err);
  if (!backend) { /* err quotes the URL, which may hold a password */
    fprintf(stderr, "hubuctl: no store backend for the --store URL's scheme (this build has sqlite:..., %s...)\n",
            HUBU_MARIADB_SCHEME);
    return 2;
  }
  void *db = backend->open(&cfg, err, sizeof err);
  if (!db) {
    /* the password redacted; a mariadb:// URL that does not parse is not shown (its password would not be found) */
    char shown[512];
    hubu_mariadb_url parsed;
    char parse_err[256];
    if (!strncmp(url, HUBU_MARIADB_SCHEME, strlen(HUBU_MARIADB_SCHEME)) &&
        hubu_mariadb_url_parse(url, &parsed, parse_err, sizeof parse_err) != 0)
      snprintf(shown, sizeof shown, "%s(malformed URL, not shown)", HUBU_MARIADB_SCHEME);
    else
      hubu_mariadb_url_redact(url, shown, sizeof shown);
    explicit_bzero(&parsed, sizeof parsed);
    fprintf(stderr, "hubuctl: cannot open the store %s: %s\n", shown, err);
    return 1;
  }
  int status = 0;
  hubu_store_op *op = NULL;
  if (create) {
    op = hubu_store_op_new(HUBU_STORE_SESSION_CREATE);
    hubu_store_session_create_op *new_group = op ? &op->session_create : NULL;
    if (op && n_users && !(new_group->members = calloc(n_users, sizeof *new_group->members))) status = 1;
    for (size_t i = 0; op && !status && i < n_users; i++)
      if (!(new_group->members[new_group->n_members++] = strdup(users[i]))) status = 1;
    if (op) {
      snprintf(new_group->kind, sizeof new_group->kind, "group");
      snprintf(new_group->session_id, sizeof new_group->session_id, "%s", group);
    }
  } else if (members) {
    op = hubu_store_op_new(HUBU_STORE_SESSION_LOAD);
    if (op) snprintf(op->session_load.session_id, sizeof op->session_load.session_id, "%s", group);
  }
  if (op && !status) {
    backend->execute(db, op);
    if (op->status == HUBU_STORE_EXISTS) {
      fprintf(stderr, "hubuctl: %s already exists\n", group);
      status = 1;
    } else if (op->status == HUBU_STORE_NOT_FOUND) {
      fprintf(stderr, "hubuctl: no group %s\n", group);
      status = 1;
    } else if (op->status != HUBU_STORE_OK) {
      fprintf(stderr, "hubuctl: %s\n", op->error);
      status = 1;
    } else if (members) {
      for (size_t i = 0; i < op->session_load.n_members; i++) printf("%s\n", op->session_load.members[i]);
    }
  } else if (!op && (create || members)) {
    status = 1;
  }
  hubu_store_op_free(op);
  for (size_t i = 0; (add || remove) && !status && i < n_users; i++) {
    op = hubu_store_op_new(add ? HUBU_STORE_MEMBER_ADD : HUBU_STORE_MEMBER_REMOVE);
    if (!op) {
      status = 1;
      break;
    }
    snprintf(op->member.session_id, sizeof op->member.session_id, "%s", group);
    snprintf(op->member.user, sizeof op->member.user, "%s", users[i]);
    snprintf(op->member.role, sizeof op->member.role, "member");
    backend->execute(db, op);
    if (op->status != HUBU_STORE_OK) {
      fprintf(stderr, "hubuctl: %s %s: %s\n", verb, users[i],
              op->status == HUBU_STORE_NOT_FOUND ? (add ? "no such group" : "not a member") : op->error);
      status = 1;
    }
    hubu_store_op_free(op);
  }
  backend->close(db);
  if (!status && !members) printf("%s: %s done\n", group, verb);
  return status;
}
