/* store.c: core.store, the Lua face of the shared store (csrc/core/store.c).
 *
 * A value is stored as a copy: integers as the core's integers, so that incr works
 * on them, anything else serialised (serialize.c). get therefore returns a new table
 * each time, and changing it changes nothing stored. */
#include "lfwx.h"

/* get's first try copies into the C stack; most values fit, and a larger one costs
 * one more lock for a buffer of its size. */
#define GET_ROOM 256

/* Keys are strings only: a number would be converted, and store.set(1, v) and
 * store.get("1") finding the same entry is a surprise, not a convenience. */
static const char *check_key(lua_State *L, size_t *klen) {
  const char *key;
  if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string");
  key = lua_tolstring(L, 1, klen);
  luaL_argcheck(L, *klen <= FWX_STORE_KEY_MAX, 1, "key longer than 65536 bytes");
  return key;
}

/* The store is full (or the allocator refused): nil, message, Win32 code. */
static int full(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s (the store holds %I of its %I bytes)", fwx_strerror(err),
                  (LUAI_UACINT)fwx_store_bytes(), (LUAI_UACINT)fwx_store_capacity());
  lua_pushinteger(L, fwx_win32_error(err));
  return 3;
}

/* set and add: the value at 2 (not nil) under the key at 1. */
static int put(lua_State *L, const char *key, size_t klen, int only_new) {
  int r;
  if (lua_isinteger(L, 2)) {
    int64_t v = (int64_t)lua_tointeger(L, 2);
    r = only_new ? fwx_store_add_integer(key, klen, v) : fwx_store_set_integer(key, klen, v);
  } else {
    size_t len;
    const char *bytes;
    lfwx_encode(L, 2);
    bytes = lua_tolstring(L, -1, &len);
    r = only_new ? fwx_store_add(key, klen, bytes, len) : fwx_store_set(key, klen, bytes, len);
  }
  if (r == UV_EEXIST) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "exists");
    return 2;
  }
  if (r != 0) return full(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_set(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, &klen);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    fwx_store_delete(key, klen);
    lua_pushboolean(L, 1);
    return 1;
  }
  return put(L, key, klen, 0);
}

static int l_add(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, &klen);
  luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "a value other than nil");
  lua_settop(L, 2);
  return put(L, key, klen, 1);
}

static int l_get(lua_State *L) {
  char room[GET_ROOM], *buf = room;
  size_t klen, cap = sizeof room;
  const char *key = check_key(L, &klen);
  fwx_store_value_t v;
  int r;
  lua_settop(L, 1);
  /* Until the bytes fit: another thread may make them larger between two tries. */
  while ((r = fwx_store_get(key, klen, buf, cap, &v)) == UV_ENOBUFS) {
    lua_settop(L, 1);
    cap = v.len;
    buf = lua_newuserdatauv(L, cap, 0);
  }
  if (r == UV_ENOENT) {
    lua_pushnil(L);
    return 1;
  }
  if (r != 0) return lfwx_raise(L, r, "store");
  if (v.is_integer) {
    lua_pushinteger(L, (lua_Integer)v.integer);
    return 1;
  }
  return lfwx_decode(L, buf, v.len);
}

static int l_incr(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, &klen);
  lua_Integer delta = luaL_optinteger(L, 2, 1), init = luaL_optinteger(L, 3, 0);
  int64_t sum;
  int r = fwx_store_incr(key, klen, (int64_t)delta, (int64_t)init, &sum);
  if (r == FWX_ESTATE) return luaL_argerror(L, 1, "the entry is not an integer");
  if (r == FWX_EINVAL) return luaL_argerror(L, 2, "the sum overflows an integer");
  if (r != 0) return full(L, r);
  lua_pushinteger(L, (lua_Integer)sum);
  return 1;
}

static int l_delete(lua_State *L) {
  size_t klen;
  const char *key = check_key(L, &klen);
  lua_pushboolean(L, fwx_store_delete(key, klen) == 0);
  return 1;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fwx_store_count());
  return 1;
}

static int l_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fwx_store_bytes());
  return 1;
}

/* capacity([bytes]): the capacity, after setting it when bytes is given. */
static int l_capacity(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "capacity must not be negative");
    fwx_store_set_capacity((size_t)n);
  }
  lua_pushinteger(L, (lua_Integer)fwx_store_capacity());
  return 1;
}

static int l_clear(lua_State *L) {
  (void)L;
  fwx_store_clear();
  return 0;
}

int lfwx_open_store(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"get", l_get},
    {"set", l_set},
    {"add", l_add},
    {"incr", l_incr},
    {"delete", l_delete},
    {"count", l_count},
    {"bytes", l_bytes},
    {"capacity", l_capacity},
    {"_clear", l_clear},
    {NULL, NULL}
  };
  lua_createtable(L, 0, sizeof funcs / sizeof funcs[0] - 1);
  luaL_setfuncs(L, funcs, 0);
  return 1;
}
