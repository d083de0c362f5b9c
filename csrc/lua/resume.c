/* resume.c: how the await style (lua/fwx/await.lua) waits and resumes its
 * coroutines, in C.
 *
 * An awaited s:recv() or s:send() (both started here too, below) starts Recv/Send with
 * this sink and the coroutine as the user data, then yields core.WAITING. The sink
 * resumes the coroutine with the notification's values less the coroutine: (ok, err,
 * buffer, address). Written in C because it runs twice per echoed message: as a Lua
 * function calling coroutine.resume it cost about 320 instructions more a call
 * (callgrind, awaited echo at 50 x 64 B: 11 363 instructions per message, 10 713 with
 * this).
 *
 * Every other sink, and fw:spawn's start, resume through core.step(co, ...), so that
 * what a resume ends in is judged in one place. That decides the rest: the coroutine
 * waits again (it yielded WAITING: nothing to do), finished, or raised (raised again
 * here with the coroutine's traceback, so that the dispatcher reports it as a
 * handler's error), or yielded anything else (a misuse, reported: nothing will resume
 * it). */
#include "lfwx.h"

/* Its address is the token: a light userdata nothing else can make. */
static const char waiting_token;

/* Resume co with the nargs values on its stack, and judge what it ended in. */
static int resume_checked(lua_State *L, lua_State *co, int nargs) {
  int nres, status = lua_resume(co, L, nargs, &nres);
  if (status == LUA_YIELD) {
    int waiting = nres == 1 && lua_touserdata(co, -1) == (void *)&waiting_token;
    lua_pop(co, nres);
    if (waiting) return 0;
    return luaL_error(L, "fwx: a coroutine of fw:spawn yielded outside an awaited "
                         "operation; nothing will resume it");
  }
  if (status == LUA_OK) {
    lua_pop(co, nres);
    return 0;
  }
  if (lua_type(co, -1) == LUA_TSTRING)
    luaL_traceback(L, co, lua_tostring(co, -1), 0);
  else
    lua_xmove(co, L, 1); /* an error object goes on as it is */
  return lua_error(L);
}

static lua_State *check_waiting(lua_State *L, int idx, int nargs) {
  lua_State *co = lua_tothread(L, idx);
  if (co == NULL) luaL_typeerror(L, idx, "coroutine");
  /* A new coroutine (fw:spawn's start) is LUA_OK with only its function on its stack. */
  if ((lua_status(co) != LUA_YIELD && (lua_status(co) != LUA_OK || lua_gettop(co) != 1)) ||
      !lua_checkstack(co, nargs))
    luaL_error(L, "fwx: cannot resume the coroutine (it is not waiting)");
  return co;
}

/* core.wake_io(ok, err, buffer, co, address): the Recv/Send/SendTo sink. */
int lfwx_wake_io(lua_State *L) {
  lua_State *co = check_waiting(L, 4, 4);
  lua_settop(L, 5);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 5);
  lua_xmove(L, co, 4);
  return resume_checked(L, co, 4);
}

/* core.step(co, ...): resume co with the rest, for the other sinks and the start. */
static int l_step(lua_State *L) {
  int n = lua_gettop(L) - 1;
  lua_State *co = check_waiting(L, 1, n);
  lua_xmove(L, co, n);
  return resume_checked(L, co, n);
}

/* ---- s:recv() and s:send(), started in C ----
 *
 * Every awaited echo calls both once a message. As Lua functions (a method of the
 * socket class calling coroutine.running, two weak-table look-ups, then s:Recv or
 * s:Send and coroutine.yield) they were about a quarter of that message's
 * instructions: 10 540 a message against 8 061 for the same loop written with
 * s:Recv(nil, core.wake_io, co) and coroutine.yield by hand (callgrind, awaited echo at
 * 50 x 64 B). Here the method checks what the Lua one did, starts the callback style's
 * operation by calling its C function on this frame, and yields WAITING from C: the
 * resume's values are then returned to the caller as the call's results. An operation
 * with a timeout gets a deadline in the core (csrc/core/deadline.c), which ends it
 * with 121 by itself; where the core cannot take one (a closed socket, a second timed
 * send while one waits) it goes to the Lua side (await.lua), which times it with a
 * timer.
 *
 * Upvalues: the class metatables (lfwx_setfuncs: the methods called here push
 * objects), then these. */
enum { UP_SPAWNED = LFWX_NCLASSES + 1, UP_TIMEOUTS, UP_TIMED, UP_COUNT = UP_TIMED };

/* A timeout in whole ms: rounded up, so that a fraction never shortens it, and capped
 * at 1e15 ms, as await.lua's whole_ms does for its timers. */
static uint64_t whole_ms(lua_Number ms) {
  uint64_t w;
  if (!(ms < 1e15)) return (uint64_t)1e15;
  w = (uint64_t)ms;
  return (lua_Number)w < ms ? w + 1 : w;
}

/* A socket's deadline for the operation about to start, if it can take one (0), on
 * the socket at idx (*box); raises only without memory. */
static int prepare_deadline(lua_State *L, int idx, fwx_op_kind_t kind, lfwx_socket_t **box) {
  int r;
  *box = lfwx_testudata(L, idx, LFWX_SOCKET);
  r = *box != NULL && (*box)->s != NULL ? fwx_socket_deadline_prepare((*box)->s, kind)
                                        : FWX_ECLOSED;
  if (r == UV_ENOMEM) luaL_error(L, "not enough memory");
  return r;
}

static int timed_done(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

/* s:recv([buffer [, ms]]) or s:send(data [, ms]): stack (self, data, ms). */
static int awaited_io(lua_State *L, int sending) {
  const char *name = sending ? "send" : "recv";
  fwx_op_kind_t kind = sending ? FWX_OP_SEND : FWX_OP_RECV;
  lfwx_socket_t *box = NULL;
  lua_Number ms = -1; /* none */
  int t;
  lua_settop(L, 3);
  /* A coroutine of fw:spawn's: the Lua side's table of them, keys weak. */
  if (lua_pushthread(L) || lua_rawget(L, lua_upvalueindex(UP_SPAWNED)) == LUA_TNIL)
    return luaL_error(L, "s:%s is the await style: call it inside fw:spawn(fn)", name);
  lua_pop(L, 1);
  t = lua_type(L, 3);
  if (t == LUA_TNIL) {
    lua_pushvalue(L, 1); /* the socket's s:settimeout(ms), if any */
    lua_rawget(L, lua_upvalueindex(UP_TIMEOUTS));
    lua_replace(L, 3);
  } else if (t != LUA_TNUMBER || !(lua_tonumber(L, 3) >= 0)) { /* NaN fails too */
    return luaL_error(L, "bad argument #2 to '%s' (timeout in ms expected, got %s)", name,
                      t == LUA_TNUMBER ? luaL_tolstring(L, 3, NULL) : lua_typename(L, t));
  }
  if (!lua_isnil(L, 3)) {
    /* A deadline in the core (deadline.c): the operation ends with 121 by itself. */
    if (prepare_deadline(L, 1, kind, &box) != 0) {
      /* Closed (the Lua side raises what Recv or Send does), or a send of this socket
       * already has the deadline: timed(s, sending, data, ms) times it with a timer.
       * It yields in Lua, under this call's continuation. */
      lua_pushvalue(L, lua_upvalueindex(UP_TIMED));
      lua_insert(L, 1);
      lua_pushboolean(L, sending);
      lua_insert(L, 3);
      lua_callk(L, 4, LUA_MULTRET, 0, timed_done);
      return timed_done(L, LUA_OK, 0);
    }
    ms = lua_tonumber(L, 3);
  }
  lua_settop(L, 2);
  lua_pushcfunction(L, lfwx_wake_io); /* the sink, and this coroutine its user data */
  lua_pushthread(L);
  if (sending)
    lfwx_socket_send(L);
  else
    lfwx_socket_recv(L);
  if (ms >= 0) fwx_socket_deadline(box->s, kind, whole_ms(ms));
  /* The rest of this frame goes when it returns: the resume's values are its results. */
  lua_pushlightuserdata(L, (void *)&waiting_token);
  return lua_yield(L, 1);
}

static int l_awaited_recv(lua_State *L) { return awaited_io(L, 0); }
static int l_awaited_send(lua_State *L) { return awaited_io(L, 1); }

/* core.awaited_io(spawned, timeouts, timed) -> recv, send: the socket methods, over
 * await.lua's tables and its function for the timed path. */
static int l_awaited_io(lua_State *L) {
  int i, f;
  lua_CFunction fns[2] = { l_awaited_recv, l_awaited_send };
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  for (f = 0; f < 2; f++) {
    for (i = 1; i <= LFWX_NCLASSES; i++) luaL_getmetatable(L, lfwx_class_names[i]);
    for (i = 1; i <= 3; i++) lua_pushvalue(L, i);
    lua_pushcclosure(L, fns[f], UP_COUNT);
  }
  return 2;
}

/* core.deadline_prepare(s) -> whether the socket can take a send deadline now, and
 * core.deadline_send(s, ms): give it to the send started last. For s:sendto, which
 * starts its SendTo from Lua between the two (await.lua). */
static int l_deadline_prepare(lua_State *L) {
  lfwx_socket_t *box;
  lua_pushboolean(L, prepare_deadline(L, 1, FWX_OP_SEND, &box) == 0);
  return 1;
}

static int l_deadline_send(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  lua_Number ms = luaL_checknumber(L, 2);
  if (box->s != NULL) fwx_socket_deadline(box->s, FWX_OP_SEND, whole_ms(ms));
  return 0;
}

/* core.WAITING, core.wake_io, core.step, core.awaited_io and the deadline pair, into
 * the table on top. */
void lfwx_open_resume(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&waiting_token);
  lua_setfield(L, -2, "WAITING");
  lua_pushcfunction(L, lfwx_wake_io);
  lua_setfield(L, -2, "wake_io");
  lua_pushcfunction(L, l_step);
  lua_setfield(L, -2, "step");
  lua_pushcfunction(L, l_awaited_io);
  lua_setfield(L, -2, "awaited_io");
  lua_pushcfunction(L, l_deadline_prepare);
  lua_setfield(L, -2, "deadline_prepare");
  lua_pushcfunction(L, l_deadline_send);
  lua_setfield(L, -2, "deadline_send");
}
