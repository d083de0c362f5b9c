/* fwx.h: the public C API of the fwx core.
 *
 * The core is the Firewall-service completion model on libuv: a port owns a libuv
 * loop and a FIFO of completion packets; every asynchronous operation is described by
 * an overlapped record (fwx_op_t) that ends in exactly one packet. libuv callbacks
 * only fill in and queue packets; the caller dequeues them with fwx_port_get(), the
 * GetQueuedCompletionStatus of this model, and decides what to call.
 *
 * Conventions (libuv's): functions return 0 or a negative error; UV_E* codes for what
 * the environment decided, FWX_E* for misuse. Nothing here exits the process.
 * This header never includes lua.h: the Lua binding lives in csrc/lua/.
 */
#ifndef FWX_H
#define FWX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define FWX_VERSION "0.1.0"

/* Misuse errors: a start call that returns one of these started nothing and will
 * deliver no packet. They sit below libuv's range. */
#define FWX_ECLOSED   (-10001) /* the object or the port is closed */
#define FWX_EBUSY     (-10002) /* the overlapped record is already pending */
#define FWX_EINVAL    (-10003) /* an argument is out of range */
#define FWX_ELOCKED   (-10004) /* the buffer is lent to a pending operation */
#define FWX_ESTATE    (-10005) /* wrong state: not listening, wrong protocol */
#define FWX_EPUMPING  (-10006) /* the socket is being pumped (fwx_pump_start) */

typedef struct fwx_port fwx_port_t;
typedef struct fwx_op fwx_op_t;
typedef struct fwx_buffer fwx_buffer_t;
typedef struct fwx_socket fwx_socket_t;
typedef struct fwx_handle fwx_handle_t;
typedef struct fwx_timer fwx_timer_t;

/* What a packet completes. */
typedef enum {
  FWX_OP_NONE = 0,
  FWX_OP_ACCEPT,
  FWX_OP_CONNECT,
  FWX_OP_RECV,
  FWX_OP_SEND,
  FWX_OP_READ,    /* hooked handle */
  FWX_OP_WRITE,   /* hooked handle */
  FWX_OP_TASK,
  FWX_OP_TIMER,
  FWX_OP_LOOKUP,
  FWX_OP_PUMP,    /* fwx_pump_start: both directions ended, or one failed */
  FWX_OP_MESSAGE  /* fwx_workers_post: a message from another worker */
} fwx_op_kind_t;
/* The last kind: tables by kind have FWX_OP_LAST + 1 entries. */
#define FWX_OP_LAST FWX_OP_MESSAGE

/* One dequeued completion packet. References it carries (buffer, accepted, result)
 * now belong to the caller. */
typedef struct fwx_completion {
  fwx_op_kind_t kind;
  int ok;                 /* 1 success, 0 failure */
  int error;              /* Win32 code, 0 on success */
  int status;             /* the libuv status behind it (0 or UV_E*) */
  size_t bytes;           /* bytes transferred (pump: from a to b) */
  size_t bytes_back;      /* pump: bytes from b to a */
  uintptr_t key;          /* the caller's key given at the start */
  void *object;           /* socket, handle or timer the operation ran on, or NULL */
  fwx_op_t *op;           /* the overlapped record (now idle, reusable) */
  fwx_buffer_t *buffer;   /* recv: a new service buffer (caller owns one reference) */
  const char *data;       /* recv: or the received bytes, valid until
                             fwx_completion_release(); message: its bytes (.bytes
                             long) and .key the worker that posted it, 0 for a
                             fwx_workers_stop request */
  fwx_socket_t *accepted; /* accept: the new socket (caller owns one reference) */
  struct addrinfo *result;/* lookup: free with fwx_lookup_free() */
  int last;               /* 0 while a repeating timer keeps firing, else 1 */
  int has_address;
  struct sockaddr_storage address; /* udp recv: the sender */
} fwx_completion_t;

/* ---- errors (error.c) ---- */
int fwx_win32_error(int uv_status);        /* libuv status -> Win32 code */
const char *fwx_win32_name(int code);      /* "ERROR_NETNAME_DELETED" or NULL */
const char *fwx_win32_message(int code);
typedef struct { const char *name; int code; const char *message; } fwx_error_info_t;
const fwx_error_info_t *fwx_error_table(size_t *count);
const char *fwx_strerror(int fwx_or_uv_error); /* for misuse codes and libuv codes */

/* ---- port (port.c) ---- */
int fwx_port_new(fwx_port_t **out);
void fwx_port_ref(fwx_port_t *port);
void fwx_port_unref(fwx_port_t *port);
uv_loop_t *fwx_port_loop(fwx_port_t *port);
/* The loop's time in ms (uv_now): what the port's timers count from, updated once a
 * turn of the loop, so reading it costs no system call. */
uint64_t fwx_port_now(const fwx_port_t *port);
/* One pointer for the port's owner (a binding keeps its service object there), so
 * that what hangs off the port can find it without a pointer of its own each. */
void fwx_port_set_owner(fwx_port_t *port, void *owner);
void *fwx_port_owner(const fwx_port_t *port);
/* Run the loop once: block (1) until something completes, or just poll (0).
 * Returns the number of packets queued afterwards. */
size_t fwx_port_poll(fwx_port_t *port, int block);
/* Whether nothing can happen any more without the owner: operations are pending, but
 * none is queued and nothing libuv watches (a socket, a timer, a deadline) can end
 * one; only the owner's own calls can (a link's receive waits for a send). */
int fwx_port_stuck(const fwx_port_t *port);
/* Dequeue one packet; returns 1, or 0 when the queue is empty. Never blocks. */
int fwx_port_get(fwx_port_t *port, fwx_completion_t *out);
/* Drop the references a completion carries, for a caller that will not use them. */
void fwx_completion_release(fwx_completion_t *c);
/* Keep a service receive's bytes where they were read, past the packet: returns 1
 * and takes c->data out of the packet, or 0 when the port already holds as many of
 * them as it may, or there are none (copy them instead). Kept bytes may be written to;
 * they move nowhere. They lie in a block of the port's arena, fwx_data_block(data);
 * fwx_data_release(data, n) gives back n kept regions of data's block at once (any
 * address in the block will do), so a holder may count them per block. */
int fwx_completion_keep_data(fwx_completion_t *c);
int fwx_data_may_keep(const char *data); /* whether keeping them would succeed now */
const void *fwx_data_block(const char *data);
void fwx_data_release(const char *data, size_t regions);
/* Arena blocks now holding kept bytes, emptied blocks kept for reuse, and socket reads
 * the read budget deferred to before a later poll since the port was made. */
void fwx_port_arena_stats(const fwx_port_t *port, size_t *kept_blocks, size_t *spares,
                          size_t *deferred_reads);
/* Times the port has polled for I/O (run its loop once) since it was made. */
size_t fwx_port_polls(const fwx_port_t *port);
/* GetQueuedCompletionStatus for C programs: wait up to timeout_ms (-1: forever)
 * for a packet. Returns 1 with a packet, 0 on timeout or when nothing is pending. */
int fwx_port_wait(fwx_port_t *port, fwx_completion_t *out, int timeout_ms);
/* Make fwx_port_poll() return within ms (< 0: no deadline); fwx_port_deadline_hit()
 * then says the time is up. For a dispatcher that runs with a timeout. */
void fwx_port_deadline(fwx_port_t *port, int64_t ms);
int fwx_port_deadline_hit(const fwx_port_t *port);
size_t fwx_port_queued(const fwx_port_t *port);
size_t fwx_port_pending(const fwx_port_t *port);  /* started, not yet dequeued */
size_t fwx_port_pending_kind(const fwx_port_t *port, fwx_op_kind_t kind);
int fwx_port_closing(const fwx_port_t *port);
/* PostQueuedCompletionStatus: one packet per post, never coalesced. */
int fwx_port_post(fwx_port_t *port, uintptr_t key);
/* Begin shutdown: every pending operation is ended with ERROR_OPERATION_ABORTED;
 * later starts fail with FWX_ECLOSED. Call fwx_port_poll/get until pending is 0,
 * then fwx_port_finish() closes the loop. */
void fwx_port_shutdown(fwx_port_t *port);
int fwx_port_finish(fwx_port_t *port);
/* Shutdown, dropping every packet instead of delivering it, then finish: for an owner
 * that can no longer be told (a collected service). */
void fwx_port_abandon(fwx_port_t *port);

/* ---- overlapped records (overlapped.c) ---- */
fwx_op_t *fwx_overlapped_new(fwx_port_t *port);
void fwx_overlapped_free(fwx_op_t *op);   /* only when not pending */
int fwx_op_pending(const fwx_op_t *op);   /* started and not yet dequeued */
int fwx_op_cancel(fwx_op_t *op);          /* 0, or UV_ENOENT if nothing to cancel */

/* ---- buffers (buffer.c) ---- */
/* A buffer is either the core's (fwx_buffer_new/const/window: reference-counted, freed
 * with the last reference) or placed in memory its owner provides and frees
 * (fwx_buffer_place/place_window: the Lua binding puts buffers in userdata, so that the
 * collector sees their bytes). References to a placed buffer count but never free it:
 * its owner must keep the memory alive while any operation holds it. */
size_t fwx_buffer_place_size(size_t capacity);
fwx_buffer_t *fwx_buffer_place(void *mem, size_t capacity, const char *init, size_t len,
                               int is_const);
fwx_buffer_t *fwx_buffer_place_over(void *mem, char *data, size_t len);
fwx_buffer_t *fwx_buffer_place_window(void *mem, fwx_buffer_t *base, size_t offset,
                                      size_t len);
fwx_buffer_t *fwx_buffer_new(size_t capacity);
fwx_buffer_t *fwx_buffer_const(const char *data, size_t len);     /* copies once */
fwx_buffer_t *fwx_buffer_window(fwx_buffer_t *base, size_t offset, size_t len);
void fwx_buffer_ref(fwx_buffer_t *b);
void fwx_buffer_unref(fwx_buffer_t *b);
char *fwx_buffer_data(fwx_buffer_t *b);
size_t fwx_buffer_size(const fwx_buffer_t *b);
size_t fwx_buffer_capacity(const fwx_buffer_t *b);
int fwx_buffer_writable(const fwx_buffer_t *b);  /* 0, FWX_ELOCKED or FWX_ESTATE (const) */
int fwx_buffer_set_size(fwx_buffer_t *b, size_t n);
size_t fwx_buffer_append(fwx_buffer_t *b, const char *p, size_t n);
void fwx_buffer_lend(fwx_buffer_t *b);    /* a pending operation holds it read-only */
void fwx_buffer_unlend(fwx_buffer_t *b);
int fwx_buffer_lent(const fwx_buffer_t *b);

/* ---- sockets (socket.c, stream.c, udp.c) ---- */
typedef enum { FWX_TCP = 1, FWX_UDP = 2 } fwx_proto_t;
typedef enum {
  FWX_OPT_NODELAY = 1, FWX_OPT_KEEPALIVE, FWX_OPT_REUSEADDR,
  FWX_OPT_RCVBUF, FWX_OPT_SNDBUF, FWX_OPT_BROADCAST, FWX_OPT_TTL,
  FWX_OPT_REUSEPORT  /* SO_REUSEPORT: set before Bind, so that each worker listens on
                        the same port and the kernel spreads connections over them */
} fwx_sockopt_t;

int fwx_socket_new(fwx_port_t *port, fwx_proto_t proto, fwx_socket_t **out);
void fwx_socket_ref(fwx_socket_t *s);
void fwx_socket_unref(fwx_socket_t *s);
fwx_proto_t fwx_socket_proto(const fwx_socket_t *s);
fwx_port_t *fwx_socket_port(const fwx_socket_t *s);
int fwx_socket_receiving(const fwx_socket_t *s); /* a Recv is pending or queued */
int fwx_socket_closed(const fwx_socket_t *s);
/* The key the socket's last receive was started with (it stays after the receive). */
uintptr_t fwx_socket_recv_key(const fwx_socket_t *s);
/* One bit the socket's owner may use as it likes; the core never reads it. */
int fwx_socket_mark(const fwx_socket_t *s);
void fwx_socket_set_mark(fwx_socket_t *s, int on);
/* A second such bit: the binding sets it while a pump of its own (a filtered pump)
 * owns the socket's receives. The core never reads it either. */
int fwx_socket_owned(const fwx_socket_t *s);
void fwx_socket_set_owned(fwx_socket_t *s, int on);
int fwx_socket_bind(fwx_socket_t *s, const struct sockaddr *addr);
int fwx_socket_listen(fwx_socket_t *s, int backlog);
int fwx_socket_accept(fwx_socket_t *s, uintptr_t key);
int fwx_socket_connect(fwx_socket_t *s, const struct sockaddr *addr, uintptr_t key);
/* buf NULL: the service supplies the buffer. */
int fwx_socket_recv(fwx_socket_t *s, fwx_buffer_t *buf, uintptr_t key);
/* Send buf (if not NULL) or a copy of data/len. notify 0: no packet is delivered. */
int fwx_socket_send(fwx_socket_t *s, fwx_buffer_t *buf, const char *data, size_t len,
                    const struct sockaddr *to, int notify, uintptr_t key);
int fwx_socket_shutdown(fwx_socket_t *s);
int fwx_socket_close(fwx_socket_t *s, int abortive);
/* End the pending receive and the pending accept with ERROR_OPERATION_ABORTED, leaving
 * the socket open; returns how many it ended (0: nothing pending, or already queued).
 * Connects and sends cannot be taken back alone: close the socket. */
int fwx_socket_cancel_io(fwx_socket_t *s);
/* Deadlines (deadline.c): a time limit on the socket's receive or on one send, as the
 * await style's timeouts have it. fwx_socket_deadline_prepare(s, kind) before starting
 * the operation (kind FWX_OP_RECV or FWX_OP_SEND): 0, UV_ENOMEM, FWX_ECLOSED, or
 * FWX_EBUSY when a send with a deadline is still pending (one send at a time can have
 * one; time the other some other way). Then, once the operation has started,
 * fwx_socket_deadline(s, kind, ms) gives the receive, or the send started last, a
 * deadline ms from now: 1 if it was set, 0 if that operation is no longer pending
 * (it completed at once: nothing to limit). When the deadline passes first, a receive
 * is cancelled (the socket stays usable, as with fwx_socket_cancel_io) and a send
 * closes the socket abortively (it cannot be taken back halfway); either way that
 * operation ends with UV_ETIMEDOUT (ERROR_SEM_TIMEOUT, 121), and others the close
 * ends say 995. An operation that completes first keeps its own result. */
int fwx_socket_deadline_prepare(fwx_socket_t *s, fwx_op_kind_t kind);
int fwx_socket_deadline(fwx_socket_t *s, fwx_op_kind_t kind, uint64_t ms);
int fwx_socket_name(fwx_socket_t *s, int peer, struct sockaddr_storage *out);
int fwx_socket_setopt(fwx_socket_t *s, fwx_sockopt_t opt, int value);
int fwx_socket_getopt(fwx_socket_t *s, fwx_sockopt_t opt, int *value);
int fwx_socket_fd(fwx_socket_t *s);
/* Counts of what a socket moved: the bytes its sends (Send, SendTo) took and a pump
 * wrote to it, the bytes its receives delivered and a pump read from it, and how many
 * receives and sends it started (a pump starts none). Counting is off until
 * fwx_socket_count_start: the counts live in the socket's Accept/Connect record, which
 * an accepted connection does not otherwise carry (idle memory is per connection).
 * fwx_socket_count_start: 0 or UV_ENOMEM; again: nothing. fwx_socket_counts: 1 and the
 * counts, or 0 and zeros if counting was never started; it may be read after the
 * close, while the socket is referenced. */
typedef struct fwx_socket_counts { uint64_t sent, received, operations; } fwx_socket_counts_t;
int fwx_socket_count_start(fwx_socket_t *s);
int fwx_socket_counts(const fwx_socket_t *s, fwx_socket_counts_t *out);
/* A bound on what a TCP socket holds for a sender that does not wait for its sends'
 * completions: a Send that finds bytes or more still queued (taken, not yet written
 * to the kernel) moves nothing and fails with UV_ENOBUFS, as its notification. 0: no
 * bound (the default). 0 or UV_ENOMEM. */
int fwx_socket_set_send_limit(fwx_socket_t *s, size_t bytes);

/* ---- links (link.c): the sockets between two data filters of a chain ---- */
typedef struct fwx_link fwx_link_t;
/* Two connected ends; each has one owner, who frees it. */
int fwx_link_pair(fwx_port_t *port, fwx_link_t **a, fwx_link_t **b);
void fwx_link_free(fwx_link_t *l); /* closes it gracefully first */
fwx_port_t *fwx_link_port(const fwx_link_t *l);
int fwx_link_closed(const fwx_link_t *l);
int fwx_link_receiving(const fwx_link_t *l); /* a Recv is pending or queued */
/* buf NULL: the packet brings the bytes in a buffer of their own. Packets of kind
 * FWX_OP_RECV and FWX_OP_SEND, as a socket's, with no object: the caller keeps the end
 * alive while an operation is pending. */
int fwx_link_recv(fwx_link_t *l, fwx_buffer_t *buf, uintptr_t key);
/* The bytes are copied at the call. notify 0: no packet is delivered. */
int fwx_link_send(fwx_link_t *l, const char *data, size_t len, int notify, uintptr_t key);
int fwx_link_shutdown(fwx_link_t *l);
int fwx_link_close(fwx_link_t *l, int abortive);
int fwx_link_cancel_io(fwx_link_t *l); /* 1 if it ended a pending Recv (995) */
/* As fwx_socket_set_send_limit, for the bytes this end has queued that the other end
 * has not taken. */
void fwx_link_set_send_limit(fwx_link_t *l, size_t bytes);

/* ---- hooked handles (handle.c) ---- */
int fwx_handle_hook(fwx_port_t *port, int fd, fwx_handle_t **out); /* dups fd */
void fwx_handle_unref(fwx_handle_t *h);
int fwx_handle_is_file(const fwx_handle_t *h);
/* offset < 0: the handle's own position (files), which completions advance. */
int fwx_handle_read(fwx_handle_t *h, fwx_op_t *op, fwx_buffer_t *buf, int64_t offset,
                    uintptr_t key);
int fwx_handle_write(fwx_handle_t *h, fwx_op_t *op, fwx_buffer_t *buf, int64_t offset,
                     uintptr_t key);
int fwx_handle_close(fwx_handle_t *h);
int fwx_handle_closed(const fwx_handle_t *h);

/* ---- timers (timer.c) and look-ups (lookup.c) ---- */
/* A timer of 0 ms that does not repeat is due at once: its packet is queued behind what
 * is queued now, and it stays pending (cancellable, 995) until it is dequeued. A
 * repeating timer queues a packet (last 0) per period; fwx_port_get drops those still
 * queued once the timer is cancelled or shut down, so its last packet (995) is the
 * only one after that. */
int fwx_timer_start(fwx_port_t *port, uint64_t ms, uint64_t repeat_ms, uintptr_t key,
                    fwx_timer_t **out);
/* A 0 ms one-shot timer in memory its owner provides (fwx_timer_place_size() bytes,
 * aligned for a pointer), for an owner that allocates objects of its own anyway: no
 * allocation and no reference to drop. The owner keeps the memory until the timer's
 * packet is dequeued (or the port is abandoned); fwx_timer_unref does nothing to it. */
size_t fwx_timer_place_size(void);
int fwx_timer_place(fwx_port_t *port, void *mem, uintptr_t key, fwx_timer_t **out);
/* A signal watcher: a repeating timer that ticks (a packet, last 0) each time signum
 * arrives, instead of each period, until fwx_timer_cancel (then its 995). Ticks still
 * queued when it is cancelled are withdrawn, as a timer's are. UV_EINVAL for a signal
 * that cannot be watched (SIGKILL, SIGSTOP, out of range). */
int fwx_signal_start(fwx_port_t *port, int signum, uintptr_t key, fwx_timer_t **out);
int fwx_timer_cancel(fwx_timer_t *t);     /* 0, or UV_ENOENT if already finished */
int fwx_timer_active(const fwx_timer_t *t);
void fwx_timer_unref(fwx_timer_t *t);
int fwx_lookup(fwx_port_t *port, const char *name, uintptr_t key);
void fwx_lookup_free(struct addrinfo *result);

/* ---- the core pump (pump.c): the SDK's "kernel mode" pumping ---- */
/* Move bytes both ways between two connected TCP sockets of one port, with no caller
 * code on the data path and, on Linux, no copy through user space (splice(2)), until
 * both directions have ended or one fails. An end of stream on one side is passed on
 * as a shutdown of the other's sending side once what came before it is written; the
 * other direction goes on. Bytes the socket already holds unclaimed, and sends queued
 * on it, go first. Then one FWX_OP_PUMP packet: ok, or the error (reset 64, ...); bytes
 * a->b in .bytes and b->a in .bytes_back. Closing either socket or shutting the port
 * down ends it with ERROR_OPERATION_ABORTED. While it runs, receives, sends, shutdowns
 * and other pumps on either socket return FWX_EPUMPING. The sockets stay open after it.
 * Misuse: FWX_ECLOSED, FWX_EINVAL (the same socket twice, or two ports), FWX_ESTATE
 * (not a connected TCP socket), FWX_EBUSY (a receive is pending on one of them). */
int fwx_pump_start(fwx_socket_t *a, fwx_socket_t *b, uintptr_t key);
/* What fwx_pump_start would refuse a and b with (FWX_ECLOSED, FWX_EINVAL, FWX_ESTATE,
 * FWX_EPUMPING, FWX_EBUSY), or 0: for a caller that moves their bytes itself. */
int fwx_pump_check(fwx_socket_t *a, fwx_socket_t *b);
/* An idle limit on the pump moving s (either of its sockets): it ends with UV_ETIMEDOUT
 * (ERROR_SEM_TIMEOUT, 121) once no byte has moved either way for ms, counted from this
 * call; 0 removes the limit. Returns 1, or 0 when no pump runs on s (one that ended at
 * once, as fwx_pump_start's sticky errors do). */
int fwx_pump_idle(fwx_socket_t *s, uint64_t ms);
int fwx_socket_pumping(const fwx_socket_t *s);
/* 0: pumps started from now on read and write through a buffer, as where splice(2) is
 * missing (that path also runs when the kernel refuses to splice a descriptor). For
 * tests; 1 (the default) restores splice. */
void fwx_pump_use_splice(int on);

/* ---- the shared store (store.c): state that workers share (DESIGN.md section 4) ---- */
/* One store per process, shared by every thread: a map from byte-string keys (up to
 * FWX_STORE_KEY_MAX bytes) to entries that are either bytes, opaque to the core, or a
 * 64-bit integer that fwx_store_incr adds to atomically. Its memory is bounded by a
 * capacity (64 MiB unless set), counted as keys, values and an estimate of each
 * entry's overhead (fwx_store_bytes); a write that would grow the store past it fails
 * with UV_ENOMEM, as does one the allocator refuses. Nothing is ever evicted. A NULL
 * key, or one longer than the maximum, is FWX_EINVAL. */
#define FWX_STORE_KEY_MAX 65536

/* What fwx_store_get found: an integer, or len bytes of value. */
typedef struct fwx_store_value {
  int is_integer;
  int64_t integer;
  size_t len;   /* bytes: their number, even when they did not fit (UV_ENOBUFS) */
} fwx_store_value_t;

/* Set replaces whatever the key held; add fails with UV_EEXIST if it holds anything. */
int fwx_store_set(const char *key, size_t klen, const char *bytes, size_t len);
int fwx_store_add(const char *key, size_t klen, const char *bytes, size_t len);
int fwx_store_set_integer(const char *key, size_t klen, int64_t value);
int fwx_store_add_integer(const char *key, size_t klen, int64_t value);
/* Copy the entry out (nothing in the map is seen outside its lock): an integer into
 * out->integer, bytes into buf. UV_ENOENT: no such key. UV_ENOBUFS: the bytes are more
 * than cap; out->len says how many, nothing was copied, and by the next call the
 * entry may have changed, so call again with room for out->len. */
int fwx_store_get(const char *key, size_t klen, char *buf, size_t cap,
                  fwx_store_value_t *out);
/* Add delta to an integer entry, or make one of init + delta where the key is absent;
 * the sum in *out. FWX_ESTATE: the entry holds bytes. FWX_EINVAL: the sum overflows
 * (nothing changes). */
int fwx_store_incr(const char *key, size_t klen, int64_t delta, int64_t init,
                   int64_t *out);
int fwx_store_delete(const char *key, size_t klen); /* 0, or UV_ENOENT */
size_t fwx_store_count(void);          /* entries */
size_t fwx_store_bytes(void);          /* what they count against the capacity */
size_t fwx_store_capacity(void);
/* A capacity below fwx_store_bytes() evicts nothing: writes that would grow the store
 * fail until deletes bring it under. */
int fwx_store_set_capacity(size_t bytes);
void fwx_store_clear(void);            /* delete every entry (for tests) */

/* ---- workers (workers.c): ports in different threads that post to each other ---- */
/* A group of ports, one per worker thread (fwx.serve), numbered from 1. Any thread may
 * post to any worker: the message's bytes are copied, and the worker's port delivers
 * them as one FWX_OP_MESSAGE packet, in its own thread, in posting order per poster. A
 * post that returned 0 is delivered exactly once: an inbox takes messages before its
 * port attaches, and its port's shutdown turns what is left into packets that the
 * drain delivers. After that shutdown, posts to the worker fail with FWX_ECLOSED; past
 * 64 MiB of undelivered messages an inbox refuses posts with UV_ENOBUFS. */
#define FWX_WORKERS_MAX 1024
typedef struct fwx_workers fwx_workers_t;
int fwx_workers_new(int count, fwx_workers_t **out);
/* Once every attached port has finished (fwx_port_finish). */
void fwx_workers_free(fwx_workers_t *w);
int fwx_workers_count(const fwx_workers_t *w);
/* In the port's own thread, once: the port is worker id from now on. */
int fwx_workers_attach(fwx_workers_t *w, int id, fwx_port_t *port);
/* Thread-safe. from: the posting worker (1..count). The message's bytes are head's
 * then data's, copied once into it (a caller with a header of its own, such as the
 * binding's handler name, needs no buffer to join them). */
int fwx_workers_post(fwx_workers_t *w, int to, int from, const void *head, size_t hlen,
                     const void *data, size_t dlen);
/* Thread-safe: post each running worker a stop request (a message from worker 0). */
void fwx_workers_stop(fwx_workers_t *w);
fwx_workers_t *fwx_port_workers(const fwx_port_t *port); /* or NULL */
int fwx_port_worker_id(const fwx_port_t *port);          /* or 0 */

#endif
