/* link.c: links, the sockets between two data filters of one connection (the host's
 * chains of data filters, lua/fwx/host_sdk.lua). In the SDK, the sockets a data filter
 * is given "may be another data filter in the chain, not a real socket": filter k's
 * external socket and filter k+1's internal socket are the two ends of a link.
 *
 * An end behaves as a connected TCP socket does, in memory: a send is copied into a
 * buffer of its own and queued towards the other end, whose receive takes it (all of
 * it, or as much as the receiver's buffer holds). A send completes once the other end
 * has taken all of it (the SDK: "a send completion only means the next filter took the
 * buffer"), so a sender that waits for its completions is pushed back on. Shutdown,
 * or a graceful close, is the end of the stream for the other end once it has taken
 * the queue (a successful 0-byte receive); an abortive close is a reset (the queued
 * sends end with UV_ECANCELED, the other end's receive with UV_ECONNRESET). A send after
 * Shutdown fails with UV_ESHUTDOWN, towards a closed end with UV_EPIPE, as a socket's.
 *
 * The operations are the port's records (kinds FWX_OP_RECV and FWX_OP_SEND, no object:
 * the owner keeps the end alive while one is pending), so every promise of the port
 * holds for them: one packet per operation, queued, never delivered inside the call
 * that started it, and UV_ECANCELED (995) for every pending one at port shutdown. Each
 * is a record of its own, not a field of the end: a completed one waits in the port's
 * FIFO, and the end may be freed before it is delivered (its owner and its service
 * collected together, with nobody to run the port). */
#include "fwx-int.h"

struct fwx_link {
  fwx__link_t node;        /* port->links, for shutdown */
  fwx_port_t *port;
  struct fwx_link *peer;   /* the other end, NULL once it is freed */
  fwx_op_t *recv;          /* the receive waiting, or NULL */
  fwx_op_t *head, *tail;   /* the other end's sends not yet all taken (op->next) */
  size_t head_off;         /* bytes of the head's buffer already taken */
  size_t queued;           /* bytes in the queue not yet taken */
  size_t send_limit;       /* fwx_link_set_send_limit: on the other end's queued */
  unsigned closed : 1;
  unsigned shut : 1;       /* Shutdown: this end sends no more */
  unsigned eof : 1;        /* the other end shut down or closed: the end, after the queue */
  unsigned reset : 1;      /* the other end closed abortively */
};

static fwx_link_t *link_new(fwx_port_t *port) {
  fwx_link_t *l = calloc(1, sizeof *l);
  if (l == NULL) return NULL;
  l->port = port;
  fwx_port_ref(port); /* its list node lives in the port */
  fwx__list_insert(&port->links, &l->node);
  return l;
}

int fwx_link_pair(fwx_port_t *port, fwx_link_t **a, fwx_link_t **b) {
  fwx_link_t *x, *y;
  if (port->closing) return FWX_ECLOSED;
  x = link_new(port);
  if (x == NULL) return UV_ENOMEM;
  y = link_new(port);
  if (y == NULL) {
    fwx__list_remove(&x->node);
    free(x);
    fwx_port_unref(port);
    return UV_ENOMEM;
  }
  x->peer = y;
  y->peer = x;
  *a = x;
  *b = y;
  return 0;
}

fwx_port_t *fwx_link_port(const fwx_link_t *l) { return l->port; }
int fwx_link_closed(const fwx_link_t *l) { return l->closed; }
int fwx_link_receiving(const fwx_link_t *l) { return l->recv != NULL; }

/* Take the head of the queue off it. */
static fwx_op_t *pop(fwx_link_t *l) {
  fwx_op_t *s = l->head;
  l->head = s->next;
  if (l->head == NULL) l->tail = NULL;
  l->head_off = 0;
  return s;
}

/* Complete l's waiting receive, if it can be: from the queue, or with the end of the
 * stream or the reset once the queue is empty. The receive's packet goes first, then
 * the send's it emptied. */
static void take(fwx_link_t *l) {
  fwx_op_t *r = l->recv, *s = l->head;
  fwx_buffer_t *b;
  size_t size, n;

  if (r == NULL) return;
  if (s == NULL) {
    if (l->reset || l->eof) {
      l->recv = NULL;
      fwx__op_end_recv(r, l->reset ? UV_ECONNRESET : UV_EOF);
    }
    return;
  }
  l->recv = NULL;
  b = s->buf;
  size = fwx_buffer_size(b);
  n = size - l->head_off;
  if (r->buf != NULL) { /* the receiver's own buffer: as much as it holds */
    size_t cap = fwx_buffer_capacity(r->buf);
    if (n > cap) n = cap;
    fwx_buffer_unlend(r->buf);
    fwx__buffer_fill(r->buf, fwx_buffer_data(b) + l->head_off, n);
  } else if (l->head_off == 0) { /* the sender's copy itself: nobody writes to it */
    fwx_buffer_ref(b);
    r->buf = b;
  } else {
    r->buf = fwx_buffer_window(b, l->head_off, n);
    if (r->buf == NULL) {
      r->bytes = 0;
      fwx__op_complete(r, UV_ENOMEM);
      return;
    }
  }
  r->bytes = n;
  l->head_off += n;
  l->queued -= n;
  fwx__op_complete(r, 0);
  if (l->head_off == size) {
    s = pop(l);
    s->bytes = size;
    fwx__op_complete(s, 0);
  }
}

int fwx_link_recv(fwx_link_t *l, fwx_buffer_t *buf, uintptr_t key) {
  fwx_op_t *op;
  int r;
  if (l->closed || l->port->closing) return FWX_ECLOSED;
  if (l->recv != NULL) return FWX_EBUSY;
  if (buf != NULL) {
    if (fwx_buffer_capacity(buf) == 0) return FWX_EINVAL;
    r = fwx_buffer_writable(buf);
    if (r != 0) return r;
  }
  op = fwx__op_alloc(l->port, FWX_OP_RECV); /* recycled by the port once dequeued */
  if (op == NULL) return UV_ENOMEM;
  fwx__op_start(op, key, NULL);
  if (buf != NULL) {
    fwx_buffer_ref(buf);
    fwx_buffer_lend(buf); /* the receive writes into it: read-only until then */
    op->buf = buf;
  }
  l->recv = op;
  take(l);
  return 0;
}

int fwx_link_send(fwx_link_t *l, const char *data, size_t len, int notify, uintptr_t key) {
  fwx__sendop_t *so;
  fwx_buffer_t *b = NULL;
  fwx_link_t *peer = l->peer;

  if (l->closed || l->port->closing) return FWX_ECLOSED;
  if (len > 0) {
    b = fwx_buffer_const(data, len); /* the caller may reuse its bytes at once */
    if (b == NULL) return UV_ENOMEM;
  }
  so = fwx__sendop_alloc(l->port);
  if (so == NULL) {
    if (b != NULL) fwx_buffer_unref(b);
    return UV_ENOMEM;
  }
  so->op.notify = (unsigned char)(notify != 0);
  fwx__op_start(&so->op, key, NULL);
  if (b != NULL) { /* held until taken; the record's release frees it */
    fwx_buffer_lend(b);
    so->op.buf = b;
    so->op.lent = 1;
  }
  if (len == 0) { /* nothing to take: done, as a socket's empty send */
    fwx__op_complete(&so->op, 0);
  } else if (l->shut) {
    fwx__op_complete(&so->op, UV_ESHUTDOWN);
  } else if (peer == NULL || peer->closed) {
    fwx__op_complete(&so->op, UV_EPIPE);
  } else if (l->send_limit != 0 && peer->queued >= l->send_limit) {
    fwx__op_complete(&so->op, UV_ENOBUFS); /* the other end takes too slowly */
  } else {
    peer->queued += len;
    so->op.next = NULL;
    if (peer->tail != NULL)
      peer->tail->next = &so->op;
    else
      peer->head = &so->op;
    peer->tail = &so->op;
    take(peer);
  }
  return 0;
}

int fwx_link_shutdown(fwx_link_t *l) {
  if (l->closed || l->port->closing) return FWX_ECLOSED;
  if (!l->shut) {
    l->shut = 1;
    if (l->peer != NULL) {
      l->peer->eof = 1;
      take(l->peer);
    }
  }
  return 0;
}

/* End every send in l's queue with status. */
static void fail_queue(fwx_link_t *l, int status) {
  while (l->head != NULL) {
    fwx_op_t *s = pop(l);
    s->bytes = 0;
    fwx__op_complete(s, status);
  }
  l->queued = 0;
}

void fwx_link_set_send_limit(fwx_link_t *l, size_t bytes) { l->send_limit = bytes; }

int fwx_link_cancel_io(fwx_link_t *l) {
  fwx_op_t *op = l->recv;
  if (op == NULL) return 0;
  l->recv = NULL;
  fwx__op_end_recv(op, UV_ECANCELED);
  return 1;
}

int fwx_link_close(fwx_link_t *l, int abortive) {
  fwx_link_t *peer = l->peer;
  if (l->closed) return 0;
  l->closed = 1;
  fwx_link_cancel_io(l);
  fail_queue(l, UV_EPIPE); /* sent to this end, which will not take them now */
  if (peer != NULL) {
    if (abortive) {
      fail_queue(peer, UV_ECANCELED); /* what this end sent goes too: a reset */
      peer->reset = 1;
    }
    peer->eof = 1;
    take(peer);
  }
  return 0;
}

void fwx_link_free(fwx_link_t *l) {
  fwx_port_t *port = l->port;
  fwx_link_close(l, 0);
  if (l->peer != NULL) l->peer->peer = NULL;
  fwx__list_remove(&l->node);
  free(l);
  fwx_port_unref(port);
}

/* Port shutdown: every pending operation of every end ends with UV_ECANCELED, the
 * ends are closed, and what they still hold goes. */
void fwx__link_shutdown_all(fwx_port_t *port) {
  fwx__link_t *n;
  for (n = port->links.next; n != &port->links; n = n->next) {
    fwx_link_t *l = fwx__container_of(n, fwx_link_t, node);
    fwx_link_cancel_io(l);
    fail_queue(l, UV_ECANCELED);
    l->closed = 1;
  }
}
