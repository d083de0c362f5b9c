/* ring.c: the values of operations whose packets are queued the moment they start
 * (posted tasks), kept on the stack of a Lua thread of the service's (its user value
 * LFWX_UV_RING) that never runs: a FIFO of values that the collector sees.
 *
 * Such a packet enters the port's FIFO at the start call, and the port delivers packets
 * in FIFO order, so these packets come out in the order they went in: their values can
 * sit in a FIFO of their own, and the packet needs no key. That saves the anchor slot's
 * bookkeeping (free list, mask, a table store and a table clear per value) on the
 * hottest path there is, a chain of posted tasks: a post moves its values to the
 * ring's stack with one lua_xmove, a delivery moves them back. Stack slots need no write
 * barrier, and the stack is reached through a C pointer, not a user value: a table did
 * the same job for three times the instructions.
 *
 * Entries are pushed at the top and taken from the bottom (ring_head counts the slots
 * already taken). Taken slots are dropped all at once: when the ring runs empty (a chain
 * keeps reusing the bottom slots), or, between dispatch rounds, once they are at least
 * as many as the live ones; so a delivered value is kept about one turn of the queue at
 * most, and compaction costs O(1) per entry.
 *
 * The ring is bounded (LFWX_RING_SLOTS); beyond it, starts take the anchor table, and
 * their packets their slot keys, which keeps the FIFO order. The collector marks a
 * thread's whole stack at once, at every cycle, where it takes a table a part at a
 * time: a backlog of a hundred thousand tasks belongs in the table. */
#include "lfwx.h"

/* Slots a delivery pushes on the ring's own stack before moving them out. */
#define RING_SCRATCH LFWX_RING_WIDTH

void lfwx_ring_open(lua_State *L, lfwx_service_t *sv, int svidx) {
  sv->ring = lua_newthread(L);
  lua_setiuservalue(L, svidx, LFWX_UV_RING);
  sv->ring_head = sv->ring_top = sv->ring_count = 0;
  sv->ring_room = 0;
}

/* Drop the delivered slots at the bottom. */
static void compact(lfwx_service_t *sv) {
  lua_rotate(sv->ring, 1, -sv->ring_head);
  sv->ring_top -= sv->ring_head;
  lua_settop(sv->ring, sv->ring_top);
  sv->ring_head = 0;
}

int lfwx_ring_reserve(lfwx_service_t *sv, int n) {
  if (sv->ring_top + n > LFWX_RING_SLOTS) {
    int head = sv->ring_head;
    if (head == 0 || head < sv->ring_top - head || sv->ring_top - head + n > LFWX_RING_SLOTS)
      return 0;
    compact(sv);
  }
  /* The ring's stack keeps the room lua_checkstack made: it raises the top of the
   * thread's only frame, which nothing lowers, and the collector shrinks a stack
   * only down to twice what its frames span. So a check is needed only past the
   * highest slot ever checked, not on every post (it was 2% of a chain). */
  if (sv->ring_top + n + RING_SCRATCH > sv->ring_room) {
    if (!lua_checkstack(sv->ring, n + RING_SCRATCH)) return 0;
    sv->ring_room = sv->ring_top + n + RING_SCRATCH;
  }
  return 1;
}

void lfwx_ring_push(lua_State *L, lfwx_service_t *sv, int n) {
  lua_xmove(L, sv->ring, n);
  sv->ring_count++;
  sv->ring_top += n;
}

void lfwx_ring_shift(lua_State *L, lfwx_service_t *sv, int n) {
  lua_State *R = sv->ring;
  int head = sv->ring_head, i;
  if (--sv->ring_count == 0) {
    /* The last entry is the top of the stack: move it as it is (a chain ends here). */
    lua_xmove(R, L, n);
    if (head > 0) lua_settop(R, 0); /* what lies above the top is not marked */
    sv->ring_head = sv->ring_top = 0;
    return;
  }
  for (i = 1; i <= n; i++) lua_pushvalue(R, head + i);
  lua_xmove(R, L, n);
  sv->ring_head = head + n;
}

void lfwx_ring_sweep(lfwx_service_t *sv) {
  int head = sv->ring_head;
  if (head > 0 && head >= sv->ring_top - head) compact(sv);
}
