/* arena.c: where libuv reads received bytes into. A receive that the service supplies
 * the buffer for (Recv(nil), UDP) is read straight into the port's current block and
 * its packet points there; the dispatcher copies the bytes once, into the buffer it
 * hands out, and releases the region. Blocks are reused as soon as nothing points into
 * them, so a busy port reads without a malloc or an extra copy per message. */
#include "fwx-int.h"

/* A block is aligned to its size, so the block of any byte in it is that byte's
 * address rounded down: a packet carries only its data pointer. */
#define FWX__ARENA_BLOCK ((size_t)4 * FWX__READ_CHUNK)

struct fwx__arena {
  fwx_port_t *port;
  size_t used;             /* bytes committed to packets */
  size_t live;             /* packets that still point into the block */
  char mem[];
};

#define FWX__ARENA_SIZE (FWX__ARENA_BLOCK - offsetof(fwx__arena_t, mem))

static fwx__arena_t *arena_of(const char *p) {
  return (fwx__arena_t *)((uintptr_t)p & ~(uintptr_t)(FWX__ARENA_BLOCK - 1));
}

static void retire(fwx_port_t *port, fwx__arena_t *a) {
  if (a->live > 0) return; /* the last release frees it */
  if (port->spare == NULL) {
    port->spare = a;
  } else {
    free(a);
  }
}

/* The free tail of the current block, at least FWX__READ_CHUNK long; NULL when out of
 * memory (libuv then reports UV_ENOBUFS to the read). */
char *fwx__arena_tail(fwx_port_t *port, size_t *room) {
  fwx__arena_t *a = port->arena;
  if (a == NULL || FWX__ARENA_SIZE - a->used < FWX__READ_CHUNK) {
    fwx__arena_t *next = port->spare;
    if (next != NULL) {
      port->spare = NULL;
    } else {
      next = aligned_alloc(FWX__ARENA_BLOCK, FWX__ARENA_BLOCK);
      if (next == NULL) {
        *room = 0;
        return NULL;
      }
    }
    next->port = port;
    next->used = 0;
    next->live = 0;
    port->arena = next;
    if (a != NULL) retire(port, a);
    a = next;
  }
  *room = FWX__READ_CHUNK;
  return a->mem + a->used;
}

/* The n bytes just read at the tail now belong to op's packet. */
void fwx__arena_commit(fwx_port_t *port, const char *p, size_t n, fwx_op_t *op) {
  fwx__arena_t *a = port->arena;
  assert(a != NULL && p == a->mem + a->used && n <= FWX__READ_CHUNK);
  a->used += n;
  a->live++;
  op->out.data = (char *)p;
}

void fwx__arena_release(const char *data) {
  fwx__arena_t *a = arena_of(data);
  fwx_port_t *port = a->port;
  assert(a->live > 0);
  if (--a->live > 0) return;
  if (a == port->arena)
    a->used = 0; /* rewind the current block */
  else
    retire(port, a);
}

void fwx__arena_free_all(fwx_port_t *port) {
  if (port->arena != NULL && port->arena->live == 0) free(port->arena);
  free(port->spare);
  port->arena = NULL;
  port->spare = NULL;
}
