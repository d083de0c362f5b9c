/* lfwx.h: what the binding's files share. Only luaopen_fwx_core is exported; the rest
 * is hidden by -fvisibility=hidden. */
#ifndef LFWX_H
#define LFWX_H

#include "fwx.h"
#include <lauxlib.h>
#include <lua.h>

/* Classes. Every C function of the binding is registered with the classes'
 * metatables as upvalues 1..LFWX_NCLASSES (to set them on new objects). Every object
 * begins with its class's tag, the address of lfwx_class_tags[class]: a type check is
 * then lua_touserdata, lua_rawlen and a compare, where luaL_checkudata's metatable
 * lookup cost 15% of the instructions per echoed message. A tag is an address in this
 * module, which no other code stores by accident, and the size check keeps the read
 * inside the block (a light userdata has size 0). */
enum {
  LFWX_SERVICE = 1, LFWX_SOCKET, LFWX_BUFFER, LFWX_ADDRESS, LFWX_OVERLAPPED, LFWX_HANDLE,
  LFWX_TIMER, LFWX_BLOCK, LFWX_LINK, LFWX_NCLASSES = LFWX_LINK
};
extern const char *const lfwx_class_names[LFWX_NCLASSES + 1]; /* "fwx.socket", ... */
extern const char lfwx_class_tags[LFWX_NCLASSES + 1];
#define LFWX_TAG const void *tag
/* A buffer userdata: the tag, then the placed fwx_buffer_t at this offset. */
#define LFWX_BUFFER_OFFSET 16

/* Per-operation anchors: slot k of the service's anchor table holds, at 4k-3..4k, the
 * sink, the user data, the object the operation runs on and one extra value (the
 * buffer or string lent to it). The table is the service's user value, so the GC
 * keeps all of it alive exactly while the operation is pending; no registry refs.
 * An operation's key is slot << 4 | (a bit per value that is not nil). */
enum { LFWX_A_WIDTH = 4 };

/* Operations whose packet is queued when they start (posted tasks) keep their values in
 * a FIFO of their own instead (ring.c): a task the sink and the user data, at most
 * LFWX_RING_WIDTH values an entry, LFWX_RING_SLOTS values in all (beyond, the anchor
 * table takes them). Their packets carry the key LFWX_RING_KEY, which no anchor slot
 * has. */
enum { LFWX_RING_WIDTH = 3, LFWX_RING_SLOTS = 1024 * LFWX_RING_WIDTH };
#define LFWX_RING_KEY 0

/* A socket's own receive (Recv with no buffer) keeps its sink and user data in the
 * socket box's user values and the box in a one-value slot of the keep table: an idle
 * connection waits in a receive, and a row of the anchor table is four values. Its key
 * is slot << 4 with no value bits, which no anchored operation has (a sink is never
 * nil). The core socket's mark says the box holds a keep slot, the one of its last
 * receive's key: from the receive until the end of its delivery, and on through the
 * next receive when the handler receives again. */
enum { LFWX_SOCKET_UV_SERVICE = 1, LFWX_SOCKET_UV_SINK = 2, LFWX_SOCKET_UV_UD = 3,
       LFWX_SOCKET_NUV = 3 };
#define LFWX_KEY_IS_KEPT(key) (((key) & ((1 << LFWX_A_WIDTH) - 1)) == 0)
/* An awaited socket operation (sink core.wake_io, user data the coroutine) anchors
 * only the coroutine and the buffer: no sink bit, and the delivery calls wake_io. The
 * socket needs no anchor of its own: the suspended call holds it (and the coroutine is
 * anchored). lfwx_anchor_awaited says whether a start is one. */
#define LFWX_KEY_IS_AWAITED(key) (((key) & 1) == 0 && !LFWX_KEY_IS_KEPT(key))
/* The keep table's slots are in chunks, tables made at full size: one array grown by
 * doubling is up to twice as large as what it holds (29 bytes per connection at 9000
 * connections, 16 in chunks). */
enum { LFWX_KEEP_CHUNK = 1024 };

/* Service user values. */
enum { LFWX_UV_ANCHORS = 1, LFWX_UV_OPTIONS = 2, LFWX_UV_RING = 3, LFWX_UV_KEEP = 4,
       LFWX_UV_BLOCK = 5, LFWX_SERVICE_NUV = 5 };

/* Slot numbers of a table used as an array of slots, reused most recent first. */
typedef struct lfwx_slots {
  int *free;               /* slots to reuse */
  int nfree, cap;
  int next;                /* slots ever handed out */
  int live;
} lfwx_slots_t;

/* Keep slots whose socket's handler ended without receiving again, to be let go at
 * the end of the round (dispatch.c); as many as a round delivers packets. */
#define LFWX_LET_GO_MAX 256

typedef struct lfwx_service {
  LFWX_TAG;
  fwx_port_t *port;
  lfwx_slots_t anchors;    /* rows of the anchor table */
  lfwx_slots_t kept;       /* slots of the keep table */
  uint64_t delivered;      /* dispatch.c: notifications delivered (fw:stats) */
  uint64_t lua_ns;         /* dispatch.c: time spent delivering them, in ns */
  int let_go_n;            /* dispatch.c: entries of let_go */
  fwx_socket_t *let_go[LFWX_LET_GO_MAX];
  lua_State *ring;         /* ring.c: the stack its values sit on */
  int ring_head;           /* slots at the bottom already delivered */
  int ring_top;            /* slots in use, delivered or not */
  int ring_count;          /* entries not yet delivered */
  int ring_room;           /* slots of the ring's stack known to be there (ring.c) */
  /* received.c: the block object of the arena block receives are now kept in, which
   * user value LFWX_UV_BLOCK holds */
  struct lfwx_block *block;
  /* received.c: receives to copy before asking the collector for kept blocks again,
   * and how many the last futile ask made it */
  unsigned reclaim_wait, reclaim_backoff;
  fwx_workers_t *own_workers; /* workers.c: the group of one of a service outside serve */
  int running, stop, closing, closed;
  int in_worker_script; /* fwx.serve runs the worker's script: run() would never let
                           the next worker start, so it raises instead */
} lfwx_service_t;

/* A socket box is a tag and the core socket: every connection has one, so its service
 * is found through the port's owner pointer, not a pointer of its own. */
typedef struct lfwx_socket { LFWX_TAG; fwx_socket_t *s; } lfwx_socket_t;
typedef struct lfwx_overlapped { LFWX_TAG; fwx_op_t *op; fwx_port_t *port; } lfwx_overlapped_t;
typedef struct lfwx_handle { LFWX_TAG; fwx_handle_t *h; } lfwx_handle_t;
typedef struct lfwx_timer { LFWX_TAG; fwx_timer_t *t; } lfwx_timer_t;

/* fwx.c: class set-up. meta goes into the metatable, methods (if any) into its
 * __index table with snake_case aliases, except the names in skip. */
void lfwx_newclass(lua_State *L, int cls, const luaL_Reg *methods, const luaL_Reg *meta,
                   const char *const *skip);
void lfwx_setfuncs(lua_State *L, const luaL_Reg *funcs); /* into the table on top */
void *lfwx_newobject(lua_State *L, size_t size, int cls, int nuv);
void *lfwx_typeerror(lua_State *L, int idx, int cls); /* raises */
/* A count at idx: nil or absent is 0, else an integer of 0 or more ("<what> must be 0
 * or more"): an idle limit in ms, a send limit in bytes. */
lua_Integer lfwx_check_count(lua_State *L, int idx, const char *what);

/* Inline: every method checks its self, three times per echoed message, and the call
 * around the two API calls was a third of the check's cost. */
static inline void *lfwx_testudata(lua_State *L, int idx, int cls) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || lua_rawlen(L, idx) < sizeof(void *)) return NULL;
  return *(const void **)p == &lfwx_class_tags[cls] ? p : NULL;
}

static inline void *lfwx_checkudata(lua_State *L, int idx, int cls) {
  void *p = lfwx_testudata(L, idx, cls);
  return p != NULL ? p : lfwx_typeerror(L, idx, cls);
}

/* service.c */
lfwx_service_t *lfwx_check_service(lua_State *L, int idx);
int lfwx_poll_count(lua_State *L); /* core._polls */
/* Push the service box of an object (its user value 1); return it, open. */
lfwx_service_t *lfwx_push_service_of(lua_State *L, int obj_idx);
int lfwx_open_service(lua_State *L);
int lfwx_service_new(lua_State *L);
int lfwx_raise(lua_State *L, int err, const char *what);
int lfwx_fail(lua_State *L, int err);     /* nil, message, win32 code */


/* dispatch.c */
extern const char *const lfwx_op_names[FWX_OP_LAST + 1]; /* "Accept", "Recv", "timer" */
/* tidx: the service's anchor table on the stack (lfwx_push_anchors). */
int lfwx_anchor_io(lua_State *L, lfwx_service_t *sv, int tidx, int obj_idx, int sink_idx,
                   int ud_idx, int extra_idx);
int lfwx_anchor(lua_State *L, lfwx_service_t *sv, int tidx, int obj_idx, int sink_idx,
                int ud_idx, int extra_idx);
void lfwx_unanchor(lua_State *L, lfwx_service_t *sv, int tidx, int key);
int lfwx_push_anchors(lua_State *L, int svidx); /* returns its index */
int lfwx_slot_take(lua_State *L, lfwx_slots_t *slots);
int lfwx_keep_chunk(lua_State *L, int keep_idx, int slot);
void lfwx_unkeep(lua_State *L, lfwx_service_t *sv, int svidx, fwx_socket_t *s);
void lfwx_slot_give(lfwx_slots_t *slots, int slot);
void lfwx_check_sink(lua_State *L, int idx, const char *method, int optional);
int lfwx_dispatch(lua_State *L, lfwx_service_t *sv, int svidx, int drain, int64_t timeout);
/* The dispatcher's own C closure, in the service metatable at this integer key. */
enum { LFWX_SERVICE_META_ROUND = 1 };
void lfwx_open_dispatch(lua_State *L);
void lfwx_set_debug_gc(int on);
int lfwx_traceback(lua_State *L); /* a message handler: the error with a traceback */
/* A handler raised, its message on top (popped): to the service's on_error, or to
 * stderr. svidx the service box, objidx the object to name (0: none). */
void lfwx_report(lua_State *L, int svidx, int objidx, fwx_op_kind_t kind);

/* ring.c. A start reserves room for its n values (0: none, take the anchor path), then
 * starts the operation, then pushes the n values on top of L's stack (cannot fail).
 * Nothing in between may run Lua: an allocation may run finalizers, which may post. */
void lfwx_ring_open(lua_State *L, lfwx_service_t *sv, int svidx);
int lfwx_ring_reserve(lfwx_service_t *sv, int n);
void lfwx_ring_push(lua_State *L, lfwx_service_t *sv, int n);
/* The dispatcher: push the head entry's n values on L and drop it. */
void lfwx_ring_shift(lua_State *L, lfwx_service_t *sv, int n);
/* The dispatcher, between rounds: drop delivered slots when that is cheap. */
void lfwx_ring_sweep(lfwx_service_t *sv);

/* socket.c */
int lfwx_open_socket(lua_State *L);
void lfwx_push_socket(lua_State *L, fwx_socket_t *s, int svidx);
int lfwx_recv_own(lua_State *L, int boxidx, lfwx_socket_t *box);
/* s:Recv(buffer_or_nil, sink, ud) and s:Send(data, sink, ud), the methods themselves:
 * arguments at 1..4 of the calling function's frame (resume.c starts the await
 * style's s:recv() and s:send() through them). */
int lfwx_socket_recv(lua_State *L);
int lfwx_socket_send(lua_State *L);

/* buffer.c */
int lfwx_open_buffer(lua_State *L);
fwx_buffer_t *lfwx_check_buffer(lua_State *L, int idx);
fwx_buffer_t *lfwx_test_buffer(lua_State *L, int idx);
fwx_buffer_t *lfwx_push_buffer(lua_State *L, const char *data, size_t len, size_t cap,
                               int is_const);
int lfwx_create_buffer(lua_State *L);
int lfwx_create_const_buffer(lua_State *L);
int lfwx_create_window_buffer(lua_State *L);

/* received.c */
void lfwx_open_received(lua_State *L);
int lfwx_arena_stats(lua_State *L);
void lfwx_push_received(lua_State *L, lfwx_service_t *sv, int svidx, fwx_completion_t *c);

/* address.c */
int lfwx_open_address(lua_State *L);
void lfwx_push_address(lua_State *L, const struct sockaddr *sa);
int lfwx_check_sockaddr(lua_State *L, int host_idx, int port_idx,
                        struct sockaddr_storage *out);

/* overlapped.c, handle.c, timer.c */
int lfwx_open_link(lua_State *L);
int lfwx_link_pair(lua_State *L); /* core.link_pair */
int lfwx_open_overlapped(lua_State *L);
int lfwx_create_overlapped(lua_State *L);
int lfwx_open_handle(lua_State *L);
int lfwx_hook(lua_State *L);
int lfwx_open_timer(lua_State *L);
int lfwx_set_timer(lua_State *L);
int lfwx_set_signal(lua_State *L);
void lfwx_open_resume(lua_State *L);
int lfwx_wake_io(lua_State *L); /* core.wake_io, the awaited calls' sink */

/* pump.c */
int lfwx_pump(lua_State *L);
int lfwx_pump_use_splice(lua_State *L);

/* relay.c: the filtered pump, fw:Pump with a filter (pump.c hands it over) */
int lfwx_relay_start(lua_State *L);

/* serialize.c: values that cross Lua states (the store, messages between workers).
 * lfwx_encode pushes a string encoding the value at idx (nil, booleans, integers,
 * floats, strings, and tables of these, nested, without cycles); anything else raises
 * an error that names it. lfwx_decode pushes the value data[0..len) encodes, or raises
 * on a malformed encoding. */
int lfwx_encode(lua_State *L, int idx);
int lfwx_decode(lua_State *L, const char *data, size_t len);

/* store.c: core.store, the Lua face of the shared store */
int lfwx_open_store(lua_State *L);

/* workers.c: fwx.serve and messages between workers */
void lfwx_open_workers(lua_State *L); /* into the module table on top */
int lfwx_post_to_worker(lua_State *L);
int lfwx_set_task_handler(lua_State *L);
int lfwx_push_message(lua_State *L, const char *data, size_t len);

/* alloc.c: the cache of small freed blocks in front of the state's allocator */
void lfwx_open_alloc(lua_State *L);

/* errors.c */
int lfwx_open_errors(lua_State *L);

#endif
