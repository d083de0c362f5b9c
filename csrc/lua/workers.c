/* workers.c: fwx.serve{threads = N, script = PATH}, the worker threads of DESIGN.md
 * section 4, and what crosses between them.
 *
 * Each worker is an OS thread with its own Lua state, service, port and libuv loop:
 * nothing Lua is shared, so there is no global lock. The script is loaded in each
 * state and called with that worker's service (`local fw = ...`); then the worker runs
 * its service until nothing is pending or it is stopped, and closes it.
 *
 * Scripts start in worker order: worker k's script runs once worker k-1's has
 * returned, so worker 1 can bind a listening port (port 0 too) and publish it in the
 * shared store before the others look (HAProxy's and Envoy's workers start the same
 * way). The loops then run side by side. If a script fails, the workers already
 * running are stopped and serve returns the error.
 *
 * Workers talk through posted tasks: fw:PostTaskCompletion(name, value, worker) sends
 * value, encoded (serialize.c), to the task handler that worker registered under name
 * with fw:SetTaskHandler(name, sink), which is called as sink(value, from_worker). */
#include "lfwx.h"
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#define WORKER_ID_KEY "fwx.worker_id"
#define WORKER_COUNT_KEY "fwx.worker_count"

typedef struct worker {
  uv_thread_t thread;
  fwx_workers_t *group;
  int id;
  const char *script, *path, *cpath; /* the caller's, alive while serve waits */
  const char *args;                  /* encoded list of arguments after fw */
  size_t args_len;
  uv_sem_t *started;  /* posted when the script has returned or failed */
  int signalled;
  char *error;        /* what ended it with an error, or NULL */
} worker_t;

static int registry_int(lua_State *L, const char *key, int dflt) {
  int v = dflt;
  if (lua_getfield(L, LUA_REGISTRYINDEX, key) == LUA_TNUMBER) v = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* fwx.worker_id(), fwx.worker_count(): 1 and 1 outside fwx.serve. */
static int l_worker_id(lua_State *L) {
  lua_pushinteger(L, registry_int(L, WORKER_ID_KEY, 1));
  return 1;
}

static int l_worker_count(lua_State *L) {
  lua_pushinteger(L, registry_int(L, WORKER_COUNT_KEY, 1));
  return 1;
}

/* The group a service posts through: its worker group under fwx.serve, else a group
 * of one made on first use (fwx.new{} is one worker in its thread), which the service
 * frees when it is collected. */
static fwx_workers_t *group_of(lua_State *L, lfwx_service_t *sv) {
  fwx_workers_t *w = fwx_port_workers(sv->port);
  int r;
  if (w != NULL) return w;
  r = fwx_workers_new(1, &w);
  if (r == 0) {
    r = fwx_workers_attach(w, 1, sv->port);
    if (r != 0) fwx_workers_free(w);
  }
  if (r != 0) lfwx_raise(L, r, "service");
  sv->own_workers = w;
  return w;
}

/* fw:PostTaskCompletion(name, value, worker): true, or nil, message, code when the
 * worker has stopped (1062) or its inbox is full (1450). The value is encoded before
 * anything is posted: one that cannot cross raises, and nothing is sent. */
int lfwx_post_to_worker(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lua_Integer to = luaL_checkinteger(L, 4);
  fwx_workers_t *w;
  const char *name, *value;
  size_t n, vlen;
  int r;
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  if (lua_type(L, 2) != LUA_TSTRING || memchr(lua_tostring(L, 2), '\0', lua_rawlen(L, 2)))
    return luaL_argerror(L, 2, "a task for another worker is named by a string without NUL "
                               "(the name its handler has there: fw:SetTaskHandler)");
  w = group_of(L, sv);
  if (to < 1 || to > fwx_workers_count(w))
    return luaL_argerror(L, 4, lua_pushfstring(L, "no worker %d (there are %d)", (int)to,
                                               fwx_workers_count(w)));
  /* A message's bytes: the handler's name with the NUL every Lua string ends in, then
   * the encoded value. */
  lfwx_encode(L, 3);
  value = lua_tolstring(L, -1, &vlen);
  name = lua_tolstring(L, 2, &n);
  r = fwx_workers_post(w, (int)to, fwx_port_worker_id(sv->port), name, n + 1, value, vlen);
  if (r == FWX_ECLOSED) {
    lua_pushnil(L);
    lua_pushfstring(L, "worker %d has stopped", (int)to);
    lua_pushinteger(L, 1062); /* ERROR_SERVICE_NOT_ACTIVE */
    return 3;
  }
  if (r != 0) return lfwx_fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* Push a delivered message's handler name and value (from the packet's bytes). */
int lfwx_push_message(lua_State *L, const char *data, size_t len) {
  const char *nul = memchr(data, '\0', len);
  if (nul == NULL) return luaL_error(L, "malformed message");
  lua_pushlstring(L, data, (size_t)(nul - data));
  lfwx_decode(L, nul + 1, len - (size_t)(nul - data) - 1);
  return 2;
}

/* fw:SetTaskHandler(name, sink): the handler messages named name are delivered to;
 * nil removes it. The name must be a string, as a post's is: a number would be kept
 * as a number key, which no message's name finds. */
int lfwx_set_task_handler(lua_State *L) {
  lfwx_check_service(L, 1);
  luaL_checktype(L, 2, LUA_TSTRING);
  lua_settop(L, 3);
  lfwx_check_sink(L, 3, "CompleteTask", 1);
  lua_getiuservalue(L, 1, LFWX_UV_OPTIONS);
  if (lua_getfield(L, -1, "tasks") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "tasks");
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* ---- fwx.serve ---- */

static void set_package_path(lua_State *L, const char *field, const char *value) {
  if (value == NULL) return;
  lua_getglobal(L, "package");
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* Call fw:name() and return how many values it left. */
static int call_method(lua_State *L, int fw, const char *name) {
  int top = lua_gettop(L);
  lua_getfield(L, fw, name);
  lua_pushvalue(L, fw);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - top;
}

static void script_returned(worker_t *wk) {
  if (wk->signalled) return;
  wk->signalled = 1;
  uv_sem_post(wk->started);
}

/* The worker's life in its own state, under lua_pcall (arg 1: the worker). */
static int worker_body(lua_State *L) {
  worker_t *wk = lua_touserdata(L, 1);
  lfwx_service_t *sv;
  int fw, nargs = 1, r;
  set_package_path(L, "path", wk->path);
  set_package_path(L, "cpath", wk->cpath);
  lua_pushinteger(L, wk->id);
  lua_setfield(L, LUA_REGISTRYINDEX, WORKER_ID_KEY);
  lua_pushinteger(L, fwx_workers_count(wk->group));
  lua_setfield(L, LUA_REGISTRYINDEX, WORKER_COUNT_KEY);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "fwx");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_call(L, 0, 1);
  fw = lua_gettop(L);
  sv = lfwx_check_service(L, fw);
  r = fwx_workers_attach(wk->group, wk->id, sv->port);
  if (r != 0) return lfwx_raise(L, r, "worker");
  if (luaL_loadfile(L, wk->script) != LUA_OK) {
    wk->error = strdup(lua_tostring(L, -1)); /* no traceback: nothing ran */
    call_method(L, fw, "Close");
    return 0;
  }
  lua_pushvalue(L, fw);
  if (wk->args != NULL) {
    int list, i, n;
    lfwx_decode(L, wk->args, wk->args_len);
    list = lua_gettop(L);
    n = (int)luaL_len(L, list);
    luaL_checkstack(L, n, "too many arguments");
    for (i = 1; i <= n; i++) lua_rawgeti(L, list, i);
    lua_remove(L, list);
    nargs += n;
  }
  sv->in_worker_script = 1;
  lua_call(L, nargs, 0);
  sv->in_worker_script = 0;
  script_returned(wk);
  call_method(L, fw, "run");
  call_method(L, fw, "Close");
  return 0;
}

static void worker_main(void *arg) {
  worker_t *wk = arg;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    wk->error = strdup("not enough memory for a Lua state");
    script_returned(wk);
    return;
  }
  luaL_openlibs(L);
  /* The collector in generational mode, as lua5.4's own interpreter (lua.c) sets it:
   * a worker's script then runs under the collector it runs under in `lua5.4`, and
   * the garbage of every message (buffers, their block objects) dies young and goes
   * in minor collections. luaL_newstate's incremental mode cost the host with
   * threads = 2 and an identity filter 16% more instructions per proxied message
   * (callgrind: 6 800 against 5 860). A script that wants the other mode says so:
   * collectgarbage("incremental"). */
  lua_gc(L, LUA_GCGEN, 0, 0);
  lua_pushcfunction(L, lfwx_traceback);
  lua_pushcfunction(L, worker_body);
  lua_pushlightuserdata(L, wk);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    wk->error = strdup(msg != NULL ? msg : "(error object is not a string)");
  }
  script_returned(wk);
  lua_close(L); /* a service left open is abandoned by its finaliser */
}

static const char *string_field(lua_State *L, const char *name, int required) {
  const char *s;
  lua_getfield(L, 1, name);
  if (lua_isnil(L, -1) && !required) return NULL;
  s = lua_tostring(L, -1);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_argerror(L, 1, lua_pushfstring(L, "%s must be a string", name));
  return s;
}

/* fwx.serve{threads = N, script = PATH [, args = {...}]}: true once every worker has
 * stopped, or nil and the first worker's error. */
static int l_serve(lua_State *L) {
  worker_t *wk;
  fwx_workers_t *group;
  uv_sem_t started;
  const char *script, *path = NULL, *cpath = NULL, *args = NULL;
  size_t args_len = 0;
  lua_Integer n;
  int i, launched = 0, r, failed = -1;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  n = lua_getfield(L, 1, "threads") == LUA_TNIL ? 1 : lua_tointeger(L, -1);
  luaL_argcheck(L, lua_isnil(L, -1) || lua_isinteger(L, -1), 1, "threads must be an integer");
  luaL_argcheck(L, n >= 1 && n <= FWX_WORKERS_MAX, 1, "threads must be 1 to 1024");
  script = string_field(L, "script", 1);
  if (lua_getfield(L, 1, "args") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "args must be a list");
    lfwx_encode(L, lua_gettop(L));
    args = lua_tolstring(L, -1, &args_len);
  }
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    path = lua_tostring(L, -1);
    lua_getfield(L, -2, "cpath");
    cpath = lua_tostring(L, -1);
  }
  /* The workers in a userdata: freed by the collector whatever happens. */
  wk = lua_newuserdatauv(L, sizeof *wk * (size_t)n, 0);
  memset(wk, 0, sizeof *wk * (size_t)n);
  r = fwx_workers_new((int)n, &group);
  if (r != 0) return lfwx_raise(L, r, "serve");
  if (uv_sem_init(&started, 0) != 0) {
    fwx_workers_free(group);
    return luaL_error(L, "serve: cannot make a semaphore");
  }
  for (i = 0; i < n; i++) {
    wk[i].group = group;
    wk[i].id = i + 1;
    wk[i].script = script;
    wk[i].path = path;
    wk[i].cpath = cpath;
    wk[i].args = args;
    wk[i].args_len = args_len;
    wk[i].started = &started;
  }
  for (i = 0; i < n && failed < 0; i++) {
    if (uv_thread_create(&wk[i].thread, worker_main, &wk[i]) != 0) {
      wk[i].error = strdup("cannot start a thread");
      failed = i;
      break;
    }
    launched++;
    uv_sem_wait(&started); /* its script has returned, or it failed */
    if (wk[i].error != NULL) failed = i;
  }
  if (failed >= 0) fwx_workers_stop(group);
  for (i = 0; i < launched; i++) uv_thread_join(&wk[i].thread);
  uv_sem_destroy(&started);
  fwx_workers_free(group);
  if (failed < 0)
    for (i = 0; i < n && failed < 0; i++)
      if (wk[i].error != NULL) failed = i;
  if (failed >= 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "worker %d: %s", failed + 1, wk[failed].error);
  }
  for (i = 0; i < n; i++) free(wk[i].error);
  if (failed >= 0) return 2;
  lua_pushboolean(L, 1);
  return 1;
}

void lfwx_open_workers(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"serve", l_serve},
    {"worker_id", l_worker_id},
    {"worker_count", l_worker_count},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
