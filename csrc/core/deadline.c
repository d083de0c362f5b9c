/* deadline.c: a time limit on a socket's receive or on one of its sends (the await
 * style's timeouts: lua/fwx/await.lua, csrc/lua/resume.c).
 *
 * The await style first timed an operation with a timer of the callback style: a
 * SetTimer per call, a Cancel when the operation came first, and that timer's own 995
 * notification, each through Lua. An awaited echo with s:settimeout() then cost 32 911
 * instructions a message against 8 851 without one (callgrind, 50 x 64 B). Here a
 * socket that has ever had a deadline keeps one libuv timer, armed at the nearer of
 * its receive's and its send's deadlines, and an operation that completes first
 * disarms it on the way (fwx__deadline_done, from fwx__op_complete): no packet, no
 * Lua, no allocation per operation. The timer is made with the first deadline (in
 * the socket's conn record, so an idle connection carries nothing) and closed with the
 * socket.
 *
 * One send at a time can have a deadline: sends complete in order, but two deadlines
 * need not, and a socket keeps one. The binding times a second one its own way.
 *
 * libuv runs timers before it polls. A TCP receive whose deadline passes reads once
 * before it is cancelled, so that bytes already there win, as they did when the
 * dispatcher saw the receive's packet before the timer's. A UDP receive and a send are
 * ended without that look: a send still queued when its deadline passes closes the
 * socket even if the peer would have taken the bytes in that same turn of the loop. */
#include "fwx-int.h"

typedef struct fwx__deadline {
  uv_timer_t timer;
  fwx_socket_t *s;         /* valid while the timer is: both close with the socket */
  fwx_op_t *last_send;     /* the send started last, while it is pending */
  fwx_op_t *send;          /* the send with a deadline, while it is pending */
  uint64_t recv_at;        /* loop time the receive's deadline passes; 0: none */
  uint64_t send_at;        /* the same for the send */
  uint64_t armed_at;       /* what the timer is armed for; 0: not armed */
} fwx__deadline_t;

static void close_cb(uv_handle_t *h) {
  free(fwx__container_of(h, fwx__deadline_t, timer));
}

static void expired_cb(uv_timer_t *t);

/* Arm the timer for the nearer deadline, or stop it when there is none. */
static void rearm(fwx__deadline_t *d) {
  uint64_t at = d->recv_at, now;
  if (d->send_at != 0 && (at == 0 || d->send_at < at)) at = d->send_at;
  if (at == d->armed_at) return;
  d->armed_at = at;
  if (at == 0) {
    uv_timer_stop(&d->timer);
    return;
  }
  now = uv_now(d->timer.loop);
  uv_timer_start(&d->timer, expired_cb, at > now ? at - now : 0, 0);
}

static void expired_cb(uv_timer_t *t) {
  fwx__deadline_t *d = fwx__container_of(t, fwx__deadline_t, timer);
  fwx_socket_t *s = d->s;
  uint64_t now = uv_now(t->loop);
  d->armed_at = 0;
  if (d->recv_at != 0 && d->recv_at <= now) {
    /* Timers run before the poll: bytes that are already there came in time (the
     * dispatcher's order, and nginx's), so a TCP receive reads once first. One the
     * read budget refuses now is read before the next poll: look again after it. */
    if (s->proto == FWX_TCP && fwx__reader_read_now(&s->uv.stream) < 0) {
      d->recv_at = now;
    } else {
      d->recv_at = 0;
      s->recv_op.watched = 0;
      if (s->recv_op.state == FWX__PENDING) { /* the read did not complete it */
        s->recv_op.timed_out = 1; /* its cancel reports UV_ETIMEDOUT */
        fwx__socket_cancel_recv(s);
      }
    }
  }
  if (d->send_at != 0 && d->send_at <= now) {
    fwx_op_t *op = d->send;
    d->send_at = 0;
    d->send = NULL;
    op->timed_out = 1; /* the close ends it with UV_ECANCELED, reported as a timeout */
    fwx_socket_close(s, 1);  /* closes this timer too, unless a receive is left */
  }
  if (s->conn->deadline == d) rearm(d); /* unless the send's close closed the timer */
}

int fwx_socket_deadline_prepare(fwx_socket_t *s, fwx_op_kind_t kind) {
  fwx__conn_t *c;
  fwx__deadline_t *d;
  if (s->closed || s->uv_closing || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  c = fwx__socket_conn(s);
  if (c == NULL) return UV_ENOMEM;
  d = c->deadline;
  if (d == NULL) {
    d = calloc(1, sizeof *d);
    if (d == NULL) return UV_ENOMEM;
    uv_timer_init(s->uv.handle.loop, &d->timer); /* cannot fail */
    d->s = s;
    c->deadline = d;
  }
  if (kind == FWX_OP_SEND && d->send != NULL) return FWX_EBUSY;
  return 0;
}

int fwx_socket_deadline(fwx_socket_t *s, fwx_op_kind_t kind, uint64_t ms) {
  fwx__deadline_t *d = s->conn != NULL ? s->conn->deadline : NULL;
  fwx_op_t *op;
  uint64_t at;
  if (d == NULL) return 0; /* closed since the prepare */
  op = kind == FWX_OP_RECV ? &s->recv_op : d->last_send;
  if (op == NULL || op->state != FWX__PENDING || (kind == FWX_OP_SEND && d->send != NULL))
    return 0;
  at = uv_now(s->uv.handle.loop) + ms;
  if (at == 0) at = 1; /* 0 means none */
  op->watched = 1;
  if (kind == FWX_OP_RECV) {
    d->recv_at = at;
  } else {
    d->send = op;
    d->send_at = at;
  }
  rearm(d);
  return 1;
}

/* From fwx_socket_send, for a socket that has had a deadline, as soon as the send has
 * started: it is the last, until it completes (perhaps at once, in the write). */
void fwx__deadline_sent(fwx_socket_t *s, fwx_op_t *op) {
  fwx__deadline_t *d = s->conn->deadline;
  if (d->last_send != NULL && d->last_send != d->send) d->last_send->watched = 0;
  d->last_send = op;
  op->watched = 1;
}

/* From fwx__op_complete: a watched operation completed (or was cancelled): it has no
 * deadline any more, and no deadline names it. */
void fwx__deadline_done(fwx_op_t *op) {
  fwx_socket_t *s = op->object;
  fwx__deadline_t *d = s->conn->deadline; /* a watched op's socket has its conn */
  op->watched = 0;
  if (d == NULL) return;
  if (op == &s->recv_op) d->recv_at = 0;
  if (op == d->send) {
    d->send = NULL;
    d->send_at = 0;
  }
  if (op == d->last_send) d->last_send = NULL;
  rearm(d);
}

/* The socket closes: its timer goes with it. Operations still watched complete later
 * (libuv ends queued writes in the close) and find no deadline. */
void fwx__deadline_close(fwx_socket_t *s) {
  fwx__deadline_t *d = s->conn->deadline;
  s->conn->deadline = NULL;
  if (d->send != NULL) d->send->watched = 0;
  if (d->last_send != NULL) d->last_send->watched = 0;
  s->recv_op.watched = 0;
  uv_close((uv_handle_t *)&d->timer, close_cb);
}
