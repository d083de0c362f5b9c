/* buffer.c: the "fwx.buffer" class (IFWXIOBuffer). A buffer's header and bytes are
 * the userdata itself (fwx_buffer_place), so the collector sees every byte and no
 * finalizer is needed. Operations that hold a buffer anchor its userdata while they
 * are pending; a Send with no sink anchors nothing and passes the bytes instead, which
 * the core copies if it cannot write them at once. A window's user value is the buffer
 * it looks into. SDK methods take 0-based offsets; find/sub/byte are 1-based like
 * string's. */
#include "lfwx.h"
#include <string.h>

/* Refuse sizes the core should never see: 1 GiB is far above any I/O buffer. */
#define LFWX_BUFFER_MAX ((lua_Integer)1 << 30)

fwx_buffer_t *lfwx_test_buffer(lua_State *L, int idx) {
  char *p = lfwx_testudata(L, idx, LFWX_BUFFER);
  return p != NULL ? (fwx_buffer_t *)(p + LFWX_BUFFER_OFFSET) : NULL;
}

fwx_buffer_t *lfwx_check_buffer(lua_State *L, int idx) {
  return (fwx_buffer_t *)((char *)lfwx_checkudata(L, idx, LFWX_BUFFER) + LFWX_BUFFER_OFFSET);
}

/* A buffer userdata with room for `cap` bytes; returns where its buffer goes. Only a
 * window has a user value (its base). */
static void *new_buffer(lua_State *L, size_t cap, int nuv) {
  char *p = lua_newuserdatauv(L, LFWX_BUFFER_OFFSET + fwx_buffer_place_size(cap), nuv);
  *(const void **)p = &lfwx_class_tags[LFWX_BUFFER];
  lua_pushvalue(L, lua_upvalueindex(LFWX_BUFFER));
  lua_setmetatable(L, -2);
  return p + LFWX_BUFFER_OFFSET;
}

/* A new buffer holding a copy of data/len, capacity cap (>= len). */
fwx_buffer_t *lfwx_push_buffer(lua_State *L, const char *data, size_t len, size_t cap,
                               int is_const) {
  return fwx_buffer_place(new_buffer(L, cap, 0), cap, data, len, is_const);
}

/* Writers go through this: a constant buffer, or one lent to a pending operation,
 * raises. */
static fwx_buffer_t *check_writable(lua_State *L, int idx) {
  fwx_buffer_t *b = lfwx_check_buffer(L, idx);
  int r = fwx_buffer_writable(b);
  if (r == FWX_ELOCKED) luaL_error(L, "buffer is lent to a pending operation");
  if (r != 0) luaL_error(L, "buffer is constant");
  return b;
}

static size_t check_size(lua_State *L, int idx, const char *what) {
  lua_Integer n = luaL_checkinteger(L, idx);
  if (n < 0 || n > LFWX_BUFFER_MAX)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be 0 to %I", what, LFWX_BUFFER_MAX));
  return (size_t)n;
}

int lfwx_create_buffer(lua_State *L) {
  size_t n;
  lfwx_check_service(L, 1);
  n = check_size(L, 2, "size");
  lfwx_push_buffer(L, NULL, 0, n, 0);
  return 1;
}

int lfwx_create_const_buffer(lua_State *L) {
  size_t len;
  const char *s;
  lfwx_check_service(L, 1);
  s = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len <= (size_t)LFWX_BUFFER_MAX, 2, "string too large for a buffer");
  lfwx_push_buffer(L, s, len, len, 1);
  return 1;
}

int lfwx_create_window_buffer(lua_State *L) {
  fwx_buffer_t *base;
  size_t off, len;
  void *mem;
  lfwx_check_service(L, 1);
  base = lfwx_check_buffer(L, 2);
  off = check_size(L, 3, "offset");
  len = check_size(L, 4, "length");
  luaL_argcheck(L, off <= fwx_buffer_capacity(base), 3, "offset beyond the buffer");
  luaL_argcheck(L, len <= fwx_buffer_capacity(base) - off, 4, "window beyond the buffer");
  mem = new_buffer(L, 0, 1);
  lua_pushvalue(L, 2); /* the window keeps what it looks into */
  lua_setiuservalue(L, -2, 1);
  fwx_buffer_place_window(mem, base, off, len);
  return 1;
}

static int l_get_buffer_and_size(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  lua_pushlstring(L, fwx_buffer_data(b), fwx_buffer_size(b));
  lua_pushinteger(L, (lua_Integer)fwx_buffer_size(b));
  return 2;
}

static int l_set_data_size(lua_State *L) {
  fwx_buffer_t *b = check_writable(L, 1);
  size_t n = check_size(L, 2, "size");
  luaL_argcheck(L, n <= fwx_buffer_capacity(b), 2, "size larger than the buffer");
  fwx_buffer_set_size(b, n);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_append(lua_State *L) {
  fwx_buffer_t *b = check_writable(L, 1);
  size_t len, n;
  const char *s;
  fwx_buffer_t *src = lfwx_test_buffer(L, 2);
  if (src != NULL) {
    s = fwx_buffer_data(src);
    len = fwx_buffer_size(src);
  } else {
    s = luaL_checklstring(L, 2, &len);
  }
  n = fwx_buffer_append(b, s, len);
  lua_pushinteger(L, (lua_Integer)n);
  if (n < len) {
    lua_pushliteral(L, "FWX_E_BUFFERFULL");
    return 2;
  }
  return 1;
}

/* ReadAt(offset, n): up to n bytes of the valid data from a 0-based offset. */
static int l_read_at(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  size_t off = check_size(L, 2, "offset"), size = fwx_buffer_size(b), n;
  luaL_argcheck(L, off <= size, 2, "offset beyond the data");
  n = lua_isnoneornil(L, 3) ? size - off : check_size(L, 3, "count");
  if (n > size - off) n = size - off;
  lua_pushlstring(L, fwx_buffer_data(b) + off, n);
  return 1;
}

/* SendToBuffer(dst, offset, n): append n bytes from offset to dst. */
static int l_send_to_buffer(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  fwx_buffer_t *dst = check_writable(L, 2);
  size_t off = check_size(L, 3, "offset"), size = fwx_buffer_size(b), n, done;
  luaL_argcheck(L, off <= size, 3, "offset beyond the data");
  n = lua_isnoneornil(L, 4) ? size - off : check_size(L, 4, "count");
  luaL_argcheck(L, n <= size - off, 4, "count beyond the data");
  luaL_argcheck(L, dst != b, 2, "destination is the source buffer");
  done = fwx_buffer_append(dst, fwx_buffer_data(b) + off, n);
  lua_pushinteger(L, (lua_Integer)done);
  if (done < n) {
    lua_pushliteral(L, "FWX_E_BUFFERFULL");
    return 2;
  }
  return 1;
}

static int l_get_buffer_sizes(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  lua_pushinteger(L, (lua_Integer)fwx_buffer_capacity(b));
  lua_pushinteger(L, (lua_Integer)fwx_buffer_size(b));
  return 2;
}

/* string.find(s, pattern, init, true) on the buffer, without copying it. */
static int l_find(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  size_t nlen, size = fwx_buffer_size(b);
  const char *needle = luaL_checklstring(L, 2, &nlen);
  lua_Integer init = luaL_optinteger(L, 3, 1);
  const char *hay = fwx_buffer_data(b), *hit;
  if (init < 0) init = (lua_Integer)size + init + 1;
  if (init < 1) init = 1;
  if ((size_t)init > size + 1) {
    lua_pushnil(L);
    return 1;
  }
  hit = memmem(hay + init - 1, size - (size_t)(init - 1), needle, nlen);
  if (hit == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)(hit - hay) + 1);
  lua_pushinteger(L, (lua_Integer)(hit - hay) + (lua_Integer)nlen);
  return 2;
}

/* string.sub semantics: 1-based, negative from the end. */
static int l_sub(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  lua_Integer size = (lua_Integer)fwx_buffer_size(b);
  lua_Integer i = luaL_optinteger(L, 2, 1), j = luaL_optinteger(L, 3, -1);
  if (i < 0) i = size + i + 1;
  if (i < 1) i = 1;
  if (j < 0) j = size + j + 1;
  if (j > size) j = size;
  if (i > j) {
    lua_pushliteral(L, "");
  } else {
    lua_pushlstring(L, fwx_buffer_data(b) + i - 1, (size_t)(j - i + 1));
  }
  return 1;
}

/* string.byte semantics: b:byte([i [, j]]), 1-based, negative from the end. */
static int l_byte(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  lua_Integer size = (lua_Integer)fwx_buffer_size(b);
  lua_Integer i = luaL_optinteger(L, 2, 1), j, k;
  const unsigned char *p = (const unsigned char *)fwx_buffer_data(b);
  if (i < 0) i = size + i + 1;
  j = luaL_optinteger(L, 3, i);
  if (j < 0) j = size + j + 1;
  if (i < 1) i = 1;
  if (j > size) j = size;
  if (i > j) return 0;
  luaL_checkstack(L, (int)(j - i + 1), "buffer slice too long");
  for (k = i; k <= j; k++) lua_pushinteger(L, p[k - 1]);
  return (int)(j - i + 1);
}

static int l_islent(lua_State *L) {
  lua_pushboolean(L, fwx_buffer_lent(lfwx_check_buffer(L, 1)));
  return 1;
}

static int l_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fwx_buffer_size(lfwx_check_buffer(L, 1)));
  return 1;
}

static int l_tostring(lua_State *L) {
  fwx_buffer_t *b = lfwx_check_buffer(L, 1);
  lua_pushlstring(L, fwx_buffer_data(b), fwx_buffer_size(b));
  return 1;
}

int lfwx_open_buffer(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"GetBufferAndSize", l_get_buffer_and_size},
    {"SetDataSize", l_set_data_size},
    {"Append", l_append},
    {"ReadAt", l_read_at},
    {"SendToBuffer", l_send_to_buffer},
    {"GetBufferSizes", l_get_buffer_sizes},
    {"IsLent", l_islent},
    {"find", l_find},
    {"sub", l_sub},
    {"byte", l_byte},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__len", l_len},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  lfwx_newclass(L, LFWX_BUFFER, methods, meta, NULL);
  return 0;
}
