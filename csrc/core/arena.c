/* arena.c: where libuv reads received bytes into. A receive that the service supplies
 * the buffer for (Recv(nil), UDP) is read straight into the port's current block and
 * its packet points there; the dispatcher either copies the bytes into the buffer it
 * hands out and releases the region, or keeps the region for a buffer over it
 * (fwx_completion_keep_data) and gives it back later. Blocks are reused as soon as
 * nothing points into them, so a busy port reads without a malloc per message. */
#include "fwx-int.h"

/* A block is aligned to its size, so the block of any byte in it is that byte's
 * address rounded down: a packet carries only its data pointer. */
#define FWX__ARENA_BLOCK ((size_t)4 * FWX__READ_CHUNK)

/* Emptied blocks kept for reuse. A block this large is its own mmap, so freeing one
 * and allocating the next costs a page fault per 4 KiB read into it: at 500
 * connections x 4 KiB a poll fills 8 blocks, and faulting them in again every poll
 * took a quarter of the server's CPU. Spare blocks stay mapped (at most 4 MiB). */
#define FWX__ARENA_KEEP 16

/* Blocks that received bytes handed out in place (fwx_completion_keep_data) may hold
 * at once. Such bytes live until their holder lets go (in Lua, until the collector
 * finalizes the buffer), and one of them keeps its whole block: past this many
 * blocks, receives are copied out instead, so held memory stays bounded (1 MiB)
 * whatever a program keeps. Few, because reads go on into the blocks until they are
 * given back, and what fits in the cache is read into and sent from faster: a Lua
 * relay of bulk 64 KiB chunks took 7% to 18% less CPU per MB at 4 blocks than at 16
 * (the collector asked for them at the bound, csrc/lua/received.c; bench/, proxy to a
 * sink, medians of two series of 8 interleaved runs, the second in A B B A order).
 * Echo at 500 x 4 KiB measured the same at 4, 8 and 16. */
#ifndef FWX__ARENA_KEPT_BLOCKS
#define FWX__ARENA_KEPT_BLOCKS 4
#endif

/* Bytes one poll may read into the arena. A poll reads every ready socket before any
 * handler runs: without a bound, 10 000 connections with 64 KiB waiting each would
 * take 640 MiB of blocks in one poll. And every byte read waits there for its handler,
 * whose echo or forward copies it out again: at 500 connections x 4 KiB, with 1 MiB
 * read per poll, the kernel's copy of what handlers sent took three times as long as
 * a C server's, whose bytes were still in the cache. Past the budget a socket's read
 * is deferred and queued, and done before the next poll (deferred.c); a pipe's or a
 * UDP socket's is left to the next poll. Measured at 500 x 4 KiB against 1 MiB
 * (bench/, interleaved): 256 KiB took 11% less CPU per message, and 64 or 128 KiB
 * measured the same as 256; bulk echo (64 KiB reads) was no worse at 256 KiB. */
#ifndef FWX__READ_BUDGET
#define FWX__READ_BUDGET (256 * 1024)
#endif

struct fwx__arena {
  fwx_port_t *port;
  size_t used;             /* bytes committed to packets */
  size_t live;             /* packets and kept regions that still point into it */
  size_t kept;             /* regions kept past their packet */
  fwx__arena_t *next_spare;
  char mem[];
};

#define FWX__ARENA_SIZE (FWX__ARENA_BLOCK - offsetof(fwx__arena_t, mem))

static fwx__arena_t *arena_of(const char *p) {
  return (fwx__arena_t *)((uintptr_t)p & ~(uintptr_t)(FWX__ARENA_BLOCK - 1));
}

static void retire(fwx_port_t *port, fwx__arena_t *a) {
  if (a->live > 0) return; /* the last release frees it */
  if (port->spares < FWX__ARENA_KEEP) {
    a->next_spare = port->spare;
    port->spare = a;
    port->spares++;
  } else {
    free(a);
  }
}

/* Whether a read may go on in this poll. A socket's read (age NULL) needs only budget
 * left: one refused is queued and read before the next poll (deferred.c). The others
 * (hooked pipes, UDP) are left to the next poll, and since the level-triggered poll
 * reports ready descriptors in the same order every time, the reads past the budget
 * would be the same ones poll after poll while the first ones keep getting served. So
 * such a read counts the polls it has been deferred in a row (its age), and the oldest
 * reads of the last poll go first: until they have all been read, younger reads wait
 * (and age). A descriptor read once then waits behind every one deferred meanwhile:
 * round robin. */
static int admit(fwx_port_t *port, unsigned char *age) {
  int oldest;
  if (age == NULL) return port->read_budget > 0;
  oldest = *age > 0 && *age == port->oldest_age;
  if (port->read_budget > 0 && (oldest || port->oldest_left == 0)) {
    if (oldest && port->oldest_left > 0) port->oldest_left--; /* a stale age may match */
    *age = 0;
    return 1;
  }
  if (*age < 255) (*age)++;
  if (*age > port->next_oldest_age) {
    port->next_oldest_age = *age;
    port->next_oldest_count = 0;
  }
  if (*age == port->next_oldest_age) port->next_oldest_count++;
  return 0;
}

/* The free tail of the current block, at least FWX__READ_CHUNK long, for a read whose
 * deferral age is *age (NULL: a socket's, see admit); NULL when the read must wait
 * (*refused set) or out of memory (libuv then reports UV_ENOBUFS to the read). */
char *fwx__arena_tail(fwx_port_t *port, size_t *room, unsigned char *age, int *refused) {
  fwx__arena_t *a = port->arena;
  *refused = !admit(port, age);
  if (*refused) {
    *room = 0;
    return NULL;
  }
  if (a == NULL || FWX__ARENA_SIZE - a->used < FWX__READ_CHUNK) {
    fwx__arena_t *next = port->spare;
    if (next != NULL) {
      port->spare = next->next_spare;
      port->spares--;
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
    next->kept = 0;
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
  port->read_budget = n < port->read_budget ? port->read_budget - n : 0;
  op->out.data = (char *)p;
}

void fwx__arena_new_poll(fwx_port_t *port) {
  port->read_budget = FWX__READ_BUDGET;
  port->oldest_age = port->next_oldest_age;
  port->oldest_left = port->next_oldest_count;
  port->next_oldest_age = 0;
  port->next_oldest_count = 0;
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

int fwx_data_may_keep(const char *data) {
  const fwx__arena_t *a = arena_of(data);
  return a->kept > 0 || a->port->kept_blocks < FWX__ARENA_KEPT_BLOCKS;
}

/* Hold the region at data (a packet's bytes) past the packet's release. A block with
 * kept regions holds a reference to its port, so that a region can be let go after the
 * port was closed. */
int fwx__arena_keep(const char *data) {
  fwx__arena_t *a = arena_of(data);
  if (!fwx_data_may_keep(data)) return 0;
  if (a->kept++ == 0) {
    a->port->kept_blocks++;
    fwx_port_ref(a->port);
  }
  return 1;
}

const void *fwx_data_block(const char *data) { return arena_of(data); }

void fwx_data_release(const char *data, size_t regions) {
  fwx__arena_t *a = arena_of(data);
  fwx_port_t *port = a->port;
  int last;
  assert(regions > 0 && a->kept >= regions && a->live >= regions);
  a->kept -= regions;
  last = a->kept == 0;
  if (last) port->kept_blocks--;
  a->live -= regions - 1;
  fwx__arena_release(data); /* the last one: rewinds or retires an emptied block */
  if (last) fwx_port_unref(port);
}

void fwx_port_arena_stats(const fwx_port_t *port, size_t *kept_blocks, size_t *spares,
                          size_t *deferred_reads) {
  *kept_blocks = port->kept_blocks;
  *spares = port->spares;
  *deferred_reads = port->deferred_total;
}

void fwx__arena_free_all(fwx_port_t *port) {
  fwx__arena_t *a;
  if (port->arena != NULL && port->arena->live == 0) free(port->arena);
  while ((a = port->spare) != NULL) {
    port->spare = a->next_spare;
    free(a);
  }
  port->arena = NULL;
  port->spares = 0;
}
