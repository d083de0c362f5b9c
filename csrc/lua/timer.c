/* timer.c: SetTimer and the "fwx.timer" class it returns. A timer is anchored while
 * it is active, so dropping it does not stop it; Cancel() does.
 *
 * A 0 ms one-shot timer's packet is queued when it is set, so its values go into the
 * ring, as a task's do, and its core timer is placed in its box (fwx_timer_place): no
 * allocation, no reference, and so no __gc. A box with a finalizer costs the collector
 * a resurrection, a finalizer call and a second cycle: with malloc and free, two thirds
 * of what a 0 ms timer cost. Such boxes get the class metatable less __gc, kept in the
 * class metatable at [DUE_META]: an integer key is the cheapest raw get there is. */
#include "lfwx.h"
#include <signal.h>
#include <string.h>

#define DUE_META 1

/* A 0 ms timer: its box pushed on top (at bidx), with its core timer behind it. The
 * ring is reserved only once the box exists: making it may run finalizers, which may
 * post. */
static int set_due_timer(lua_State *L, lfwx_service_t *sv) {
  lfwx_timer_t *box = lua_newuserdatauv(L, sizeof *box + fwx_timer_place_size(), 1);
  int bidx = lua_gettop(L), slot, r, t;
  box->tag = &lfwx_class_tags[LFWX_TIMER];
  box->t = NULL;
  lua_rawgeti(L, lua_upvalueindex(LFWX_TIMER), DUE_META);
  lua_setmetatable(L, bidx);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, bidx, 1);
  if (lfwx_ring_reserve(sv, 3)) {
    r = fwx_timer_place(sv->port, box + 1, LFWX_RING_KEY, &box->t);
    if (r != 0) return lfwx_raise(L, r, "service");
    lua_pushvalue(L, bidx);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    lfwx_ring_push(L, sv, 3);
    return 1;
  }
  /* The ring is full: an anchor slot, as other timers have. */
  t = lfwx_push_anchors(L, 1);
  slot = lfwx_anchor(L, sv, t, bidx, 3, 4, 0);
  r = fwx_timer_place(sv->port, box + 1, (uintptr_t)slot, &box->t);
  if (r != 0) {
    lfwx_unanchor(L, sv, t, slot);
    return lfwx_raise(L, r, "service");
  }
  lua_settop(L, bidx);
  return 1;
}

int lfwx_set_timer(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lfwx_timer_t *box;
  lua_Integer ms, repeat;
  int slot, r, t;
  /* SetTimer(ms, sink, ud) is the common call: the user data is padded only when
   * missing, and repeat_ms is read as an optional argument, so a 0 ms timer, a hot
   * path, calls lua_settop only when given fewer or more arguments. */
  int n = lua_gettop(L);
  if (n < 4 || n > 5) lua_settop(L, n < 4 ? 4 : 5);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  ms = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ms >= 0, 2, "milliseconds must be 0 or more");
  if (lua_type(L, 3) != LUA_TFUNCTION) lfwx_check_sink(L, 3, "CompleteTimer", 0);
  repeat = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, repeat >= 0, 5, "repeat must be 0 or more");
  if (ms == 0 && repeat == 0) return set_due_timer(L, sv);
  lua_settop(L, 5);
  box = lfwx_newobject(L, sizeof *box, LFWX_TIMER, 1); /* 6 */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 6, 1);
  t = lfwx_push_anchors(L, 1);
  slot = lfwx_anchor(L, sv, t, 6, 3, 4, 0);
  r = fwx_timer_start(sv->port, (uint64_t)ms, (uint64_t)repeat, (uintptr_t)slot, &box->t);
  if (r != 0) {
    lfwx_unanchor(L, sv, t, slot);
    return lfwx_raise(L, r, "service");
  }
  lua_settop(L, 6); /* the timer */
  return 1;
}

/* The signals a program may want to hear of, by name. */
static const struct { const char *name; int signum; } signal_names[] = {
  {"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGQUIT", SIGQUIT}, {"SIGTERM", SIGTERM},
  {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM},
  {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT}, {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN},
  {"SIGTTOU", SIGTTOU}, {"SIGWINCH", SIGWINCH}, {"SIGURG", SIGURG},
};

/* A signal's number; whether it can be watched is the core's to say (UV_EINVAL). */
static int check_signal(lua_State *L, int idx) {
  size_t i;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, idx);
    return n > 0 && n < 1024 ? (int)n : -1;
  }
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *name = lua_tostring(L, idx);
    for (i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
      if (strcmp(name, signal_names[i].name) == 0) return signal_names[i].signum;
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s' (\"SIGTERM\", ..., or a number)", name));
  }
  return luaL_typeerror(L, idx, "signal name or number");
}

/* fw:SetSignal(signal, sink, ud) -> a timer that ticks each time the signal arrives
 * (sink(true, 0, ud)), until Cancel() (then 995). While it is active, the signal's
 * default action (ending the process, for SIGTERM) does not happen. */
int lfwx_set_signal(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lfwx_timer_t *box;
  int signum, slot, r, t;
  lua_settop(L, 4);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  signum = check_signal(L, 2);
  if (lua_type(L, 3) != LUA_TFUNCTION) lfwx_check_sink(L, 3, "CompleteTimer", 0);
  box = lfwx_newobject(L, sizeof *box, LFWX_TIMER, 1); /* 5 */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 5, 1);
  t = lfwx_push_anchors(L, 1);
  slot = lfwx_anchor(L, sv, t, 5, 3, 4, 0);
  r = fwx_signal_start(sv->port, signum, (uintptr_t)slot, &box->t);
  if (r != 0) {
    lfwx_unanchor(L, sv, t, slot);
    if (r == UV_EINVAL) return luaL_argerror(L, 2, "not a signal that can be watched");
    return lfwx_raise(L, r, "service");
  }
  lua_settop(L, 5);
  return 1;
}

static int l_cancel(lua_State *L) {
  lfwx_timer_t *box = lfwx_checkudata(L, 1, LFWX_TIMER);
  lua_pushboolean(L, box->t != NULL && fwx_timer_cancel(box->t) == 0);
  return 1;
}

static int l_is_active(lua_State *L) {
  lfwx_timer_t *box = lfwx_checkudata(L, 1, LFWX_TIMER);
  lua_pushboolean(L, box->t != NULL && fwx_timer_active(box->t));
  return 1;
}

static int l_gc(lua_State *L) {
  lfwx_timer_t *box = lfwx_checkudata(L, 1, LFWX_TIMER);
  if (box->t != NULL) fwx_timer_unref(box->t);
  box->t = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  lfwx_timer_t *box = lfwx_checkudata(L, 1, LFWX_TIMER);
  lua_pushfstring(L, "fwx.timer (%s, %p)",
                  box->t != NULL && fwx_timer_active(box->t) ? "active" : "done", (void *)box);
  return 1;
}

int lfwx_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"Cancel", l_cancel},
    {"IsActive", l_is_active},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  lfwx_newclass(L, LFWX_TIMER, methods, meta, NULL);
  /* The metatable of boxes with a placed timer: the same, less __gc. */
  luaL_getmetatable(L, lfwx_class_names[LFWX_TIMER]);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "__gc") == 0) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_rawseti(L, -2, DUE_META);
  lua_pop(L, 1);
  return 0;
}
