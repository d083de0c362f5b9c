/* handle.c: the "fwx.handle" class, what HookToCompletionPort returns: Read and Write
 * with an overlapped, notifications through the overlapped's interface. */
#include "lfwx.h"
#include <stdio.h>

static fwx_handle_t *check_handle(lua_State *L, int idx) {
  lfwx_handle_t *box = lfwx_checkudata(L, idx, LFWX_HANDLE);
  if (box->h == NULL || fwx_handle_closed(box->h)) luaL_error(L, "handle is closed");
  return box->h;
}

/* A userdata can be indexed only through a metatable's __index. */
static int has_index(lua_State *L, int idx) {
  if (!lua_isuserdata(L, idx) || luaL_getmetafield(L, idx, "__index") == LUA_TNIL) return 0;
  lua_pop(L, 1);
  return 1;
}

/* The descriptor of an integer, a Lua file, or an object with :getfd(). */
static int check_fd(lua_State *L, int idx) {
  luaL_Stream *f;
  lua_Integer fd;
  if (lua_isinteger(L, idx)) {
    fd = lua_tointeger(L, idx);
  } else if ((f = luaL_testudata(L, idx, LUA_FILEHANDLE)) != NULL) {
    if (f->closef == NULL) luaL_argerror(L, idx, "file is closed");
    fd = fileno(f->f);
  } else if ((lua_istable(L, idx) || has_index(L, idx)) &&
             lua_getfield(L, idx, "getfd") == LUA_TFUNCTION) {
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    if (!lua_isinteger(L, -1)) luaL_argerror(L, idx, "getfd() did not return an integer");
    fd = lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else {
    return luaL_typeerror(L, idx, "descriptor, file or object with getfd");
  }
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, idx, "not a valid descriptor");
  return (int)fd;
}

int lfwx_hook(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lfwx_handle_t *box;
  int fd, r;
  lua_settop(L, 2);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  fd = check_fd(L, 2);
  box = lfwx_newobject(L, sizeof *box, LFWX_HANDLE, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  r = fwx_handle_hook(sv->port, fd, &box->h);
  if (r == UV_ENOTSUP) return luaL_argerror(L, 2, "only regular files, pipes and stream sockets can be hooked");
  if (r < -10000) return lfwx_raise(L, r, "handle");
  if (r != 0) return lfwx_fail(L, r);
  return 1;
}

static int64_t opt_offset(lua_State *L, int idx) {
  lua_Integer off;
  if (lua_isnoneornil(L, idx)) return -1;
  off = luaL_checkinteger(L, idx);
  luaL_argcheck(L, off >= 0, idx, "offset must be 0 or more");
  return off;
}

/* Read(buffer, ov [, offset]) and Write(buffer|string, ov [, offset]). */
static int start(lua_State *L, int write) {
  fwx_handle_t *h;
  lfwx_overlapped_t *ov;
  lfwx_service_t *sv;
  fwx_buffer_t *buf;
  int64_t off;
  int slot, r, svidx, bufidx = 2;
  lua_settop(L, 4);
  h = check_handle(L, 1);
  if (write && lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    lfwx_push_buffer(L, s, len, len, 1);
    lua_replace(L, 2);
  }
  buf = lfwx_check_buffer(L, bufidx);
  ov = lfwx_checkudata(L, 3, LFWX_OVERLAPPED);
  off = opt_offset(L, 4);
  if (!write) {
    luaL_argcheck(L, fwx_buffer_capacity(buf) > 0, 2, "buffer has no room");
    r = fwx_buffer_writable(buf);
    if (r == FWX_ELOCKED) luaL_argerror(L, 2, "buffer is lent to a pending operation");
    if (r != 0) luaL_argerror(L, 2, "buffer is constant");
  }
  if (fwx_op_pending(ov->op)) return luaL_error(L, "overlapped is already pending");
  if (!fwx_handle_is_file(h) && off >= 0) luaL_argerror(L, 4, "a pipe has no position");
  lua_getiuservalue(L, 3, 2); /* 5: sink */
  lua_getiuservalue(L, 3, 3); /* 6: user data */
  if (lua_isnil(L, 5)) return luaL_error(L, "overlapped has no notification interface (SetNotificationInterface)");
  sv = lfwx_push_service_of(L, 1);
  svidx = lfwx_push_anchors(L, lua_gettop(L));
  slot = lfwx_anchor(L, sv, svidx, 3, 5, 6, bufidx);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, 4);
  r = write ? fwx_handle_write(h, ov->op, buf, off, (uintptr_t)slot)
            : fwx_handle_read(h, ov->op, buf, off, (uintptr_t)slot);
  if (r != 0) {
    lfwx_unanchor(L, sv, svidx, slot);
    lua_pushnil(L);
    lua_setiuservalue(L, 3, 4);
    return lfwx_raise(L, r, "handle");
  }
  return 0;
}

static int l_read(lua_State *L) { return start(L, 0); }
static int l_write(lua_State *L) { return start(L, 1); }

static int l_close(lua_State *L) {
  lfwx_handle_t *box = lfwx_checkudata(L, 1, LFWX_HANDLE);
  if (box->h != NULL) fwx_handle_close(box->h);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_gc(lua_State *L) {
  lfwx_handle_t *box = lfwx_checkudata(L, 1, LFWX_HANDLE);
  if (box->h != NULL) {
    fwx_handle_close(box->h);
    fwx_handle_unref(box->h);
    box->h = NULL;
  }
  return 0;
}

static int l_is_file(lua_State *L) {
  lua_pushboolean(L, fwx_handle_is_file(check_handle(L, 1)));
  return 1;
}

static int l_tostring(lua_State *L) {
  lfwx_handle_t *box = lfwx_checkudata(L, 1, LFWX_HANDLE);
  if (box->h == NULL || fwx_handle_closed(box->h))
    lua_pushfstring(L, "fwx.handle (closed, %p)", (void *)box);
  else
    lua_pushfstring(L, "fwx.handle (%s, %p)", fwx_handle_is_file(box->h) ? "file" : "stream",
                    (void *)box);
  return 1;
}

int lfwx_open_handle(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"Read", l_read},
    {"Write", l_write},
    {"Close", l_close},
    {"IsFile", l_is_file},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  static const char *const async_ops[] = {"Read", "Write", NULL};
  lfwx_newclass(L, LFWX_HANDLE, methods, meta, async_ops);
  return 0;
}
