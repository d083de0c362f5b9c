/* alloc.c: a cache of small freed blocks in front of the Lua state's allocator.
 *
 * Every received chunk is a new buffer object, and the collector frees it a little
 * later: one malloc and one free per message, about 300 instructions of glibc's on a
 * path of under 4 000 (callgrind, echo c=50 x 64 B). Lua tells its allocator the size
 * of every block it frees, so freed blocks of each small size can be kept and handed
 * back to the next request of exactly that size, without malloc.
 *
 * The cache sits in front of whatever allocator the state had (lua_getallocf), which
 * made every block it holds: a block is handed out only for its own size, so when it
 * is finally freed the original allocator gets back the block and the size it gave.
 * Allocators that track sizes (a debugging one, a limit) see nothing change. Each Lua
 * state gets its own cache (a state runs in one thread; fwx.serve's workers each have
 * theirs), and at lua_close the state gets its allocator back and the cache is
 * emptied. Builds with a sanitizer, and runs with FWX_ALLOC_CACHE=0 (make valgrind),
 * do without it, so that the checkers see every free. */
#include "lfwx.h"
#include <stdlib.h>
#include <string.h>

/* Sizes up to this many bytes are cached; the cache holds at most CACHE_BYTES. Small:
 * it covers what one poll's worth of messages frees, and idle memory is per
 * connection, which a fixed cache barely moves. */
#define SMALL_MAX 256
#define CACHE_BYTES (64 * 1024)

typedef struct alloc_cache {
  lua_Alloc f;                    /* the state's own allocator */
  void *ud;
  size_t bytes;                   /* held in the lists */
  void *lists[SMALL_MAX + 1];     /* freed blocks by exact size, linked by first word */
} alloc_cache_t;

/* Give the state's allocator back every block the cache holds. */
static void drain(alloc_cache_t *c) {
  size_t n;
  for (n = sizeof(void *); n <= SMALL_MAX; n++) {
    while (c->lists[n] != NULL) {
      void *b = c->lists[n];
      c->lists[n] = *(void **)b;
      c->f(c->ud, b, n, 0);
    }
  }
  c->bytes = 0;
}

static void *cached_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  alloc_cache_t *c = ud;
  void *r;
  if (nsize == 0) {
    if (p != NULL && osize <= SMALL_MAX && osize >= sizeof(void *) &&
        c->bytes + osize <= CACHE_BYTES) {
      *(void **)p = c->lists[osize];
      c->lists[osize] = p;
      c->bytes += osize;
      return NULL;
    }
    return c->f(c->ud, p, osize, 0);
  }
  /* A new block (p NULL: osize is then the kind of object, not a size). */
  if (p == NULL && nsize <= SMALL_MAX && c->lists[nsize] != NULL) {
    void *b = c->lists[nsize];
    c->lists[nsize] = *(void **)b;
    c->bytes -= nsize;
    return b;
  }
  r = c->f(c->ud, p, osize, nsize);
  if (r == NULL && c->bytes > 0) {
    /* The allocator refused (a new block or a resize of p, which is still valid):
     * give it back what the cache holds and ask once more, before Lua's emergency
     * collection does its part. */
    drain(c);
    r = c->f(c->ud, p, osize, nsize);
  }
  return r;
}

/* The sentinel's finaliser, at lua_close (it sits in the registry): the state gets
 * its allocator back, and the cache gives back what it holds. */
static int uninstall(lua_State *L) {
  alloc_cache_t **box = lua_touserdata(L, 1), *c = *box;
  void *ud;
  if (c == NULL || lua_getallocf(L, &ud) != cached_alloc || ud != c) return 0;
  lua_setallocf(L, c->f, c->ud);
  drain(c);
  c->f(c->ud, c, sizeof *c, 0);
  *box = NULL;
  return 0;
}

static int cache_wanted(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return 0;
#else
  const char *env = getenv("FWX_ALLOC_CACHE");
  return env == NULL || strcmp(env, "0") != 0;
#endif
}

/* Once per state, when the module opens in it. */
void lfwx_open_alloc(lua_State *L) {
  alloc_cache_t *c, **box;
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  if (f == cached_alloc || !cache_wanted()) return;
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_newtable(L);
  lua_pushcfunction(L, uninstall);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "fwx.alloc_cache");
  c = f(ud, NULL, LUA_TUSERDATA, sizeof *c);
  if (c == NULL) return; /* nothing cached: everything still works */
  memset(c, 0, sizeof *c);
  c->f = f;
  c->ud = ud;
  *box = c;
  lua_setallocf(L, cached_alloc, c);
}
