/* serialize.c: values that cross Lua states. Workers share nothing but the store and
 * posted messages, so a value leaves one state as bytes and enters another as a copy.
 *
 * The encoding is one value, prefix-free (a decoder always knows where a value ends,
 * so no strict prefix of an encoding is itself one):
 *
 *   value := NIL | FALSE | TRUE
 *          | INT varint(zigzag(i))          integers stay integers
 *          | FLOAT 8 bytes                  the double's bits, little-endian
 *          | STR varint(n) n bytes
 *          | TABLE varint(n) value*n (value value)* NIL
 *
 * A table's sequence t[1..n] (up to its first nil) comes first without its keys, then
 * the other pairs, ended by NIL in key position, which no real key can be. Access is
 * raw: metatables are neither encoded nor consulted. */
#include "lfwx.h"
#include <ctype.h>
#include <stdint.h>
#include <string.h>

enum { T_NIL = 0, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE };

/* Tables nested deeper than this are refused: both sides recurse in C, and a value
 * this deep is more likely a mistake than data. */
#define MAX_DEPTH 100

/* Where the value being encoded sits, per level of table: its key's stack slot, or
 * (slot 0) its index in the sequence; as_key: the value is that key itself. */
typedef struct step {
  int slot;
  int as_key;
  lua_Integer index;
} step_t;

typedef struct encoder {
  lua_State *L;
  int box;                        /* stack slot of the userdata holding the bytes */
  unsigned char *p;
  size_t len, cap;
  int depth;
  const void *open[MAX_DEPTH];    /* the tables being encoded, outermost first */
  step_t at[MAX_DEPTH];
} encoder_t;

/* ---- encoding ---- */

/* The bytes grow in a userdata that replaces the old one in its slot: an error
 * anywhere longjmps out, and the collector frees what was built. (A luaL_Buffer must
 * stay on top of the stack, which lua_next's key and value do not allow.) */
static void reserve(encoder_t *e, size_t n) {
  size_t cap = e->cap;
  unsigned char *p;
  if (cap - e->len >= n) return;
  while (cap - e->len < n) {
    if (cap > SIZE_MAX / 2) luaL_error(e->L, "encoded value too large");
    cap *= 2;
  }
  p = lua_newuserdatauv(e->L, cap, 0);
  memcpy(p, e->p, e->len);
  lua_replace(e->L, e->box);
  e->p = p;
  e->cap = cap;
}

static void put_byte(encoder_t *e, unsigned char b) {
  reserve(e, 1);
  e->p[e->len++] = b;
}

static void put_varint(encoder_t *e, uint64_t v) {
  reserve(e, 10);
  while (v >= 0x80) {
    e->p[e->len++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  e->p[e->len++] = (unsigned char)v;
}

static void put_bytes(encoder_t *e, const void *p, size_t n) {
  reserve(e, n);
  memcpy(e->p + e->len, p, n);
  e->len += n;
}

static void put_integer(encoder_t *e, lua_Integer i) {
  uint64_t u = (uint64_t)i;
  /* zigzag: small magnitudes of either sign take few bytes */
  put_byte(e, T_INT);
  put_varint(e, (u << 1) ^ (0 - (u >> 63)));
}

static void put_float(encoder_t *e, lua_Number x) {
  double d = (double)x;
  uint64_t bits;
  unsigned char b[8];
  int i;
  memcpy(&bits, &d, sizeof bits);
  for (i = 0; i < 8; i++) b[i] = (unsigned char)(bits >> (8 * i));
  put_byte(e, T_FLOAT);
  put_bytes(e, b, sizeof b);
}

/* Whether the string is a name, to be shown as ".name" in a path. */
static int is_name(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 40 || isdigit((unsigned char)s[0])) return 0;
  for (i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
  return 1;
}

/* One step of a path, pushed: .name, ["other string"], [3], [true]. */
static void push_step(lua_State *L, const step_t *s) {
  size_t n;
  const char *k;
  if (s->slot == 0) {
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)s->index);
  } else if (s->as_key) {
    lua_pushliteral(L, "[<a table key>]");
  } else if (lua_type(L, s->slot) == LUA_TSTRING) {
    k = lua_tolstring(L, s->slot, &n);
    if (is_name(k, n)) {
      lua_pushfstring(L, ".%s", k);
    } else {
      lua_pushlstring(L, k, n > 40 ? 40 : n); /* a long key, shortened */
      lua_pushfstring(L, "[\"%s%s\"]", lua_tostring(L, -1), n > 40 ? "..." : "");
      lua_remove(L, -2);
    }
  } else if (lua_isinteger(L, s->slot)) {
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, s->slot));
  } else if (lua_type(L, s->slot) == LUA_TNUMBER) {
    lua_pushfstring(L, "[%f]", (LUAI_UACNUMBER)lua_tonumber(L, s->slot));
  } else {
    lua_pushfstring(L, "[%s]", luaL_typename(L, s->slot));
  }
}

/* The path to the first `steps` steps ("value.a[2]"), pushed, for messages. */
static const char *push_path(encoder_t *e, int steps) {
  luaL_Buffer b;
  int d;
  luaL_checkstack(e->L, 4, NULL);
  luaL_buffinit(e->L, &b);
  luaL_addstring(&b, "value");
  for (d = 0; d < steps; d++) {
    push_step(e->L, &e->at[d]);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return lua_tostring(e->L, -1);
}

/* Raise, naming what cannot be encoded and where it is: a key of a table, or a
 * value at a path. */
static int refuse(encoder_t *e, const char *what) {
  int d = e->depth;
  if (d > 0 && e->at[d - 1].as_key)
    return luaL_error(e->L, "cannot encode %s (a key in %s)", what, push_path(e, d - 1));
  return luaL_error(e->L, "cannot encode %s (at %s)", what, push_path(e, d));
}

static void put_value(encoder_t *e, int idx);

/* Whether the key at k is an index of the sequence part 1..n (encoded without keys). */
static int in_sequence(lua_State *L, int k, lua_Integer n) {
  lua_Integer i;
  if (!lua_isinteger(L, k)) return 0;
  i = lua_tointeger(L, k);
  return i >= 1 && i <= n;
}

static void put_pairs(encoder_t *e, int t, lua_Integer n) {
  lua_State *L = e->L;
  step_t *at = &e->at[e->depth - 1];
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    int k = lua_gettop(L) - 1;
    if (!in_sequence(L, k, n)) {
      at->slot = k;
      at->as_key = 1;
      put_value(e, k);
      at->as_key = 0;
      put_value(e, k + 1);
    }
    lua_pop(L, 1);
  }
  put_byte(e, T_NIL);
}

static void put_table(encoder_t *e, int t) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, t);
  lua_Integer n = 0, i;
  int d;
  if (e->depth == MAX_DEPTH)
    luaL_error(L, "cannot encode tables nested more than %d deep", MAX_DEPTH);
  for (d = 0; d < e->depth; d++)
    if (e->open[d] == self) refuse(e, "a table that contains itself");
  /* key and value of lua_next, a grown box, and room for the message */
  luaL_checkstack(L, 6, "value nested too deep");
  e->open[e->depth] = self;
  e->at[e->depth++] = (step_t){0, 0, 0};
  while (lua_rawgeti(L, t, n + 1) != LUA_TNIL) {
    lua_pop(L, 1);
    n++;
  }
  lua_pop(L, 1);
  put_byte(e, T_TABLE);
  put_varint(e, (uint64_t)n);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    e->at[e->depth - 1].index = i;
    put_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  put_pairs(e, t, n);
  e->depth--;
}

static void put_value(encoder_t *e, int idx) {
  lua_State *L = e->L;
  size_t n;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: put_byte(e, T_NIL); break;
  case LUA_TBOOLEAN: put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) put_integer(e, lua_tointeger(L, idx));
    else put_float(e, lua_tonumber(L, idx));
    break;
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    put_byte(e, T_STR);
    put_varint(e, (uint64_t)n);
    put_bytes(e, s, n);
    break;
  case LUA_TTABLE: put_table(e, idx); break;
  default:
    refuse(e, lua_pushfstring(L, "a %s", luaL_typename(L, idx)));
  }
}

int lfwx_encode(lua_State *L, int idx) {
  encoder_t e;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, NULL);
  e.L = L;
  e.len = 0;
  e.cap = 64;
  e.depth = 0;
  e.p = lua_newuserdatauv(L, e.cap, 0);
  e.box = lua_gettop(L);
  put_value(&e, idx);
  lua_pushlstring(L, (const char *)e.p, e.len);
  lua_remove(L, e.box);
  return 1;
}

/* ---- decoding ---- */

typedef struct decoder {
  lua_State *L;
  const unsigned char *p, *end;
  int depth;
} decoder_t;

static int malformed(decoder_t *d) {
  return luaL_error(d->L, "malformed encoded value");
}

static unsigned char get_byte(decoder_t *d) {
  if (d->p == d->end) malformed(d);
  return *d->p++;
}

/* At most 10 bytes, the tenth holding bit 63 alone: nothing past 64 bits. */
static uint64_t get_varint(decoder_t *d) {
  uint64_t v = 0;
  int shift;
  for (shift = 0; shift <= 63; shift += 7) {
    unsigned char b = get_byte(d);
    if (shift == 63 && b > 1) break;
    v |= (uint64_t)(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return v;
  }
  return (uint64_t)malformed(d);
}

static const unsigned char *get_bytes(decoder_t *d, uint64_t n) {
  const unsigned char *p = d->p;
  if (n > (uint64_t)(d->end - d->p)) malformed(d);
  d->p += n;
  return p;
}

static void push_integer(decoder_t *d) {
  uint64_t u = get_varint(d);
  uint64_t i = (u >> 1) ^ (0 - (u & 1));
  lua_pushinteger(d->L, (lua_Integer)i);
}

static void push_float(decoder_t *d) {
  const unsigned char *b = get_bytes(d, 8);
  uint64_t bits = 0;
  double x;
  int i;
  for (i = 7; i >= 0; i--) bits = bits << 8 | b[i];
  memcpy(&x, &bits, sizeof x);
  lua_pushnumber(d->L, (lua_Number)x);
}

static void push_value(decoder_t *d);

/* A key on top: NIL ends the table (returns 0); NaN cannot be one. */
static int push_key(decoder_t *d) {
  lua_State *L = d->L;
  push_value(d);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
    malformed(d);
  return 1;
}

static void push_table(decoder_t *d) {
  lua_State *L = d->L;
  uint64_t n = get_varint(d), i;
  int t;
  /* Every value takes a byte at least: a count beyond that is a lie, and sizing the
   * table by it would let a few bytes of garbage allocate gigabytes. */
  if (n > (uint64_t)(d->end - d->p) || ++d->depth > MAX_DEPTH) malformed(d);
  luaL_checkstack(L, 4, "encoded value nested too deep");
  lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
  t = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    push_value(d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  while (push_key(d)) {
    push_value(d);
    lua_rawset(L, t);
  }
  d->depth--;
}

static void push_value(decoder_t *d) {
  lua_State *L = d->L;
  uint64_t n;
  switch (get_byte(d)) {
  case T_NIL: lua_pushnil(L); break;
  case T_FALSE: lua_pushboolean(L, 0); break;
  case T_TRUE: lua_pushboolean(L, 1); break;
  case T_INT: push_integer(d); break;
  case T_FLOAT: push_float(d); break;
  case T_STR:
    n = get_varint(d);
    lua_pushlstring(L, (const char *)get_bytes(d, n), (size_t)n);
    break;
  case T_TABLE: push_table(d); break;
  default: malformed(d);
  }
}

int lfwx_decode(lua_State *L, const char *data, size_t len) {
  decoder_t d;
  d.L = L;
  d.p = (const unsigned char *)data;
  d.end = d.p + len;
  d.depth = 0;
  luaL_checkstack(L, 4, NULL);
  push_value(&d);
  if (d.p != d.end) malformed(&d);
  return 1;
}
