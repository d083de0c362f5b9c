/* received.c: the buffers a service receive (Recv with no buffer, UDP) hands out.
 *
 * The bytes were read into the port's arena. A short receive is copied into a buffer
 * of its own. A longer one stays where it was read: its buffer is a small userdata
 * over the arena bytes, which saves the copy and, above all, 4 KiB of collector debt
 * per message (at 500 connections x 4 KiB, the collector's steps cost more than the
 * copy). The kept bytes are given back a whole arena block at a time: each block has
 * one Lua object (fwx.block) that every buffer kept in it holds as its user value, and
 * whose finalizer gives back all of them. One finalizer per block, not one per
 * buffer: a finalizer per buffer cost as much as it saved.
 *
 * The service holds the block object of the block receives now go into; when they
 * move on to another block the old object is left to the buffers. The core bounds the
 * blocks held this way (a buffer kept for long keeps its block). At the bound the
 * collector is asked for them (reclaim_blocks); only when that frees none are
 * receives copied, which adds debt and so makes the collector free the blocks in
 * time. (Telling the collector of a share of the kept bytes as debt instead, with
 * lua_gc, made it run more often than that and cost 10% more per message.) */
#include "lfwx.h"

/* Receives shorter than this are copied: the bookkeeping is a larger share of a short
 * one (callgrind, 50 connections x 1 KiB: 5812 instructions per echoed message kept,
 * 5923 copied; at 500 x 4 KiB, 5790 against 6724). */
#ifndef LFWX_KEEP_MIN
#define LFWX_KEEP_MIN 1024
#endif

typedef struct lfwx_block {
  LFWX_TAG;
  const char *data;      /* one kept region of the block (any will do) */
  size_t regions;        /* kept regions to give back */
} lfwx_block_t;

static int l_block_gc(lua_State *L) {
  lfwx_block_t *k = lfwx_checkudata(L, 1, LFWX_BLOCK);
  if (k->regions > 0) {
    size_t n = k->regions;
    k->regions = 0; /* a second call, by hand, finds nothing to give */
    fwx_data_release(k->data, n);
  }
  return 0;
}

void lfwx_open_received(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", l_block_gc},
    {NULL, NULL}
  };
  lfwx_newclass(L, LFWX_BLOCK, NULL, meta, NULL);
  /* getmetatable(block) is false: its __gc is not for calling by hand, which would
   * give back bytes that buffers still show. */
  luaL_getmetatable(L, lfwx_class_names[LFWX_BLOCK]);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

/* core._arena_stats(fw) -> arena blocks holding kept bytes, emptied blocks kept for
 * reuse, socket reads deferred by the read budget so far; for the specs (nothing once
 * the service is closed). */
int lfwx_arena_stats(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  size_t kept, spares, deferred;
  if (sv->port == NULL) return 0;
  fwx_port_arena_stats(sv->port, &kept, &spares, &deferred);
  lua_pushinteger(L, (lua_Integer)kept);
  lua_pushinteger(L, (lua_Integer)spares);
  lua_pushinteger(L, (lua_Integer)deferred);
  return 3;
}

/* The kept blocks are at their bound: ask the collector for the buffers that hold
 * them before copying this receive, and say whether it may be kept now. Kept bytes add
 * no debt, so the collector would not run for them: at the bound, receives were copied
 * until the copies' debt made it run, and meanwhile reads went on into blocks that
 * were no longer in the cache (the reads and the sends' copies in the kernel were the
 * dearer part, beside a C server's hot buffer). In generational mode one step is a
 * young collection, which finds the buffers of an echo or a relay dead. An ask that
 * frees nothing (a program holds the buffers, or the collector is incremental and in
 * the middle of a cycle) is not repeated for the next 16 receives, then 32, up to
 * 1024; a collector the program stopped is left alone. */
#define RECLAIM_BACKOFF_FIRST 16
#define RECLAIM_BACKOFF_MAX 1024
static int reclaim_blocks(lua_State *L, lfwx_service_t *sv, const char *data) {
  if (sv->reclaim_wait > 0) {
    sv->reclaim_wait--;
    return 0;
  }
  if (!lua_gc(L, LUA_GCISRUNNING)) return 0;
  lua_gc(L, LUA_GCSTEP, 0); /* may run finalizers: see lfwx_push_received */
  if (fwx_data_may_keep(data)) {
    sv->reclaim_backoff = 0;
    return 1;
  }
  sv->reclaim_backoff = sv->reclaim_backoff == 0 ? RECLAIM_BACKOFF_FIRST : 2 * sv->reclaim_backoff;
  if (sv->reclaim_backoff > RECLAIM_BACKOFF_MAX) sv->reclaim_backoff = RECLAIM_BACKOFF_MAX;
  sv->reclaim_wait = sv->reclaim_backoff;
  return 0;
}

/* Push the buffer for a service receive's bytes. Every allocation comes before the
 * bytes are kept, so that an error cannot leave kept bytes without an owner. */
void lfwx_push_received(lua_State *L, lfwx_service_t *sv, int svidx, fwx_completion_t *c) {
  const char *data = c->data;
  lfwx_block_t *k;
  int fresh = 0;
  char *p;

  if (c->bytes < LFWX_KEEP_MIN || (!fwx_data_may_keep(data) && !reclaim_blocks(L, sv, data))) {
    lfwx_push_buffer(L, data, c->bytes, c->bytes, 0);
    return;
  }
  p = lua_newuserdatauv(L, LFWX_BUFFER_OFFSET + fwx_buffer_place_size(0), 1);
  /* Read after the allocation: a finalizer it ran may have closed the service, which
   * drops the block object it held, and that object may be gone. */
  k = sv->block;
  if (k == NULL || fwx_data_block(k->data) != fwx_data_block(data)) {
    k = lfwx_newobject(L, sizeof *k, LFWX_BLOCK, 0);
    fresh = 1;
  }
  if (!fwx_completion_keep_data(c)) { /* a finalizer run by the allocations kept more */
    lua_pop(L, 1 + fresh);
    lfwx_push_buffer(L, data, c->bytes, c->bytes, 0);
    return;
  }
  k->regions++; /* cannot fail from here on */
  if (fresh) {
    k->data = data;
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, svidx, LFWX_UV_BLOCK); /* the old one is left to its buffers */
    sv->block = k;
  } else {
    lua_getiuservalue(L, svidx, LFWX_UV_BLOCK);
  }
  lua_setiuservalue(L, -2, 1);
  *(const void **)p = &lfwx_class_tags[LFWX_BUFFER];
  fwx_buffer_place_over(p + LFWX_BUFFER_OFFSET, (char *)data, c->bytes);
  lua_pushvalue(L, lua_upvalueindex(LFWX_BUFFER));
  lua_setmetatable(L, -2);
}
