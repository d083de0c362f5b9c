/* deferred.c: socket reads a poll's read budget refused (arena.c), done directly
 * before the next poll.
 *
 * One poll reads every ready socket before any handler runs, and the echo a handler
 * sends is copied from where the read put it; the more a poll reads, the colder those
 * bytes are by then. A read budget bounds that, but a read it refuses stays ready,
 * and with a level-triggered poll a refused socket is reported, looked at and refused
 * again in every poll until its turn comes: at 500 connections a small budget cost
 * more in polling than it saved. So a refused socket is queued here instead, in the
 * order it was refused, and the dispatcher's next polls read the queue with read(2),
 * a budget's worth at a time, without asking the kernel what is ready: each ready
 * socket is read once per turn of the queue, and the poll proper waits until the queue
 * is empty. A queued socket holds a reference, so that the entry stays valid whatever
 * closes the socket meanwhile. Hooked pipes and UDP sockets keep the level-triggered
 * way. */
#include "fwx-int.h"

/* Queue the socket whose read the budget just refused (once: a queued socket is
 * already due). Without memory for the queue, the socket is left to the poll. */
void fwx__deferred_add(uv_stream_t *stream) {
  fwx_port_t *port = stream->loop->data;
  fwx__reader_t *r = stream->data;
  fwx_socket_t *s = fwx__container_of(stream, fwx_socket_t, uv.stream);
  size_t i;

  if (r->queued) return;
  if (port->deferred_count == port->deferred_cap) {
    size_t cap = port->deferred_cap ? 2 * port->deferred_cap : 64;
    fwx_socket_t **q = malloc(cap * sizeof *q);
    if (q == NULL) return;
    for (i = 0; i < port->deferred_count; i++)
      q[i] = port->deferred[(port->deferred_head + i) % port->deferred_cap];
    free(port->deferred);
    port->deferred = q;
    port->deferred_cap = cap;
    port->deferred_head = 0;
  }
  port->deferred[(port->deferred_head + port->deferred_count++) % port->deferred_cap] = s;
  r->queued = 1;
  port->deferred_total++;
  fwx_socket_ref(s);
}

static fwx_socket_t *shift(fwx_port_t *port) {
  fwx_socket_t *s = port->deferred[port->deferred_head];
  port->deferred_head = (port->deferred_head + 1) % port->deferred_cap;
  port->deferred_count--;
  s->reader.queued = 0;
  return s;
}

/* Read queued sockets until the queue is empty or the budget refuses one again (it
 * stays first). Returns whether any is left. */
int fwx__deferred_run(fwx_port_t *port) {
  while (port->deferred_count > 0) {
    fwx_socket_t *s = port->deferred[port->deferred_head];
    if (!s->closed && !s->uv_closing && fwx__reader_read_now(&s->uv.stream) < 0) break;
    shift(port);
    fwx_socket_unref(s);
  }
  return port->deferred_count > 0;
}

/* Let every queued socket go (the port is shutting down: they are closed). */
void fwx__deferred_clear(fwx_port_t *port) {
  while (port->deferred_count > 0) fwx_socket_unref(shift(port));
  free(port->deferred);
  port->deferred = NULL;
  port->deferred_cap = 0;
  port->deferred_head = 0;
}
