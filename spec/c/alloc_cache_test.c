/* alloc_cache_test.c: the binding's allocation cache (csrc/lua/alloc.c) seen from the
 * allocator it sits in front of. The Lua state here has an allocator that keeps each
 * block's size in a header and checks that every free and resize names the size it
 * gave; at lua_close every block must have come back. With the cache (argument 1),
 * churning small objects must also reach this allocator far less often than once per
 * object, and when this allocator refuses, what the cache holds must come back to it
 * and the request (a new block or a resize) be asked again. Prints "ok".
 *
 *   alloc_cache_test 1|0     (LUA_PATH/LUA_CPATH must find fwx) */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct stats {
  size_t live_blocks, live_bytes, news, wrong_sizes;
  size_t limit;            /* refuse what would take live_bytes past it (0: none) */
} stats_t;

/* Each block: its size in a 16-byte header, then what Lua asked for. */
static void *tracking_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  stats_t *s = ud;
  size_t *h;
  if (p == NULL) {
    if (nsize == 0) return NULL;
    if (s->limit != 0 && s->live_bytes + nsize > s->limit) return NULL;
    h = malloc(nsize + 16);
    if (h == NULL) return NULL;
    h[0] = nsize;
    s->live_blocks++;
    s->live_bytes += nsize;
    s->news++;
    return h + 2;
  }
  h = (size_t *)p - 2;
  if (h[0] != osize) s->wrong_sizes++;
  if (nsize == 0) {
    s->live_blocks--;
    s->live_bytes -= h[0];
    free(h);
    return NULL;
  }
  if (s->limit != 0 && nsize > h[0] && s->live_bytes + (nsize - h[0]) > s->limit) return NULL;
  s->live_bytes -= h[0];
  h = realloc(h, nsize + 16);
  if (h == NULL) return NULL;
  h[0] = nsize;
  s->live_bytes += nsize;
  return h + 2;
}

static const char *const churn =
  "local fwx = require 'fwx'\n"
  "local fw = fwx.new{}\n"
  "local keep = {}\n"
  "for i = 1, 20000 do\n"
  "  local b = fw:CreateBuffer(i % 100)\n"          /* small userdata, of many sizes */
  "  if i % 7 == 0 then keep[#keep + 1] = b end\n"  /* some live on */
  "  if i % 200 == 0 then collectgarbage() end\n"
  "end\n"
  "fw:Close()\n"
  "return #keep\n";

/* Under a limit just above what is live: a table grown by resizes (its array is
 * resized in place by the allocator, 64 -> 128 entries being the first request past
 * the limit) and a new string fit only once the cache has given its blocks back. No
 * garbage is left before (two full collections), so Lua's emergency collection cannot
 * make the room itself. */
static const char *const before_tight = "t = {} for i = 1, 8 do t[i] = i end\n";
static const char *const tight =
  "for i = 9, 600 do t[i] = i end\n"
  "local sum = 0\n"
  "for i = 1, 600 do sum = sum + t[i] end\n"
  "assert(sum == 180300, 'table contents changed: ' .. sum)\n"
  "local s = string.rep('x', 3000)\n"
  "assert(#s == 3000)\n";

int main(int argc, char **argv) {
  stats_t s = {0, 0, 0, 0, 0};
  int want_cache = argc > 1 && argv[1][0] == '1';
  size_t before;
  lua_State *L = lua_newstate(tracking_alloc, &s);
  if (L == NULL) return 1;
  luaL_openlibs(L);
  if (luaL_dostring(L, "require 'fwx'") != LUA_OK) {
    printf("require: %s\n", lua_tostring(L, -1));
    return 1;
  }
  before = s.news;
  if (luaL_dostring(L, churn) != LUA_OK) {
    printf("churn: %s\n", lua_tostring(L, -1));
    return 1;
  }
  /* 20 000 buffers, each at least one block: with the cache most come from it. */
  if (want_cache && s.news - before > 5000) {
    printf("the allocator was asked %zu times for 20000 buffers\n", s.news - before);
    return 1;
  }
  if (!want_cache && s.news - before < 20000) {
    printf("only %zu allocations for 20000 buffers without the cache\n", s.news - before);
    return 1;
  }
  lua_settop(L, 0);
  if (want_cache) {
    /* Compiled before the limit: compiling allocates much more than the margin. */
    if (luaL_dostring(L, before_tight) != LUA_OK || luaL_loadstring(L, tight) != LUA_OK)
      return 1;
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCCOLLECT);
    s.limit = s.live_bytes + 1024;
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      printf("under a limit: %s\n", lua_tostring(L, -1));
      return 1;
    }
    s.limit = 0;
  }
  lua_close(L);
  if (s.wrong_sizes != 0 || s.live_blocks != 0 || s.live_bytes != 0) {
    printf("wrong sizes %zu, blocks left %zu, bytes left %zu\n", s.wrong_sizes,
           s.live_blocks, s.live_bytes);
    return 1;
  }
  printf("ok\n");
  return 0;
}
