/* fwx-int.h: struct layouts and fwx__ internal prototypes shared by the core's files.
 * Not installed; the binding uses only fwx.h. */
#ifndef FWX_INT_H
#define FWX_INT_H

#include "fwx.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define fwx__container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* Bytes libuv reads into at once; also the unclaimed-chunk bound per socket. */
#define FWX__READ_CHUNK 65536

/* Intrusive doubly linked list: the port tracks every open object with one, so that
 * shutdown can find them all without a registry. */
typedef struct fwx__link {
  struct fwx__link *prev, *next;
} fwx__link_t;

static inline void fwx__list_init(fwx__link_t *head) { head->prev = head->next = head; }
static inline int fwx__list_empty(const fwx__link_t *head) { return head->next == head; }
static inline void fwx__list_insert(fwx__link_t *head, fwx__link_t *l) {
  l->next = head->next;
  l->prev = head;
  head->next->prev = l;
  head->next = l;
}
static inline void fwx__list_remove(fwx__link_t *l) {
  if (l->next == NULL) return;
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->next = l->prev = NULL;
}

enum { FWX__IDLE = 0, FWX__PENDING, FWX__QUEUED };

/* The overlapped record: idle -> pending (started) -> queued (completed, in the port's
 * FIFO) -> idle again when dequeued (or freed, for records the core allocated). */
struct fwx_op {
  fwx_op_t *next;          /* the port's FIFO */
  fwx_port_t *port;
  uintptr_t key;           /* the starter's key, returned verbatim */
  void *object;            /* socket / handle / timer holding a reference (which one
                              the kind says), or NULL */
  fwx_buffer_t *buf;       /* buffer this operation holds a reference to */
  union {
    fwx_socket_t *accepted; /* accept */
    struct addrinfo *result; /* look-up */
    char *data;             /* service receive: the bytes, in the port's arena */
    size_t back;            /* pump: bytes b->a (bytes counts a->b) */
  } out;
  size_t bytes;
  int status;              /* libuv status */
  /* Bit fields and a short code keep the record at 64 bytes: every connection embeds
   * one for its receive. */
  unsigned short error;    /* Win32 code the operation decided itself (e.g. 234), or 0 */
  unsigned kind : 5;
  unsigned state : 2;
  unsigned heap : 2;       /* who frees it after dequeue: 0 its owner, 1 an op and
                              2 a send record (recycled), 3 a request record (freed) */
  unsigned notify : 1;     /* 0: complete silently (a Send with no sink) */
  unsigned cancelled : 1;  /* ended by cancel/close: report 995 whatever happens */
  unsigned last : 1;
  unsigned lent : 1;       /* buf was lent read-only (sends) */
  unsigned has_address : 1;
  unsigned watched : 1;    /* a socket's deadline points at it (deadline.c) */
  unsigned timed_out : 1;  /* its deadline passed: its cancel reports UV_ETIMEDOUT */
};
/* The last kind must fit in kind's bits. */
typedef char fwx__op_kind_fits[FWX_OP_LAST < 32 ? 1 : -1];

/* A record with room for any one libuv request; overlapped objects and look-ups. */
typedef struct fwx__reqop {
  fwx_op_t op;
  fwx__link_t link;        /* port->ops while a request is in flight */
  union {
    uv_write_t write;
    uv_udp_send_t udp_send;
    uv_fs_t fs;
    uv_getaddrinfo_t gai;
  } req;
  int64_t offset;          /* file operations: where, for advancing the position */
  int use_position;
} fwx__reqop_t;

/* A send record: smaller, recycled through the port's free list. */
typedef struct fwx__sendop {
  fwx_op_t op;
  union {
    uv_write_t write;
    uv_udp_send_t udp_send;
  } req;
  struct fwx__sendop *free_next;
} fwx__sendop_t;

/* One-shot receives on top of libuv's continuous reading: reading stays armed while
 * receives keep coming; a chunk that arrives with no receive pending is held (one at
 * most) and reading pauses until a receive claims it. */
/* The stream's data points at its reader, and the functions take the stream: every
 * accepted connection carries one, so it holds no more than it must. */
typedef struct fwx__reader {
  fwx_op_t *op;            /* the pending receive, or NULL */
  fwx_buffer_t *chunk;     /* unclaimed bytes (at most FWX__READ_CHUNK) */
  uint32_t chunk_off;
  uint32_t writes;         /* uv_write requests in flight: while any, no try_write, so
                              sends complete in the order they were issued */
  int status;              /* sticky end of stream: UV_EOF or an error; 0 while open */
  unsigned char defer_age; /* arena.c: polls its read has been deferred in a row (a
                              hooked pipe's; a socket's deferred read is queued) */
  unsigned reading : 1;
  /* A network socket's: when a write fails (reset, EPIPE) libuv leaves later queued
   * writes waiting until the handle closes, so the socket is told and decides. */
  unsigned socket : 1;
  unsigned refused : 1;    /* its last read was refused on purpose (budget, put off) */
  unsigned queued : 1;     /* in the port's queue of deferred reads (deferred.c) */
  unsigned put_off : 1;    /* a read found no receive pending and waits for a poll */
} fwx__reader_t;

struct fwx_port {
  uv_loop_t loop;
  fwx_op_t *head, *tail;   /* completion FIFO */
  size_t queued;
  size_t pending;          /* started and not yet dequeued (or silently completed) */
  size_t pending_kind[FWX_OP_LAST + 1]; /* the same, by kind: for metrics and tests */
  int refs;
  void *owner;             /* fwx_port_set_owner */
  unsigned closing : 1;
  unsigned finished : 1;
  unsigned deadline_hit : 1;
  uv_timer_t deadline;     /* bounds one run; unref'd, it keeps nothing alive */
  fwx__link_t handles, timers, ops; /* open objects, for shutdown (sockets: the
                                        loop's handles) */
  fwx__link_t links;       /* link.c: the ends of links between data filters */
  struct fwx__arena *arena; /* the block reads go into (arena.c) */
  struct fwx__arena *spare; /* emptied blocks kept for reuse, and how many */
  size_t spares;
  size_t kept_blocks;       /* blocks holding regions kept past their packet */
  size_t read_budget;       /* arena bytes reads may still take in this poll */
  /* arena.c, fairness of deferred reads: the oldest age among the reads the last poll
   * deferred and how many of them are still to be read; the same for this poll. */
  unsigned oldest_age, next_oldest_age;
  size_t oldest_left, next_oldest_count;
  /* deferred.c: sockets whose read the budget refused, read directly before the next
   * poll (a ring; each entry holds a reference to its socket). */
  struct fwx_socket **deferred;
  size_t deferred_head, deferred_count, deferred_cap;
  size_t deferred_total;   /* reads ever queued there: for tests */
  size_t polls;            /* loop runs (fwx_port_polls) */
  struct fwx_workers *workers; /* workers.c: the group it is a worker of, or NULL */
  int worker_id;
  int worker_detached;
  fwx_op_t *free_ops;      /* recycled task/tick records */
  fwx__sendop_t *free_sends;
  size_t free_count;
};

typedef struct fwx__udp_ext {
  struct sockaddr_storage recv_addr;   /* sender of the datagram being delivered */
  struct sockaddr_storage chunk_addr;  /* sender of the unclaimed datagram */
  fwx_buffer_t *chunk;                 /* one unclaimed datagram */
  size_t sends;                        /* uv_udp_send requests in flight */
  int chunk_status;
  int chunk_partial;
  unsigned char defer_age; /* arena.c: polls its read has been deferred in a row */
  unsigned receiving : 1;
  unsigned refused : 1;    /* its last read was refused by the poll's read budget */
} fwx__udp_ext_t;

/* An accepted connection is one of these (plus its libuv handle inside), so each
 * field is paid per connection: the port is the loop's data, the open sockets are
 * found by walking the loop's handles, and rarely used state is allocated apart. */
struct fwx_socket {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_udp_t udp;
  } uv;
  fwx__reader_t reader;    /* tcp */
  fwx_op_t recv_op;
  /* Allocated when first needed, so that an accepted connection, which never
   * accepts, connects or shuts down, does not carry them: idle memory is per
   * connection. */
  struct fwx__conn *conn;  /* Accept or Connect; options before the descriptor; the
                              pump */
  int refs;
  unsigned proto : 2;          /* fwx_proto_t; a UDP socket's fwx__udp_ext_t follows it */
  unsigned closed : 1;
  unsigned listening : 1;
  unsigned conn_ready : 1; /* libuv holds a connection no Accept has claimed */
  unsigned shut : 1;
  unsigned has_fd : 1;
  unsigned reuseaddr : 1;
  unsigned reuseport : 1;      /* bind makes the descriptor itself, to set SO_REUSEPORT */
  unsigned uv_closing : 1;     /* uv_close called */
  unsigned close_after_shutdown : 1;
  unsigned connected : 1;      /* accepted, or its connect succeeded: it can be pumped */
  unsigned pumping : 1;        /* conn->pump moves its bytes (pump.c) */
  unsigned owner_mark : 1;     /* fwx_socket_set_mark: the owner's own bit */
  unsigned owner_owned : 1;    /* fwx_socket_set_owned: the owner's second bit */
  unsigned counting : 1;       /* conn->counts counts its operations */
};

typedef struct fwx__conn {
  fwx_op_t op;             /* the pending Accept or Connect */
  uv_connect_t req;
  int status;              /* an accept error waiting for the next Accept */
  int rcvbuf, sndbuf;      /* options set before the descriptor exists */
  struct fwx__pump *pump;  /* while the socket's pumping bit is set */
  struct fwx__deadline *deadline; /* made by the first deadline, until the close */
  fwx_socket_counts_t counts;      /* while the socket's counting bit is set */
  size_t send_limit;               /* fwx_socket_set_send_limit; 0: none */
} fwx__conn_t;

static inline fwx_port_t *fwx__socket_port(const fwx_socket_t *s) {
  return s->uv.handle.loop->data;
}

/* Counting (fwx_socket_count_start): a receive's bytes as its packet is taken. */
static inline void fwx__socket_count_received(fwx_socket_t *s, size_t n) {
  if (s->counting) s->conn->counts.received += n;
}

/* Counting: n bytes a pump moved from src to dst. */
static inline void fwx__socket_count_moved(fwx_socket_t *src, fwx_socket_t *dst, size_t n) {
  if (src->counting) src->conn->counts.received += n;
  if (dst->counting) dst->conn->counts.sent += n;
}

/* A UDP socket's datagram state, allocated with it, right after it. */
static inline fwx__udp_ext_t *fwx__socket_udp(const fwx_socket_t *s) {
  return s->proto == FWX_UDP ? (fwx__udp_ext_t *)(void *)((fwx_socket_t *)s + 1) : NULL;
}

/* The pump moving this socket's bytes, or NULL. */
static inline struct fwx__pump *fwx__socket_pump(const fwx_socket_t *s) {
  return s->pumping ? s->conn->pump : NULL;
}

struct fwx_handle {
  fwx__link_t link;
  fwx_port_t *port;
  int refs;
  int fd;
  int is_file;
  int64_t position;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } uv;
  fwx__reader_t reader;
  size_t ops;              /* pending file operations */
  unsigned closed : 1;
};

struct fwx_timer {
  fwx__link_t link;
  fwx_port_t *port;
  int refs;
  fwx_op_t op;             /* the final notification */
  uint64_t repeat;
  unsigned active : 1;
  unsigned due : 1;        /* 0 ms one-shot: op was queued when it was set (timer.c) */
  unsigned placed : 1;     /* in its owner's memory (fwx_timer_place): no references */
  unsigned signal : 1;     /* ticks on a signal, not a period (fwx_signal_start) */
};

/* A timer that is not due at once runs on a libuv timer. */
typedef struct fwx__uv_timer {
  fwx_timer_t t;
  uv_timer_t timer;
} fwx__uv_timer_t;

/* A signal watcher is a repeating timer whose ticks come from a libuv signal. */
typedef struct fwx__uv_signal {
  fwx_timer_t t;
  uv_signal_t sig;
} fwx__uv_signal_t;

/* port.c */
void fwx__op_init(fwx_op_t *op, fwx_port_t *port, fwx_op_kind_t kind);
void fwx__op_start(fwx_op_t *op, uintptr_t key, void *object);
void fwx__op_complete(fwx_op_t *op, int status);
void fwx__op_end_recv(fwx_op_t *op, int status); /* no data: an end, an error, a cancel */
fwx_op_t *fwx__op_alloc(fwx_port_t *port, fwx_op_kind_t kind);
fwx__sendop_t *fwx__sendop_alloc(fwx_port_t *port);
int fwx__sendop_reserve(fwx_port_t *port);

/* arena.c */
typedef struct fwx__arena fwx__arena_t;
char *fwx__arena_tail(fwx_port_t *port, size_t *room, unsigned char *age, int *refused);
void fwx__arena_commit(fwx_port_t *port, const char *p, size_t n, fwx_op_t *op);
void fwx__arena_release(const char *data);
int fwx__arena_keep(const char *data);
void fwx__arena_free_all(fwx_port_t *port);
void fwx__arena_new_poll(fwx_port_t *port);

/* deferred.c */
void fwx__deferred_add(uv_stream_t *stream);
int fwx__deferred_run(fwx_port_t *port);
void fwx__deferred_clear(fwx_port_t *port);

/* buffer.c */
void fwx__buffer_fill(fwx_buffer_t *b, const char *p, size_t n);

/* error.c */
int fwx__completion_error(fwx_op_kind_t kind, int status, int *ok);

/* stream.c */
void fwx__reader_init(fwx__reader_t *r, uv_stream_t *stream, int socket);
int fwx__reader_recv(uv_stream_t *stream, fwx_op_t *op);
void fwx__reader_cancel(uv_stream_t *stream, int status);
int fwx__reader_cancel_op(uv_stream_t *stream, fwx_op_t *op);
int fwx__reader_read_now(uv_stream_t *stream);
int fwx__stream_try_write(uv_stream_t *stream, const char *data, size_t len);
int fwx__stream_write(uv_stream_t *stream, uv_write_t *req, fwx_op_t *op,
                      const char *data, size_t len, int written);

/* socket.c / udp.c */
void fwx__socket_write_failed(uv_stream_t *stream, int status);
fwx__conn_t *fwx__socket_conn(fwx_socket_t *s); /* made on first use; NULL: no memory */
/* CancelIo's part for the receive: 1 if one was pending and is ended (995). */
int fwx__socket_cancel_recv(fwx_socket_t *s);
/* deadline.c: fwx_socket_send tells which send is the last (the socket has had a
 * deadline); fwx__op_complete tells when a watched operation is done; the socket's
 * close closes the timer. */
void fwx__deadline_sent(fwx_socket_t *s, fwx_op_t *op);
void fwx__deadline_done(fwx_op_t *op);
void fwx__deadline_close(fwx_socket_t *s);
int fwx__udp_recv(fwx_socket_t *s, fwx_op_t *op);
void fwx__udp_cancel(fwx_socket_t *s, int status);
void fwx__udp_cancel_recv(fwx_socket_t *s);
int fwx__udp_send(fwx_socket_t *s, fwx__sendop_t *so, const char *data, size_t len,
                  const struct sockaddr *to);

/* pump.c: closing a pumped socket ends its pump (995) first. */
void fwx__pump_cancel(struct fwx__pump *p);

/* handle.c / timer.c / lookup.c, for shutdown */
void fwx__handle_shutdown_all(fwx_port_t *port);
void fwx__link_shutdown_all(fwx_port_t *port);
int fwx__handle_cancel(fwx_handle_t *h, fwx_op_t *op);
void fwx__timer_shutdown_all(fwx_port_t *port);

/* workers.c */
void fwx__workers_detach(fwx_port_t *port);
size_t fwx__workers_waiting(const fwx_port_t *port);
void fwx__message_release(const char *data); /* a delivered message's bytes */
void fwx__timer_dequeued(fwx_timer_t *t); /* its last packet left the FIFO */
void fwx__lookup_shutdown_all(fwx_port_t *port);
void fwx__socket_shutdown_all(fwx_port_t *port);

#endif
