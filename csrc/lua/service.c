/* service.c: the service (IFWXFirewall): fwx.new{}, run/stop/Close, and the factory
 * methods. The service box carries three user values: the anchor table of pending
 * operations, the options (on_error) and the ring of posted tasks (ring.c). */
#include "lfwx.h"
#include <stdlib.h>
#include <string.h>

/* Every start checks its service: the tag test is done here, not two calls away. */
lfwx_service_t *lfwx_check_service(lua_State *L, int idx) {
  lfwx_service_t *sv = lua_touserdata(L, idx);
  if (sv != NULL && lua_rawlen(L, idx) >= sizeof *sv &&
      sv->tag == &lfwx_class_tags[LFWX_SERVICE])
    return sv;
  return lfwx_checkudata(L, idx, LFWX_SERVICE); /* raises */
}

static lfwx_service_t *check_open(lua_State *L, int idx) {
  lfwx_service_t *sv = lfwx_check_service(L, idx);
  if (sv->closing || sv->closed) luaL_error(L, "service is closed");
  return sv;
}

lfwx_service_t *lfwx_push_service_of(lua_State *L, int obj_idx) {
  lfwx_service_t *sv;
  lua_getiuservalue(L, obj_idx, 1);
  sv = lua_touserdata(L, -1);
  if (sv->closing || sv->closed) luaL_error(L, "service is closed");
  return sv;
}

/* Misuse: raise, naming what was misused. */
int lfwx_raise(lua_State *L, int err, const char *what) {
  if (err == UV_ENOMEM) return luaL_error(L, "not enough memory");
  if (err == FWX_ECLOSED) return luaL_error(L, "%s is closed", what);
  return luaL_error(L, "%s: %s", what, fwx_strerror(err));
}

/* The environment refused: nil, message, Win32 code. */
int lfwx_fail(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushstring(L, fwx_strerror(err));
  lua_pushinteger(L, fwx_win32_error(err));
  return 3;
}

int lfwx_service_new(lua_State *L) {
  lfwx_service_t *sv;
  int r;
  lua_settop(L, 1);
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
  sv = lfwx_newobject(L, sizeof *sv, LFWX_SERVICE, LFWX_SERVICE_NUV);
  lua_newtable(L);
  lua_setiuservalue(L, 2, LFWX_UV_ANCHORS);
  lua_newtable(L);
  lua_setiuservalue(L, 2, LFWX_UV_KEEP);
  lua_newtable(L);
  if (lua_istable(L, 1)) {
    int t = lua_getfield(L, 1, "on_error");
    if (t != LUA_TNIL && t != LUA_TFUNCTION)
      luaL_argerror(L, 1, "on_error must be a function");
    lua_setfield(L, -2, "on_error");
  }
  lua_setiuservalue(L, 2, LFWX_UV_OPTIONS);
  lfwx_ring_open(L, sv, 2);
  r = fwx_port_new(&sv->port);
  if (r != 0) return lfwx_raise(L, r, "service");
  fwx_port_set_owner(sv->port, sv); /* sockets find their service through it */
  return 1;
}

/* run([timeout_ms]): true when nothing is pending any more; false, "stopped" after
 * stop() or Close(); false, "timeout" when the time ran out first. */
static int l_run(lua_State *L) {
  lfwx_service_t *sv = check_open(L, 1);
  lua_Integer timeout = luaL_optinteger(L, 2, -1);
  int idle, stopped;
  lua_settop(L, 1);
  if (sv->running) return luaL_error(L, "run() is already running (called from a handler?)");
  if (sv->in_worker_script)
    return luaL_error(L, "run() in a worker's script: fwx.serve runs the service once the "
                         "script has returned (and starts the next worker then)");
  sv->running = 1;
  sv->stop = 0;
  idle = lfwx_dispatch(L, sv, 1, 0, timeout < 0 ? -1 : (int64_t)timeout);
  stopped = sv->stop || sv->closed;
  sv->running = 0;
  sv->stop = 0;
  lua_pushboolean(L, idle > 0);
  if (idle > 0) return 1;
  lua_pushstring(L, stopped ? "stopped" : idle < 0 ? "waiting" : "timeout");
  return 2;
}

static int l_stop(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  sv->stop = 1;
  return 0;
}

/* Close: end every pending operation with 995 and deliver every queued notification,
 * then free the loop. Idempotent; __close and __gc share it. */
static int l_close(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lua_settop(L, 1);
  lua_pushboolean(L, 1);
  if (sv->closing || sv->closed) return 1;
  sv->closing = 1;
  fwx_port_shutdown(sv->port);
  lfwx_dispatch(L, sv, 1, 1, -1);
  fwx_port_finish(sv->port);
  sv->closed = 1;
  lua_pushnil(L); /* receives are over: the last arena block may go with its buffers */
  lua_setiuservalue(L, 1, LFWX_UV_BLOCK);
  sv->block = NULL;
  return 1;
}

static int l_gc(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  if (sv->port != NULL) {
    /* Unreachable with operations pending: nobody can be told any more. End them
     * without entering Lua. */
    fwx_port_abandon(sv->port);
    sv->closed = 1;
    fwx_port_set_owner(sv->port, NULL); /* sockets may outlive this memory */
    fwx_port_unref(sv->port);
    sv->port = NULL;
  }
  fwx_workers_free(sv->own_workers); /* its port has finished: nothing posts there */
  sv->own_workers = NULL;
  free(sv->anchors.free);
  sv->anchors.free = NULL;
  free(sv->kept.free);
  sv->kept.free = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lua_pushfstring(L, "fwx.service (%p%s)", (void *)sv, sv->closed ? ", closed" : "");
  return 1;
}

/* pending() -> the number of operations started and not yet notified;
 * pending(true) -> a table of them by operation ("Recv", "Send", "timer", ...). */
static int l_pending(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  int k;
  if (!lua_toboolean(L, 2)) {
    lua_pushinteger(L, sv->closed ? 0 : (lua_Integer)fwx_port_pending(sv->port));
    return 1;
  }
  lua_newtable(L);
  for (k = FWX_OP_ACCEPT; k <= FWX_OP_LAST && !sv->closed; k++) {
    size_t n = fwx_port_pending_kind(sv->port, (fwx_op_kind_t)k);
    if (n == 0) continue;
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, lfwx_op_names[k]);
  }
  return 1;
}

/* stats() -> { notifications = delivered so far, lua_seconds = the time the dispatcher
 * spent delivering them (the handlers, Lua and what they call), polls = the times
 * the port polled for I/O }: what a host's metrics report as time in Lua. */
static int l_stats(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)sv->delivered);
  lua_setfield(L, -2, "notifications");
  lua_pushnumber(L, (lua_Number)sv->lua_ns / 1e9);
  lua_setfield(L, -2, "lua_seconds");
  lua_pushinteger(L, sv->port != NULL ? (lua_Integer)fwx_port_polls(sv->port) : 0);
  lua_setfield(L, -2, "polls");
  return 1;
}

/* now() -> the loop's time in ms (uv_now: what timers count from, updated once a turn
 * of the loop), for idle limits kept in Lua: a C call, no system call. */
static int l_now(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  if (sv->port == NULL || sv->closed) return luaL_error(L, "service is closed");
  lua_pushinteger(L, (lua_Integer)fwx_port_now(sv->port));
  return 1;
}

static int l_anchored(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lua_pushinteger(L, sv->anchors.live + sv->kept.live + sv->ring_count);
  return 1;
}

static int l_create_socket(lua_State *L) {
  static const char *const protos[] = {"tcp", "udp", NULL};
  lfwx_socket_t *box;
  int r, p;
  lua_settop(L, 2);
  check_open(L, 1);
  p = luaL_checkoption(L, 2, NULL, protos);
  box = lfwx_newobject(L, sizeof *box, LFWX_SOCKET, LFWX_SOCKET_NUV);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  r = fwx_socket_new(lfwx_check_service(L, 1)->port, p == 0 ? FWX_TCP : FWX_UDP, &box->s);
  if (r != 0) return lfwx_raise(L, r, "service");
  return 1;
}

/* core._polls(fw) -> the times the service's port has polled for I/O; for the specs
 * (nothing once the service is closed). */
int lfwx_poll_count(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  if (sv->port == NULL) return 0;
  lua_pushinteger(L, (lua_Integer)fwx_port_polls(sv->port));
  return 1;
}

/* fw:SetErrorHandler(fn): what on_error of fwx.new{} sets, for a service made
 * elsewhere (a worker's, made by fwx.serve). */
static int l_set_error_handler(lua_State *L) {
  lfwx_check_service(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, LFWX_UV_OPTIONS);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "on_error");
  return 0;
}

/* A task's packet is queued at once, so its sink and user data go into the ring; the
 * anchor table takes them when the ring is full. */
static int l_post(lua_State *L) {
  lfwx_service_t *sv = check_open(L, 1);
  int r, slot;
  if (lua_gettop(L) != 3) {
    if (lua_gettop(L) > 3 && !lua_isnil(L, 4)) return lfwx_post_to_worker(L);
    lua_settop(L, 3);
  }
  if (lua_type(L, 2) != LUA_TFUNCTION) lfwx_check_sink(L, 2, "CompleteTask", 0);
  if (lfwx_ring_reserve(sv, 2)) {
    r = fwx_port_post(sv->port, LFWX_RING_KEY);
    if (r != 0) return lfwx_raise(L, r, "service");
    lfwx_ring_push(L, sv, 2);
    return 0;
  }
  slot = lfwx_anchor(L, sv, lfwx_push_anchors(L, 1), 0, 2, 3, 0);
  r = fwx_port_post(sv->port, (uintptr_t)slot);
  if (r != 0) {
    lfwx_unanchor(L, sv, 4, slot);
    return lfwx_raise(L, r, "service");
  }
  return 0;
}

static int l_lookup(lua_State *L) {
  lfwx_service_t *sv;
  size_t len;
  const char *name;
  int slot, r, t;
  lua_settop(L, 4);
  sv = check_open(L, 1);
  name = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len > 0 && len <= 253 && strlen(name) == len, 2,
                "host name must be 1 to 253 bytes, without NUL");
  lfwx_check_sink(L, 3, "CompleteGetHostByName", 0);
  t = lfwx_push_anchors(L, 1);
  slot = lfwx_anchor(L, sv, t, 0, 3, 4, 0);
  r = fwx_lookup(sv->port, name, (uintptr_t)slot);
  if (r != 0) {
    lfwx_unanchor(L, sv, t, slot);
    return lfwx_raise(L, r, "service");
  }
  return 0;
}

int lfwx_open_service(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"run", l_run},
    {"stop", l_stop},
    {"Close", l_close},
    {"pending", l_pending},
    {"anchored", l_anchored},
    {"stats", l_stats},
    {"now", l_now},
    {"CreateNetworkSocket", l_create_socket},
    {"CreateBuffer", lfwx_create_buffer},
    {"CreateConstBuffer", lfwx_create_const_buffer},
    {"CreateWindowBuffer", lfwx_create_window_buffer},
    {"CreateOverlapped", lfwx_create_overlapped},
    {"HookToCompletionPort", lfwx_hook},
    {"PostTaskCompletion", l_post},
    {"SetTaskHandler", lfwx_set_task_handler},
    {"SetErrorHandler", l_set_error_handler},
    {"SetTimer", lfwx_set_timer},
    {"SetSignal", lfwx_set_signal},
    {"GetHostByName", l_lookup},
    {"Pump", lfwx_pump},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  static const char *const async_ops[] = {"Pump", NULL}; /* fw:pump is the await style's */
  lfwx_newclass(L, LFWX_SERVICE, methods, meta, async_ops);
  lfwx_open_dispatch(L);
  return 0;
}
