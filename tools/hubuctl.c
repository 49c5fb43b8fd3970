/* hubuctl.c — the admin command line. Each subcommand is one row of the
 * `commands` table: a name, a one-line usage, and a function that gets the
 * arguments after the name and returns the exit status (0 ok, 1 failure,
 * 2 usage error). `token` and `group` work on the data directory, `store`
 * copies a whole store to another (hubuctl_store.c); stats, conns, kick,
 * reload and plugins speak to the admin listener (hubuctl_admin.c). */
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "secret.h"
#include "token.h"

#define EXIT_USAGE 2
#define DEFAULT_TTL_S 86400
#define DEFAULT_DATA_DIR "./data"

typedef struct {
  const char *name;
  const char *usage;   /* arguments after the name */
  const char *summary; /* one line for `hubuctl help` */
  const char *options; /* option lines for `hubuctl help`, or "" */
  int (*run)(int argc, char **argv);
} hubuctl_command;

static int cmd_token(int argc, char **argv);
static int cmd_help(int argc, char **argv);
int hubuctl_group(int argc, char **argv);   /* hubuctl_group.c */
int hubuctl_store(int argc, char **argv);   /* hubuctl_store.c */
int hubuctl_stats(int argc, char **argv);   /* hubuctl_admin.c */
int hubuctl_cluster(int argc, char **argv); /* hubuctl_admin.c */
int hubuctl_conns(int argc, char **argv);   /* hubuctl_admin.c */
int hubuctl_kick(int argc, char **argv);    /* hubuctl_admin.c */
int hubuctl_reload(int argc, char **argv);  /* hubuctl_admin.c */
int hubuctl_plugins(int argc, char **argv); /* hubuctl_admin.c */
int hubuctl_plugin(int argc, char **argv);  /* hubuctl_plugin.c */

static const hubuctl_command commands[] = {
    {"token", "USER [--ttl SECONDS] [--reserved] [--secret S|@FILE | --data DIR]",
     "print a token for USER (PROTOCOL.md section 6), valid for SECONDS (default 86400)",
     "  --ttl SECONDS   lifetime of the token (default 86400)\n"
     "  --reserved      a reserved-user token (v1r.): it also logs in as a user a plugin reserved (a bot)\n"
     "  --secret S      the server's secret, taken as its bytes\n"
     "  --secret @FILE  read the secret from FILE (trailing whitespace stripped)\n"
     "  --data DIR      read the secret from DIR/secret (default " DEFAULT_DATA_DIR ")\n",
     cmd_token},
    {"group", "create|add|remove|members g:NAME [USER...] [--data DIR | --store URL] [--admin HOST:PORT] [--offline]",
     "create a group or change its members: through the running hubud (found in DIR/hubud.admin, "
     "default " DEFAULT_DATA_DIR "), else in the store",
     "", hubuctl_group},
    {"store", "copy --to URL [--from URL | --data DIR] [--chunk N] [--max-rows N] [--verify-only] [--quiet]",
     "copy every table of a store into another (sqlite:PATH to mariadb://..., or back), resumable, verified",
     "  --to URL         the store to write: mariadb://USER:PASS@HOST:PORT/DB (the password may come from\n"
     "                   ?password_file=PATH or $HUBU_STORE_PASSWORD instead; it is never printed) or sqlite:PATH;\n"
     "                   its schema is made or migrated as hubud does\n"
     "  --from URL       the store to read (default $HUBU_STORE, else sqlite:DIR/hubu.db of --data)\n"
     "  --chunk N        messages per transaction on the destination (default 1000)\n"
     "  --max-rows N     copy at most N messages in this run, then stop (exit 4)\n"
     "  --verify-only    copy nothing: compare row counts and per-column sums only\n"
     "                   Stop hubud first: a run copies the source as it was when it began, so copy again after\n"
     "                   stopping it to catch up. Interrupted, the same command goes on after the destination's\n"
     "                   last message. Exit 0 when the stores match, 3 when they differ, 4 when stopped early.\n"
     "                   `hubuctl store --help` says more.\n",
     hubuctl_store},
    {"stats", "[--admin HOST:PORT]", "print the server's figures as JSON (GET /v1/admin/stats)",
     "  --admin HOST:PORT  hubud's admin listener (default $HUBU_ADMIN, else 127.0.0.1:7781);\n"
     "                     every admin command (stats, conns, kick, reload, plugins) takes it\n"
     "  --admin-token TOKEN|@FILE  the listener's --admin-token, sent as Authorization: Bearer\n"
     "                     (default $HUBU_ADMIN_TOKEN); every admin command takes it too\n",
     hubuctl_stats},
    {"cluster", "[--admin HOST:PORT]",
     "cluster mode: this node, the seq generation, Redis' health and every node with its lease and connections, as "
     "JSON (GET /v1/admin/cluster)",
     "", hubuctl_cluster},
    {"conns", "[USER] [--admin HOST:PORT]", "list the open connections, or USER's, as JSON", "", hubuctl_conns},
    {"kick", "USER [--reason R] [--admin HOST:PORT]", "send GOAWAY KICKED to every connection of USER", "",
     hubuctl_kick},
    {"reload", "[PLUGIN | --config] [--admin HOST:PORT]",
     "reload every plugin, or PLUGIN, without a restart; --config: read hubu.lua again and reload the plugins whose "
     "section changed",
     "", hubuctl_reload},
    {"plugins", "[--json] [--admin HOST:PORT]",
     "list the loaded plugins as a table, and each failed reload (GET /v1/admin/plugins)",
     "  --json             print the server's JSON as it wrote it instead of the table\n", hubuctl_plugins},
    {"plugin", "check FILE|DIR [--config hubu.lua] [--strict]",
     "load plugins into a scratch host (no server) and print every error and warning; exit 1 on an error",
     "  --config FILE      hubu.lua: each plugin gets its section, and unknown options are warned about\n"
     "  --strict           warnings count as errors for the exit status\n",
     hubuctl_plugin},
    {"help", "", "print this help", "", cmd_help},
};
#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static void print_usage(FILE *f) {
  fprintf(f, "usage: hubuctl COMMAND [ARGS]\n\ncommands:\n");
  for (size_t i = 0; i < COMMAND_COUNT; i++) {
    const char *usage = commands[i].usage;
    fprintf(f, "  %s%s%s\n      %s\n", commands[i].name, usage[0] ? " " : "", usage, commands[i].summary);
  }
  for (size_t i = 0; i < COMMAND_COUNT; i++) {
    if (commands[i].options[0]) fprintf(f, "\n%s options:\n%s", commands[i].name, commands[i].options);
  }
}

static int cmd_help(int argc, char **argv) {
  (void)argc;
  (void)argv;
  print_usage(stdout);
  return 0;
}

/* Reads a secret file through the same reader hubud uses; prints why on failure. */
static int read_secret_file(const char *path, uint8_t **out, size_t *out_len) {
  int r = hubu_secret_read_file(path, out, out_len);
  if (r == -1) fprintf(stderr, "hubuctl: cannot read secret file %s: %s\n", path, strerror(errno));
  if (r == -2)
    fprintf(stderr, "hubuctl: secret file %s is empty or larger than %d bytes\n", path, HUBU_SECRET_FILE_MAX);
  return r == 0 ? 0 : -1;
}

/* Matches argv[*i] against "--name VALUE" or "--name=VALUE". Returns 1 and
 * sets *value (advancing *i past a separate value), 0 when argv[*i] is not
 * this option, -1 when its value is missing. */
static int take_option(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t n = strlen(name);
  const char *arg = argv[*i];
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '=') {
    *value = arg + n + 1;
    return 1;
  }
  if (arg[n] != '\0') return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "hubuctl: %s needs a value\n", name);
    return -1;
  }
  *i += 1;
  *value = argv[*i];
  return 1;
}

static int parse_ttl(const char *s, uint64_t *out) {
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0) return -1;
  *out = v;
  return 0;
}

static int cmd_token(int argc, char **argv) {
  const char *user = NULL;
  const char *ttl_arg = NULL;
  const char *secret_arg = NULL;
  const char *data_dir = NULL;
  int reserved = 0;

  for (int i = 0; i < argc; i++) {
    int r;
    if (strcmp(argv[i], "--reserved") == 0) {
      reserved = 1;
    } else if ((r = take_option(argc, argv, &i, "--ttl", &ttl_arg)) ||
               (r = take_option(argc, argv, &i, "--secret", &secret_arg)) ||
               (r = take_option(argc, argv, &i, "--data", &data_dir))) {
      if (r < 0) return EXIT_USAGE;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      print_usage(stdout);
      return 0;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "hubuctl: token: unknown option %s\n", argv[i]);
      return EXIT_USAGE;
    } else if (user) {
      fprintf(stderr, "hubuctl: token: one USER only (got '%s' and '%s')\n", user, argv[i]);
      return EXIT_USAGE;
    } else {
      user = argv[i];
    }
  }
  if (!user) {
    fprintf(stderr, "usage: hubuctl token %s\n", commands[0].usage);
    return EXIT_USAGE;
  }
  if (!hubu_id_valid(user, strlen(user))) {
    fprintf(stderr, "hubuctl: invalid user id '%s': 1-64 bytes of [A-Za-z0-9_.@-]\n", user);
    return EXIT_USAGE;
  }
  uint64_t ttl = DEFAULT_TTL_S;
  if (ttl_arg && parse_ttl(ttl_arg, &ttl) != 0) {
    fprintf(stderr, "hubuctl: --ttl wants a positive number of seconds, got '%s'\n", ttl_arg);
    return EXIT_USAGE;
  }
  time_t now = time(NULL);
  if (now < 0 || ttl > UINT64_MAX - (uint64_t)now) {
    fprintf(stderr, "hubuctl: --ttl %s is too large\n", ttl_arg);
    return EXIT_USAGE;
  }
  if (secret_arg && data_dir) {
    fprintf(stderr, "hubuctl: token: give --secret or --data, not both\n");
    return EXIT_USAGE;
  }

  const uint8_t *secret = (const uint8_t *)secret_arg;
  size_t secret_len = secret_arg ? strlen(secret_arg) : 0;
  const char *secret_from = "--secret";
  uint8_t *file_secret = NULL; /* owned here; wiped and freed on the way out */
  char path[PATH_MAX];
  if (!secret_arg || secret_arg[0] == '@') {
    if (secret_arg) {
      secret_from = secret_arg + 1;
    } else {
      const char *dir = data_dir ? data_dir : DEFAULT_DATA_DIR;
      int n = snprintf(path, sizeof path, "%s/secret", dir);
      if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "hubuctl: --data path is too long\n");
        return EXIT_USAGE;
      }
      secret_from = path;
    }
    if (read_secret_file(secret_from, &file_secret, &secret_len) != 0) {
      if (!secret_arg)
        fprintf(stderr, "hubuctl: start hubud once with --data %s to create it, or pass --secret\n",
                data_dir ? data_dir : DEFAULT_DATA_DIR);
      return 1;
    }
    secret = file_secret;
  }

  int status = 1;
  char token[HUBU_TOKEN_MAX];
  if (secret_len == 0) {
    fprintf(stderr, "hubuctl: the secret from %s is empty\n", secret_from);
  } else if ((reserved ? hubu_token_mint_reserved : hubu_token_mint)(secret, secret_len, user, (uint64_t)now + ttl,
                                                                     token, sizeof token) < 0) {
    fprintf(stderr, "hubuctl: cannot mint a token for '%s'\n", user);
  } else if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
    fprintf(stderr, "hubuctl: cannot write the token: %s\n", strerror(errno));
  } else {
    status = 0;
  }
  if (file_secret) {
    OPENSSL_cleanse(file_secret, secret_len);
    free(file_secret);
  }
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_usage(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[1];
  if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) name = "help";
  for (size_t i = 0; i < COMMAND_COUNT; i++) {
    if (strcmp(commands[i].name, name) == 0) return commands[i].run(argc - 2, argv + 2);
  }
  fprintf(stderr, "hubuctl: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return EXIT_USAGE;
}
