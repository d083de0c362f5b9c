/* resume.c: the await style's sink for receives and sends (lua/fwx/await.lua), in C.
 *
 * An awaited s:recv() or s:send() starts Recv/Send with this sink and the coroutine as
 * the user data, then yields core.WAITING. The sink resumes the coroutine with the
 * notification's values less the coroutine: (ok, err, buffer, address). Written in C
 * because it runs twice per echoed message: as a Lua function calling
 * coroutine.resume it cost about 320 instructions more a call (callgrind, awaited echo
 * at 50 x 64 B: 11 363 instructions per message, 10 713 with this).
 *
 * What the resume ends in decides the rest: the coroutine waits again (it yielded
 * WAITING: nothing to do), finished, or raised (raised again here with the
 * coroutine's traceback, so that the dispatcher reports it as a handler's error), or
 * yielded anything else (a misuse, reported: nothing will resume it). */
#include "lfwx.h"

/* Its address is the token: a light userdata nothing else can make. */
static const char waiting_token;

static int l_wake_io(lua_State *L) {
  lua_State *co = lua_tothread(L, 4);
  int nres, status;
  if (co == NULL) return luaL_typeerror(L, 4, "coroutine");
  if (lua_status(co) != LUA_YIELD || !lua_checkstack(co, 4))
    return luaL_error(L, "fwx: cannot resume the coroutine (it is not waiting)");
  lua_settop(L, 5);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 5);
  lua_xmove(L, co, 4);
  status = lua_resume(co, L, 4, &nres);
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

/* core.WAITING and core.wake_io, into the table on top. */
void lfwx_open_resume(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&waiting_token);
  lua_setfield(L, -2, "WAITING");
  lua_pushcfunction(L, l_wake_io);
  lua_setfield(L, -2, "wake_io");
}
