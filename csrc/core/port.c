/* port.c: the completion port. One libuv loop, one FIFO of completed overlapped
 * records, and the count of operations started and not yet dequeued.
 *
 * libuv callbacks end an operation with fwx__op_complete(), which only links the
 * record into the FIFO; nothing is called back from here. The owner of the port
 * dequeues with fwx_port_get() and decides what to run, which is what keeps Lua out of
 * libuv callbacks and makes every notification non-inline. */
#include "fwx-int.h"
#include <signal.h>

#define FWX__FREE_MAX 1024 /* recycled records kept per port */

static void ignore_sigpipe(void) {
  /* A write to a socket the peer reset must fail with EPIPE, not kill the process;
   * respect a handler the embedding program installed. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

int fwx_port_new(fwx_port_t **out) {
  fwx_port_t *port;
  int r = UV_ENOMEM;

  port = calloc(1, sizeof *port);
  if (port == NULL) goto fail;
  r = uv_loop_init(&port->loop);
  if (r != 0) goto fail;
  port->loop.data = port;
  uv_timer_init(&port->loop, &port->deadline);
  uv_unref((uv_handle_t *)&port->deadline);
  port->refs = 1;
  fwx__arena_new_poll(port);
  fwx__list_init(&port->handles);
  fwx__list_init(&port->timers);
  fwx__list_init(&port->ops);
  fwx__list_init(&port->links);
  ignore_sigpipe();
  *out = port;
  return 0;

fail:
  free(port);
  return r;
}

void fwx_port_ref(fwx_port_t *port) { port->refs++; }

void fwx_port_abandon(fwx_port_t *port) {
  fwx_completion_t c;
  if (port->finished) return;
  fwx_port_shutdown(port);
  for (;;) {
    while (fwx_port_get(port, &c)) fwx_completion_release(&c);
    if (port->pending == 0) break;
    fwx_port_poll(port, 1);
  }
  fwx_port_finish(port);
}

void fwx_port_unref(fwx_port_t *port) {
  fwx_op_t *op;
  fwx__sendop_t *so;

  if (--port->refs > 0) return;
  fwx_port_abandon(port); /* nobody will dequeue any more */
  while ((op = port->free_ops) != NULL) {
    port->free_ops = op->next;
    free(op);
  }
  while ((so = port->free_sends) != NULL) {
    port->free_sends = so->free_next;
    free(so);
  }
  fwx__arena_free_all(port);
  free(port);
}

uv_loop_t *fwx_port_loop(fwx_port_t *port) { return &port->loop; }
uint64_t fwx_port_now(const fwx_port_t *port) { return uv_now(&port->loop); }
void fwx_port_set_owner(fwx_port_t *port, void *owner) { port->owner = owner; }
void *fwx_port_owner(const fwx_port_t *port) { return port->owner; }

static void deadline_cb(uv_timer_t *t) {
  fwx_port_t *port = fwx__container_of(t, fwx_port_t, deadline);
  port->deadline_hit = 1;
  uv_stop(&port->loop); /* a due timer may run before the poll: do not block after it */
}

void fwx_port_deadline(fwx_port_t *port, int64_t ms) {
  port->deadline_hit = 0;
  if (port->finished) return;
  if (ms < 0) {
    uv_timer_stop(&port->deadline);
  } else {
    /* The loop's clock is as old as its last iteration; Lua may have run long since. */
    uv_update_time(&port->loop);
    uv_timer_start(&port->deadline, deadline_cb, (uint64_t)ms, 0);
  }
}

int fwx_port_deadline_hit(const fwx_port_t *port) { return port->deadline_hit; }
size_t fwx_port_queued(const fwx_port_t *port) { return port->queued; }
size_t fwx_port_pending(const fwx_port_t *port) {
  return port->workers == NULL ? port->pending : port->pending + fwx__workers_waiting(port);
}
size_t fwx_port_pending_kind(const fwx_port_t *port, fwx_op_kind_t kind) {
  return (unsigned)kind <= FWX_OP_LAST ? port->pending_kind[kind] : 0;
}
int fwx_port_closing(const fwx_port_t *port) { return port->closing; }


/* ---- overlapped record life cycle ---- */

/* Append a completed record to the FIFO the dispatcher takes packets from. */
static void enqueue(fwx_port_t *port, fwx_op_t *op) {
  op->next = NULL;
  if (port->tail != NULL)
    port->tail->next = op;
  else
    port->head = op;
  port->tail = op;
  port->queued++;
}

void fwx__op_init(fwx_op_t *op, fwx_port_t *port, fwx_op_kind_t kind) {
  memset(op, 0, sizeof *op);
  op->port = port;
  op->kind = (unsigned char)kind;
  op->notify = 1;
  op->last = 1;
}

void fwx__op_start(fwx_op_t *op, uintptr_t key, void *object) {
  assert(op->state == FWX__IDLE);
  op->key = key;
  op->object = object;
  op->bytes = 0;
  op->status = 0;
  op->error = 0;
  op->cancelled = 0;
  op->has_address = 0;
  op->watched = 0;
  op->timed_out = 0;
  op->state = FWX__PENDING;
  op->port->pending++;
  op->port->pending_kind[op->kind]++;
}

static void recycle(fwx_port_t *port, fwx_op_t *op) {
  if (port->free_count < FWX__FREE_MAX) {
    op->next = port->free_ops;
    port->free_ops = op;
    port->free_count++;
  } else {
    free(op);
  }
}

static void recycle_send(fwx_port_t *port, fwx__sendop_t *so) {
  if (port->free_count < FWX__FREE_MAX) {
    so->free_next = port->free_sends;
    port->free_sends = so;
    port->free_count++;
  } else {
    free(so);
  }
}

/* Release what a finished record holds that the dequeuer does not take over. */
static void op_release_held(fwx_op_t *op) {
  if (op->lent && op->buf != NULL) {
    fwx_buffer_unlend(op->buf);
    fwx_buffer_unref(op->buf);
    op->buf = NULL;
  }
  op->lent = 0;
  if (op->object == NULL) return;
  switch (op->kind) {
  case FWX_OP_ACCEPT:
  case FWX_OP_CONNECT:
  case FWX_OP_RECV:
  case FWX_OP_SEND: fwx_socket_unref(op->object); break;
  case FWX_OP_READ:
  case FWX_OP_WRITE: fwx_handle_unref(op->object); break;
  case FWX_OP_TIMER: fwx_timer_unref(op->object); break;
  default: break;
  }
}

static void op_free(fwx_op_t *op) {
  fwx_port_t *port = op->port;
  if (op->heap == 1) {
    recycle(port, op);
  } else if (op->heap == 2) {
    recycle_send(port, fwx__container_of(op, fwx__sendop_t, op));
  } else if (op->heap == 3) {
    free(fwx__container_of(op, fwx__reqop_t, op));
  }
}

void fwx__op_complete(fwx_op_t *op, int status) {
  fwx_port_t *port = op->port;

  assert(op->state == FWX__PENDING);
  if (op->watched) fwx__deadline_done(op);
  if (op->timed_out && status == UV_ECANCELED) status = UV_ETIMEDOUT;
  op->status = status;
  if (!op->notify) {
    /* A Send with no sink: nobody is told, but it was pending until now. */
    op->state = FWX__IDLE;
    port->pending--;
    port->pending_kind[op->kind]--;
    op_release_held(op);
    op_free(op);
    return;
  }
  op->state = FWX__QUEUED;
  enqueue(port, op);
}

/* End a pending receive (a socket's, a hooked pipe's, a link's) with status and no
 * data. A graceful end still hands a service receive an empty buffer, so "0 bytes"
 * reads the same either way; a buffer of the caller's is emptied and given back. */
void fwx__op_end_recv(fwx_op_t *op, int status) {
  if (op->buf != NULL) {
    fwx_buffer_unlend(op->buf);
    if (status == UV_EOF) fwx__buffer_fill(op->buf, NULL, 0);
  } else if (status == UV_EOF) {
    op->buf = fwx_buffer_new(0);
    if (op->buf == NULL) status = UV_ENOMEM;
  }
  op->bytes = 0;
  fwx__op_complete(op, status);
}

/* A record from the free list, or a new one; not initialised. */
static fwx_op_t *take_record(fwx_port_t *port) {
  fwx_op_t *op = port->free_ops;
  if (op == NULL) return malloc(sizeof *op);
  port->free_ops = op->next;
  port->free_count--;
  return op;
}

fwx_op_t *fwx__op_alloc(fwx_port_t *port, fwx_op_kind_t kind) {
  fwx_op_t *op = take_record(port);
  if (op == NULL) return NULL;
  fwx__op_init(op, port, kind);
  op->heap = 1;
  return op;
}

/* Make sure the next fwx__sendop_alloc cannot fail: a record on the free list. */
int fwx__sendop_reserve(fwx_port_t *port) {
  fwx__sendop_t *so;
  if (port->free_sends != NULL) return 1;
  so = malloc(sizeof *so);
  if (so == NULL) return 0;
  so->free_next = NULL;
  port->free_sends = so;
  port->free_count++;
  return 1;
}

fwx__sendop_t *fwx__sendop_alloc(fwx_port_t *port) {
  fwx__sendop_t *so = port->free_sends;
  if (so != NULL) {
    port->free_sends = so->free_next;
    port->free_count--;
  } else {
    so = malloc(sizeof *so);
    if (so == NULL) return NULL;
  }
  fwx__op_init(&so->op, port, FWX_OP_SEND);
  so->op.heap = 2;
  return so;
}

/* ---- dequeue ---- */

int fwx_port_get(fwx_port_t *port, fwx_completion_t *out) {
  fwx_op_t *op;
  int ok;

  for (;;) {
    op = port->head;
    if (op == NULL) return 0;
    port->head = op->next;
    if (port->head == NULL) port->tail = NULL;
    port->queued--;
    port->pending--;
    port->pending_kind[op->kind]--;
    /* A tick of a repeating timer that has been cancelled (or shut down) since it was
     * queued is withdrawn: after Cancel() returns, the handler sees no tick, only the
     * timer's one 995, as a uv_timer_stop'd timer never calls back. */
    if (op->kind != FWX_OP_TIMER || op->last || fwx_timer_active(op->object)) break;
    op->state = FWX__IDLE;
    op_release_held(op);
    op_free(op);
  }

  if (op->kind == FWX_OP_TASK) {
    /* A posted task carries nothing but its key (fwx_port_post). */
    memset(out, 0, offsetof(fwx_completion_t, address));
    out->kind = FWX_OP_TASK;
    out->ok = 1;
    out->key = op->key;
    out->last = 1;
    recycle(port, op);
    return 1;
  }

  if (op->cancelled && op->kind == FWX_OP_LOOKUP) {
    /* A look-up ended by shutdown says 995 even if the answer raced in: it has no
     * effect to report. Operations that did their work (a file write that ran before
     * the cancel reached it) report what happened, as CancelIoEx's "too late". */
    op->status = UV_ECANCELED;
    op->error = 0;
  }
  if (op->kind == FWX_OP_TIMER && op->last) fwx__timer_dequeued(op->object);
  out->kind = (fwx_op_kind_t)op->kind;
  out->status = op->status;
  if (op->error != 0) {
    out->error = op->error; /* decided by the operation itself, e.g. ERROR_MORE_DATA */
    ok = 0;
  } else {
    out->error = fwx__completion_error((fwx_op_kind_t)op->kind, op->status, &ok);
  }
  out->ok = ok;
  out->bytes = op->bytes;
  out->bytes_back = op->kind == FWX_OP_PUMP ? op->out.back : 0;
  out->key = op->key;
  out->object = op->object;
  out->last = op->last;
  out->accepted = op->kind == FWX_OP_ACCEPT ? op->out.accepted : NULL;
  out->result = op->kind == FWX_OP_LOOKUP ? op->out.result : NULL;
  out->data = op->kind == FWX_OP_RECV || op->kind == FWX_OP_MESSAGE ? op->out.data : NULL;
  out->has_address = 0;
  /* A socket's receive (a link's has no object): counted as it is taken. */
  if (op->kind == FWX_OP_RECV && op->object != NULL)
    fwx__socket_count_received(op->object, op->bytes);
  if (op->has_address && op->object != NULL && op->kind == FWX_OP_RECV) {
    fwx_socket_t *s = op->object;
    if (s->proto == FWX_UDP) {
      memcpy(&out->address, &fwx__socket_udp(s)->recv_addr, sizeof out->address);
      out->has_address = 1;
    }
  }
  op->out.accepted = NULL;
  op->out.result = NULL;
  if (op->lent) {
    out->buffer = NULL;
  } else {
    out->buffer = op->buf; /* the reference passes to the caller */
    op->buf = NULL;
  }
  op->state = FWX__IDLE;
  op_release_held(op);
  /* A message's record is part of the message, which lives until the release. */
  out->op = op->heap || op->kind == FWX_OP_MESSAGE ? NULL : op;
  op_free(op);
  return 1;
}

void fwx_completion_release(fwx_completion_t *c) {
  if (c->buffer != NULL) fwx_buffer_unref(c->buffer);
  if (c->accepted != NULL) {
    fwx_socket_close(c->accepted, 0);
    fwx_socket_unref(c->accepted);
  }
  if (c->result != NULL) fwx_lookup_free(c->result);
  if (c->data != NULL) {
    if (c->kind == FWX_OP_MESSAGE)
      fwx__message_release(c->data);
    else
      fwx__arena_release(c->data);
  }
  c->data = NULL;
  c->buffer = NULL;
  c->accepted = NULL;
  c->result = NULL;
}

int fwx_completion_keep_data(fwx_completion_t *c) {
  if (c->data == NULL || c->kind != FWX_OP_RECV || !fwx__arena_keep(c->data)) return 0;
  c->data = NULL; /* the packet's hold on the region is now the keeper's */
  return 1;
}

size_t fwx_port_poll(fwx_port_t *port, int block) {
  fwx__arena_new_poll(port);
  if (port->finished) return port->queued;
  /* Reads the last poll's budget refused come first, without polling, until they are
   * all done (deferred.c): the queue holds each ready socket once. */
  if (port->deferred_count > 0 && (fwx__deferred_run(port) || port->queued > 0))
    return port->queued;
  port->polls++;
  if (block && !uv_loop_alive(&port->loop) && uv_is_active((uv_handle_t *)&port->deadline)) {
    /* Nothing libuv watches can end what is pending (a link's receive waits for its
     * owner's next send): wait for the deadline itself, which is unref'd so that it
     * keeps nothing else running. */
    uv_ref((uv_handle_t *)&port->deadline);
    uv_run(&port->loop, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&port->deadline);
  } else {
    uv_run(&port->loop, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  }
  return port->queued;
}

int fwx_port_stuck(const fwx_port_t *port) {
  return port->queued == 0 && port->deferred_count == 0 && !uv_loop_alive(&port->loop) &&
         !uv_is_active((const uv_handle_t *)&port->deadline);
}

size_t fwx_port_polls(const fwx_port_t *port) { return port->polls; }

static void wait_timeout_cb(uv_timer_t *t) { *(int *)t->data = 1; }
static void wait_timer_close_cb(uv_handle_t *h) { free(h); }

int fwx_port_wait(fwx_port_t *port, fwx_completion_t *out, int timeout_ms) {
  uv_timer_t *timer = NULL;
  int expired = 0, got = 0;

  if (fwx_port_get(port, out)) return 1;
  if (timeout_ms == 0) {
    fwx_port_poll(port, 0);
    return fwx_port_get(port, out);
  }
  if (timeout_ms > 0) {
    timer = malloc(sizeof *timer);
    if (timer == NULL) return UV_ENOMEM;
    uv_timer_init(&port->loop, timer);
    timer->data = &expired;
    uv_timer_start(timer, wait_timeout_cb, (uint64_t)timeout_ms, 0);
  }
  while (!(got = fwx_port_get(port, out)) && !expired) {
    if (fwx_port_pending(port) == 0 || (timer == NULL && fwx_port_stuck(port))) break;
    fwx_port_poll(port, 1);
  }
  if (timer != NULL) uv_close((uv_handle_t *)timer, wait_timer_close_cb);
  return got;
}

/* A posted task is a packet from the start: no libuv request, nothing to hold, nothing
 * to cancel. A chain of tasks is the dispatcher's hottest path, so the record is filled
 * in once here instead of through init, start and complete. */
int fwx_port_post(fwx_port_t *port, uintptr_t key) {
  fwx_op_t *op;
  if (port->closing) return FWX_ECLOSED;
  op = take_record(port);
  if (op == NULL) return UV_ENOMEM;
  memset(op, 0, sizeof *op);
  op->port = port;
  op->key = key;
  op->kind = FWX_OP_TASK;
  op->state = FWX__QUEUED;
  op->heap = 1;
  op->notify = 1;
  op->last = 1;
  port->pending++;
  port->pending_kind[FWX_OP_TASK]++;
  enqueue(port, op);
  return 0;
}

/* ---- shutdown ---- */

void fwx_port_shutdown(fwx_port_t *port) {
  if (port->closing) return;
  port->closing = 1;
  fwx__socket_shutdown_all(port);
  fwx__deferred_clear(port); /* what it held is closed now */
  fwx__handle_shutdown_all(port);
  fwx__link_shutdown_all(port);
  fwx__timer_shutdown_all(port);
  fwx__lookup_shutdown_all(port);
  fwx__workers_detach(port); /* after this, messages are refused; queued ones stay */
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int fwx_port_finish(fwx_port_t *port) {
  int r;
  if (port->finished) return 0;
  fwx_port_shutdown(port);
  if (!uv_is_closing((uv_handle_t *)&port->deadline)) uv_close((uv_handle_t *)&port->deadline, NULL);
  /* Let close callbacks run; they free what libuv still saw. */
  uv_run(&port->loop, UV_RUN_DEFAULT);
  r = uv_loop_close(&port->loop);
  if (r == UV_EBUSY) {
    uv_walk(&port->loop, close_walk_cb, NULL);
    uv_run(&port->loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&port->loop);
  }
  port->finished = 1;
  return r;
}
