/* reload.c — loading plugins and hot reload: one plugin (NAME.lua or
 * NAME/init.lua) built first and swapped second by host.load, every plugin
 * of the directory at start, on SIGHUP and hubuctl reload, and the watches
 * (uv_fs_event on the directory and one on each folder plugin) whose events
 * are coalesced by a debounce timer into one reload per plugin.
 * Invariant: a plugin whose new version fails to build keeps its old version
 * running; only a plugin whose file is gone is unloaded. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "host_internal.h"
#include "log.h"

/* A folder plugin's own watch (DIR/NAME/, not recursive): a change to any
 * .lua file in it reloads NAME. One per folder under DIR that is (or may
 * become) a plugin; closed when the folder goes, and at close. */
typedef struct folder_watch {
  uv_fs_event_t ev; /* first: the handle pointer is the watch pointer */
  hubu_plugins *host;
  struct folder_watch *next;
  dev_t dev; /* the folder watched: inotify follows it, not its name, so */
  ino_t ino; /* a folder replaced under the same name needs a new watch */
  char name[128];
} folder_watch;

static void on_debounce(uv_timer_t *t);

/* Reloads name about 20 ms after the last change to it (editors write in several steps). */
static void queue_reload(hubu_plugins *p, const char *name) {
  for (int i = 0; i < p->n_pending; i++)
    if (!strcmp(p->pending[i], name)) goto arm;
  if (p->n_pending < MAX_PENDING_RELOADS) snprintf(p->pending[p->n_pending++], sizeof p->pending[0], "%s", name);
arm:
  uv_timer_start(&p->debounce, on_debounce, 20, 0);
}

/* ---- the folder watches ---- */

static folder_watch *folder_find(hubu_plugins *p, const char *name) {
  for (folder_watch *w = p->folders; w; w = w->next)
    if (!strcmp(w->name, name)) return w;
  return NULL;
}

static void on_folder_closed(uv_handle_t *h) {
  folder_watch *w = (folder_watch *)h;
  hubu_plugins *p = w->host;
  free(w);
  hubu_plugins_handle_closed(p);
}

static void folder_close(hubu_plugins *p, folder_watch *w) {
  for (folder_watch **q = &p->folders; *q; q = &(*q)->next) {
    if (*q == w) {
      *q = w->next;
      break;
    }
  }
  uv_close((uv_handle_t *)&w->ev, on_folder_closed);
}

static void folder_unwatch(hubu_plugins *p, const char *name) {
  folder_watch *w = folder_find(p, name);
  if (w) folder_close(p, w);
}

/* A change in DIR/NAME/: a .lua file of it (not a dot file: editors' temp
 * files), or the folder itself moved or removed (then filename is NAME). */
static void on_folder_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  folder_watch *w = (folder_watch *)h;
  if (status == 0 && filename) {
    size_t n = strlen(filename);
    int lua = n > 4 && !strcmp(filename + n - 4, ".lua") && filename[0] != '.';
    if (!lua && strcmp(filename, w->name) != 0) return;
  }
  queue_reload(w->host, w->name);
}

/* Watches DIR/name, a folder (st: its stat), unless it is watched already.
 * A watch on another folder that had this name (moved away or removed, then
 * replaced) is closed first. */
static void folder_watch_start(hubu_plugins *p, const char *name, const struct stat *st) {
  if (p->closing || name[0] == '.' || strlen(name) >= sizeof((folder_watch *)0)->name) return;
  folder_watch *old = folder_find(p, name);
  if (old && old->dev == st->st_dev && old->ino == st->st_ino) return;
  if (old) folder_close(p, old);
  folder_watch *w = calloc(1, sizeof *w);
  if (!w) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "out_of_memory", "where=plugin_folder_watch plugin=%s", name);
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", p->dir, name);
  snprintf(w->name, sizeof w->name, "%s", name);
  w->dev = st->st_dev;
  w->ino = st->st_ino;
  w->host = p;
  uv_fs_event_init(p->core->loop, &w->ev);
  p->open_handles++;
  int r = uv_fs_event_start(&w->ev, on_folder_event, path, 0);
  if (r != 0) {
    hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_watch_failed", "dir=%s error=\"%s\"", path, uv_strerror(r));
    uv_close((uv_handle_t *)&w->ev, on_folder_closed);
    return;
  }
  w->next = p->folders;
  p->folders = w;
}

/* ---- loading ---- */

/* Loads plugin name from dir (NAME.lua or NAME/init.lua); 0 or -1. On
 * failure the reason is appended to report. A folder NAME/ is watched from
 * before its files are read (an edit from then on reloads it) until it is
 * gone or a NAME.lua takes its place. Stack: unchanged. */
static int load_one(hubu_plugins *p, const char *name, char *report, size_t report_size) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s.lua", p->dir, name);
  if (stat(path, &st) == 0) {
    folder_unwatch(p, name);
  } else {
    snprintf(path, sizeof path, "%s/%s", p->dir, name);
    if (name[0] != '.' && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
      folder_watch_start(p, name, &st); /* also a folder with no init.lua yet: its init.lua is seen when it comes */
    else
      folder_unwatch(p, name);
    snprintf(path, sizeof path, "%s/%s/init.lua", p->dir, name);
    if (stat(path, &st) != 0) { /* gone: unload it */
      lua_pushstring(p->L, name);
      hubu_plugins_call_host(p, "unload", 1, 1);
      lua_pop(p->L, 1);
      if (report) snprintf(report + strlen(report), report_size - strlen(report), "%s: unloaded\n", name);
      return 0;
    }
  }
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  /* Its config section, from hubu.lua as the file reads now; a broken file
   * keeps what runs, like a broken plugin. */
  char cerr[512];
  int sect = 0;
  if (p->cfg.push_section)
    sect = p->cfg.push_section(L, p->cfg.config_file, name, cerr, sizeof cerr);
  else
    lua_newtable(L); /* no config file reader: every plugin's section is empty */
  if (sect != 0) {
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "plugin_load_failed", "plugin=%s error=\"%s\"", name, cerr);
    if (report) snprintf(report + strlen(report), report_size - strlen(report), "%s: failed: %s\n", name, cerr);
    lua_settop(L, top);
    lua_pushstring(L, name); /* listed as a failed reload, like any other */
    lua_pushstring(L, path);
    lua_pushstring(L, cerr);
    hubu_plugins_call_host(p, "note_failure", 3, 0);
    lua_settop(L, top);
    return -1;
  }
  if (p->cfg.config_file)
    lua_pushstring(L, p->cfg.config_file); /* where its options come from, for warnings that name their line */
  else
    lua_pushnil(L);
  hubu_plugins_call_host(p, "load", 4, 3);
  int ok = lua_toboolean(L, -3), resume = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (report) {
    size_t used = strlen(report);
    snprintf(report + used, report_size - used, "%s: %s%s\n", name,
             ok ? "loaded" : "failed: ", ok ? "" : (lua_tostring(L, -1) ? lua_tostring(L, -1) : "?"));
  }
  lua_settop(L, top);
  if (ok && resume && p->replay_started) hubu_plugins_replay_plugin(p, name); /* came (back) while running */
  return ok ? 0 : -1;
}

/* A plugin name from a directory entry: "x.lua" -> "x", "x/" (with init.lua) -> "x". */
static int plugin_name(const char *dir, const char *entry, char *name, size_t size) {
  size_t n = strlen(entry);
  if (entry[0] == '.' || n >= size) return 0;
  if (n > 4 && !strcmp(entry + n - 4, ".lua")) {
    memcpy(name, entry, n - 4);
    name[n - 4] = '\0';
    return 1;
  }
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s/init.lua", dir, entry);
  if (stat(path, &st) == 0) {
    snprintf(name, size, "%s", entry);
    return 1;
  }
  return 0;
}

int hubu_plugins_reload(hubu_plugins *p, const char *name, char *report, size_t report_size) {
  if (report && report_size) report[0] = '\0';
  int failed = 0;
  if (name) {
    failed = load_one(p, name, report, report_size) != 0;
  } else {
    DIR *d = opendir(p->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      char n[128], path[4096];
      struct stat st;
      if (plugin_name(p->dir, e->d_name, n, sizeof n)) {
        failed += load_one(p, n, report, report_size) != 0;
      } else if (e->d_name[0] != '.' && snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name) < (int)sizeof path &&
                 stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        folder_watch_start(p, e->d_name, &st); /* a folder without init.lua yet: loaded when one is saved */
      }
    }
    if (d) closedir(d);
  }
  hubu_plugins_refresh_flags(p);
  return failed;
}

/* ---- the directory watch, the debounce, SIGHUP ---- */

static void on_debounce(uv_timer_t *t) {
  hubu_plugins *p = t->data;
  int n = p->n_pending;
  p->n_pending = 0;
  for (int i = 0; i < n; i++) load_one(p, p->pending[i], NULL, 0);
  hubu_plugins_refresh_flags(p);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  hubu_plugins *p = h->data;
  char name[128];
  if (status < 0 || !filename) return;
  size_t n = strlen(filename);
  if (n <= 4 || strcmp(filename + n - 4, ".lua") != 0 || filename[0] == '.' || n - 4 >= sizeof name) {
    /* Not NAME.lua: a folder NAME/ made, moved in, moved out or removed. */
    char path[4096];
    struct stat st;
    if (filename[0] == '.' || n >= sizeof name) return;
    snprintf(path, sizeof path, "%s/%s", p->dir, filename);
    if (!(stat(path, &st) == 0 && S_ISDIR(st.st_mode)) && !folder_find(p, filename)) return;
    snprintf(name, sizeof name, "%s", filename);
  } else {
    memcpy(name, filename, n - 4);
    name[n - 4] = '\0';
  }
  queue_reload(p, name);
}

static void on_sighup(uv_signal_t *h, int signum) {
  (void)signum;
  hubu_plugins *p = h->data;
  char report[4096];
  int failed = hubu_plugins_reload(p, NULL, report, sizeof report);
  hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "plugins_reloaded", "why=SIGHUP failed=%d", failed);
}

static void on_handle_closed(uv_handle_t *h) { hubu_plugins_handle_closed(h->data); }

/* ---- the config file (hubu.lua): watched like the plugins ---- */

/* A plugin_warning for each section of the config file that names no
 * plugin of the directory (host.lua's warn_orphan_sections). */
static void warn_orphan_sections(hubu_plugins *p) {
  if (!p->cfg.config_file) return;
  lua_State *L = p->L;
  int top = lua_gettop(L);
  lua_pushstring(L, p->cfg.config_file);
  lua_pushstring(L, p->dir);
  hubu_plugins_call_host(p, "warn_orphan_sections", 2, 0);
  lua_settop(L, top);
}

int hubu_plugins_reload_config(hubu_plugins *p, char *report, size_t report_size) {
  if (report && report_size) report[0] = '\0';
  lua_State *L = p->L;
  const char *file = p->cfg.config_file;
  if (!file || !p->cfg.push_section) {
    if (report) snprintf(report, report_size, "hubud runs without a config file");
    return -1;
  }
  char err[512];
  if (p->cfg.push_section(L, file, "", err, sizeof err) != 0) { /* does the file run at all? */
    hubu_log(HUBU_LOG_ERROR, 0, NULL, "config_reload_failed", "file=%s error=\"%s\" note=\"the running config stays\"",
             file, err);
    if (report) snprintf(report, report_size, "%s", err);
    return -1;
  }
  lua_pop(L, 1);
  int failed = 0, changed = 0;
  DIR *d = opendir(p->dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char n[128];
    if (!plugin_name(p->dir, e->d_name, n, sizeof n)) continue;
    int top = lua_gettop(L);
    lua_pushstring(L, n);
    if (p->cfg.push_section(L, file, n, err, sizeof err) != 0) {
      lua_settop(L, top);
      continue; /* the file changed again meanwhile: its own event follows */
    }
    hubu_plugins_call_host(p, "section_changed", 2, 1);
    int differs = lua_toboolean(L, -1);
    lua_settop(L, top);
    if (!differs) continue;
    changed++;
    failed += load_one(p, n, report, report_size) != 0;
  }
  if (d) closedir(d);
  hubu_plugins_refresh_flags(p);
  warn_orphan_sections(p);
  hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "config_reloaded", "file=%s plugins=%d failed=%d", file,
           changed, failed);
  if (report && !report[0]) snprintf(report, report_size, "no plugin section changed\n");
  return failed;
}

static void on_config_debounce(uv_timer_t *t) {
  char report[4096];
  hubu_plugins_reload_config(t->data, report, sizeof report);
}

static void on_config_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  hubu_plugins *p = h->data;
  if (status < 0 || !filename || strcmp(filename, p->config_base) != 0) return;
  uv_timer_start(&p->config_debounce, on_config_debounce, 20, 0);
}

/* Watches the config file's directory for saves of the file. */
static void config_watch_start(hubu_plugins *p) {
  const char *file = p->cfg.config_file;
  const char *slash = file ? strrchr(file, '/') : NULL;
  const char *base = slash ? slash + 1 : file;
  char dir[4096];
  if (!file || !*base || strlen(base) >= sizeof p->config_base) return;
  if (slash)
    snprintf(dir, sizeof dir, "%.*s", slash == file ? 1 : (int)(slash - file), file);
  else
    snprintf(dir, sizeof dir, ".");
  uv_fs_event_init(p->core->loop, &p->config_watch);
  uv_timer_init(p->core->loop, &p->config_debounce);
  p->config_watch.data = p->config_debounce.data = p;
  p->open_handles += 2;
  snprintf(p->config_base, sizeof p->config_base, "%s", base);
  int r = uv_fs_event_start(&p->config_watch, on_config_event, dir, 0);
  if (r != 0) hubu_log(HUBU_LOG_WARN, 0, NULL, "config_watch_failed", "dir=%s error=\"%s\"", dir, uv_strerror(r));
}

void hubu_plugins_reload_start(hubu_plugins *p) {
  uv_loop_t *loop = p->core->loop;
  uv_timer_init(loop, &p->debounce);
  uv_signal_init(loop, &p->sighup);
  p->debounce.data = p->sighup.data = p->watch.data = p;
  p->open_handles += 2;
  uv_signal_start(&p->sighup, on_sighup, SIGHUP);
  config_watch_start(p);
  uv_fs_event_init(loop, &p->watch);
  p->open_handles++;
  struct stat st;
  const char *dir = p->dir;
  if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
    int r = uv_fs_event_start(&p->watch, on_fs_event, dir, 0);
    if (r == 0)
      p->watching = 1;
    else
      hubu_log(HUBU_LOG_WARN, 0, NULL, "plugin_watch_failed", "dir=%s error=\"%s\"", dir, uv_strerror(r));
    char report[8192];
    int failed = hubu_plugins_reload(p, NULL, report, sizeof report);
    warn_orphan_sections(p);
    hubu_log(failed ? HUBU_LOG_WARN : HUBU_LOG_INFO, 0, NULL, "plugins_started", "dir=%s failed=%d", dir, failed);
  } else {
    hubu_log(HUBU_LOG_INFO, 0, NULL, "plugins_started", "dir=%s state=missing", dir);
  }
}

void hubu_plugins_reload_stop(hubu_plugins *p) {
  while (p->folders) folder_close(p, p->folders);
  uv_close((uv_handle_t *)&p->debounce, on_handle_closed);
  uv_close((uv_handle_t *)&p->sighup, on_handle_closed);
  uv_close((uv_handle_t *)&p->watch, on_handle_closed);
  if (p->config_base[0]) {
    uv_close((uv_handle_t *)&p->config_watch, on_handle_closed);
    uv_close((uv_handle_t *)&p->config_debounce, on_handle_closed);
  }
}
