/* resume.c: how the await style (lua/fwx/await.lua) resumes its coroutines, in C.
 *
 * An awaited s:recv() or s:send() starts Recv/Send with this sink and the coroutine as
 * the user data, then yields core.WAITING. The sink resumes the coroutine with the
 * notification's values less the coroutine: (ok, err, buffer, address). Written in C
 * because it runs twice per echoed message: as a Lua function calling
 * coroutine.resume it cost about 320 instructions more a call (callgrind, awaited echo
 * at 50 x 64 B: 11 363 instructions per message, 10 713 with this).
 *
 * Every other sink, and fw:spawn's start, resume through core.step(co, ...), so that
 * what a resume ends in is judged in one place. That decides the rest: the coroutine waits again (it yielded
 * WAITING: nothing to do), finished, or raised (raised again here with the
 * coroutine's traceback, so that the dispatcher reports it as a handler's error), or
 * yielded anything else (a misuse, reported: nothing will resume it). */
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
static int l_wake_io(lua_State *L) {
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

/* core.WAITING, core.wake_io and core.step, into the table on top. */
void lfwx_open_resume(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&waiting_token);
  lua_setfield(L, -2, "WAITING");
  lua_pushcfunction(L, l_wake_io);
  lua_setfield(L, -2, "wake_io");
  lua_pushcfunction(L, l_step);
  lua_setfield(L, -2, "step");
}
