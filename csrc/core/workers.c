/* workers.c: ports in different threads that post messages to each other.
 *
 * A worker group has one inbox per worker. Another thread posts by copying its bytes
 * into a message, appending it to the inbox under the group's lock and waking the
 * inbox's port with uv_async_send; the port's own thread moves the messages into its
 * FIFO as FWX_OP_MESSAGE packets. So a message is delivered in its worker's thread,
 * like every other notification, and nothing of one port is touched by another
 * thread except the async handle libuv makes for exactly that.
 *
 * Exactly once: a post that returned 0 is delivered once. An inbox accepts messages
 * before its port attaches (a worker may post to one whose script has not run yet) and
 * until its port shuts down; the shutdown takes what is left as packets, which the
 * port's drain delivers, and refuses later posts (FWX_ECLOSED). The one lock orders
 * uv_async_send before the handle's close: a poster never wakes a closed handle.
 *
 * Bounded memory: an inbox holds at most FWX__INBOX_MAX bytes of messages not yet
 * delivered and released; a post past it is refused with UV_ENOBUFS, and the poster
 * still has its value. */
#include "fwx-int.h"

#define FWX__INBOX_MAX ((size_t)64 << 20)

typedef struct fwx__message {
  fwx_op_t op;             /* the packet; op.next links the inbox until it is one */
  fwx_workers_t *group;
  int to;
  size_t len;
  char data[];
} fwx__message_t;

typedef struct fwx__inbox {
  fwx_port_t *port;        /* attached, or NULL */
  uv_async_t *wake;        /* on the port's loop, while attached */
  fwx_op_t *head, *tail;   /* messages not yet moved into the port */
  size_t bytes;            /* bytes of messages posted and not yet released */
  size_t waiting;          /* messages not yet moved into the port: its thread reads it
                              without the lock (fwx_port_pending), so atomically */
  unsigned closed : 1;     /* its port shut down: posts are refused */
} fwx__inbox_t;

struct fwx_workers {
  uv_mutex_t lock;
  int count;
  fwx__inbox_t inbox[];    /* [0] unused: workers count from 1 */
};

int fwx_workers_new(int count, fwx_workers_t **out) {
  fwx_workers_t *w;
  if (count < 1 || count > FWX_WORKERS_MAX) return FWX_EINVAL;
  w = calloc(1, sizeof *w + (size_t)(count + 1) * sizeof w->inbox[0]);
  if (w == NULL) return UV_ENOMEM;
  if (uv_mutex_init(&w->lock) != 0) {
    free(w);
    return UV_ENOMEM;
  }
  w->count = count;
  *out = w;
  return 0;
}

int fwx_workers_count(const fwx_workers_t *w) { return w->count; }

/* Free a message nobody will deliver: a post refused late, or one still in an inbox
 * when the group goes. */
static void message_free(fwx__message_t *m) { free(m); }

void fwx_workers_free(fwx_workers_t *w) {
  int i;
  if (w == NULL) return;
  for (i = 1; i <= w->count; i++) {
    fwx_op_t *op = w->inbox[i].head, *next;
    /* Only an inbox whose worker never attached can still hold messages. */
    for (; op != NULL; op = next) {
      next = op->next;
      message_free(fwx__container_of(op, fwx__message_t, op));
    }
  }
  uv_mutex_destroy(&w->lock);
  free(w);
}

/* Take an inbox's messages; the caller holds the lock. */
static fwx_op_t *take_all(fwx__inbox_t *in) {
  fwx_op_t *list = in->head;
  in->head = in->tail = NULL;
  __atomic_store_n(&in->waiting, 0, __ATOMIC_RELAXED);
  return list;
}

/* Messages posted to the port's worker and not yet packets of the port: they count as
 * pending, so that a worker does not go idle (or its run() return) with one on the
 * way; the moment they become packets they count there instead, in the same thread. */
size_t fwx__workers_waiting(const fwx_port_t *port) {
  const fwx__inbox_t *in = &port->workers->inbox[port->worker_id];
  return port->worker_detached ? 0 : __atomic_load_n(&in->waiting, __ATOMIC_RELAXED);
}

/* The port's thread: make each message a packet of its port, in posting order. */
static void enqueue_messages(fwx_port_t *port, fwx_op_t *list) {
  fwx_op_t *op, *next;
  for (op = list; op != NULL; op = next) {
    fwx__message_t *m = fwx__container_of(op, fwx__message_t, op);
    int from = (int)op->key;
    next = op->next;
    fwx__op_init(op, port, FWX_OP_MESSAGE);
    fwx__op_start(op, (uintptr_t)from, NULL);
    op->out.data = m->data;
    op->bytes = m->len;
    fwx__op_complete(op, 0);
  }
}

static void wake_closed_cb(uv_handle_t *h) { free(h); }

static void wake_cb(uv_async_t *a) {
  fwx_port_t *port = a->data;
  fwx_workers_t *w = port->workers;
  fwx_op_t *list;
  uv_mutex_lock(&w->lock);
  list = take_all(&w->inbox[port->worker_id]);
  uv_mutex_unlock(&w->lock);
  enqueue_messages(port, list);
}

int fwx_workers_attach(fwx_workers_t *w, int id, fwx_port_t *port) {
  fwx__inbox_t *in;
  uv_async_t *wake;
  int r, queued;
  if (id < 1 || id > w->count) return FWX_EINVAL;
  if (port->closing) return FWX_ECLOSED;
  if (port->workers != NULL) return FWX_ESTATE;
  wake = malloc(sizeof *wake);
  if (wake == NULL) return UV_ENOMEM;
  r = uv_async_init(&port->loop, wake, wake_cb);
  if (r != 0) {
    free(wake);
    return r;
  }
  /* Referenced: a poll with only messages on the way must block until they come. */
  wake->data = port;
  in = &w->inbox[id];
  uv_mutex_lock(&w->lock);
  if (in->port != NULL || in->closed) {
    uv_mutex_unlock(&w->lock);
    uv_close((uv_handle_t *)wake, wake_closed_cb);
    return FWX_ESTATE;
  }
  in->port = port;
  in->wake = wake;
  queued = in->head != NULL;
  uv_mutex_unlock(&w->lock);
  port->workers = w;
  port->worker_id = id;
  if (queued) uv_async_send(wake); /* posted before the worker attached */
  return 0;
}

/* fwx_port_shutdown: refuse further posts and take what is queued as packets. */
void fwx__workers_detach(fwx_port_t *port) {
  fwx_workers_t *w = port->workers;
  fwx__inbox_t *in;
  uv_async_t *wake;
  fwx_op_t *list;
  if (w == NULL || port->worker_detached) return;
  in = &w->inbox[port->worker_id];
  uv_mutex_lock(&w->lock);
  in->closed = 1;
  in->port = NULL;
  wake = in->wake;
  in->wake = NULL;
  list = take_all(in);
  uv_mutex_unlock(&w->lock);
  port->worker_detached = 1;
  uv_close((uv_handle_t *)wake, wake_closed_cb);
  enqueue_messages(port, list);
}

static int post(fwx_workers_t *w, int to, int from, const void *head, size_t hlen,
                const void *data, size_t dlen) {
  fwx__inbox_t *in;
  fwx__message_t *m;
  size_t len = hlen + dlen;
  if (to < 1 || to > w->count) return FWX_EINVAL;
  if (hlen > FWX__INBOX_MAX || dlen > FWX__INBOX_MAX - hlen) return UV_ENOBUFS;
  m = malloc(sizeof *m + len);
  if (m == NULL) return UV_ENOMEM;
  m->group = w;
  m->to = to;
  m->len = len;
  if (hlen > 0) memcpy(m->data, head, hlen);
  if (dlen > 0) memcpy(m->data + hlen, data, dlen);
  m->op.next = NULL;
  m->op.key = (uintptr_t)from;
  in = &w->inbox[to];
  uv_mutex_lock(&w->lock);
  if (in->closed || in->bytes + len > FWX__INBOX_MAX) {
    int r = in->closed ? FWX_ECLOSED : UV_ENOBUFS;
    uv_mutex_unlock(&w->lock);
    message_free(m);
    return r;
  }
  in->bytes += len;
  __atomic_add_fetch(&in->waiting, 1, __ATOMIC_RELAXED);
  if (in->tail != NULL)
    in->tail->next = &m->op;
  else
    in->head = &m->op;
  in->tail = &m->op;
  if (in->wake != NULL) uv_async_send(in->wake);
  uv_mutex_unlock(&w->lock);
  return 0;
}

int fwx_workers_post(fwx_workers_t *w, int to, int from, const void *head, size_t hlen,
                     const void *data, size_t dlen) {
  if (from < 1 || from > w->count) return FWX_EINVAL;
  return post(w, to, from, head, hlen, data, dlen);
}

void fwx_workers_stop(fwx_workers_t *w) {
  int i;
  for (i = 1; i <= w->count; i++) post(w, i, 0, NULL, 0, NULL, 0); /* refused where stopped */
}

void fwx__message_release(const char *data) {
  fwx__message_t *m = fwx__container_of(data, fwx__message_t, data);
  fwx_workers_t *w = m->group;
  uv_mutex_lock(&w->lock);
  w->inbox[m->to].bytes -= m->len;
  uv_mutex_unlock(&w->lock);
  message_free(m);
}

fwx_workers_t *fwx_port_workers(const fwx_port_t *port) { return port->workers; }
int fwx_port_worker_id(const fwx_port_t *port) { return port->worker_id; }
