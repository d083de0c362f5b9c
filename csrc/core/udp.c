/* udp.c: datagram receives and sends for UDP sockets.
 *
 * Receives are one-shot like TCP's: receiving stays on while receives keep coming; a
 * datagram that arrives with none pending is held (one) and receiving pauses, so the
 * kernel's socket buffer, not ours, absorbs a burst. A datagram larger than the
 * caller's buffer completes with ERROR_MORE_DATA and the part that fit, as WSARecvFrom
 * reports WSAEMSGSIZE. */
#include "fwx-int.h"

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags);

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  fwx_socket_t *s = h->data;
  fwx__udp_ext_t *u = fwx__socket_udp(s);
  size_t room;
  int refused;
  char *p = fwx__arena_tail(fwx__socket_port(s), &room, &u->defer_age, &refused);
  (void)hint;
  *buf = uv_buf_init(p, (unsigned)room);
  u->refused = refused != 0;
}

static void pause_receiving(fwx_socket_t *s) {
  if (fwx__socket_udp(s)->receiving) {
    uv_udp_recv_stop(&s->uv.udp);
    fwx__socket_udp(s)->receiving = 0;
  }
}

static size_t addr_len(const struct sockaddr *a) {
  return a->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Complete the pending receive with one datagram: p is either at the port arena's
 * tail (fresh from libuv) or in a held chunk. */
static void deliver(fwx_socket_t *s, const char *p, size_t n, const struct sockaddr *from,
                    int partial, fwx_buffer_t *chunk) {
  fwx_op_t *op = &s->recv_op;
  int truncated = partial;
  size_t m = n;

  if (op->buf != NULL) {
    size_t cap = fwx_buffer_capacity(op->buf);
    if (m > cap) {
      m = cap;
      truncated = 1;
    }
    fwx__buffer_fill(op->buf, p, m);
    fwx_buffer_unlend(op->buf);
  } else if (chunk != NULL) {
    fwx_buffer_ref(chunk);
    op->buf = chunk;
  } else {
    fwx__arena_commit(fwx__socket_port(s), p, n, op);
  }
  op->bytes = m;
  memset(&fwx__socket_udp(s)->recv_addr, 0, sizeof fwx__socket_udp(s)->recv_addr);
  if (from != NULL) memcpy(&fwx__socket_udp(s)->recv_addr, from, addr_len(from));
  op->has_address = from != NULL;
  if (truncated) op->error = 234; /* ERROR_MORE_DATA */
  fwx__op_complete(op, truncated ? UV_EMSGSIZE : 0);
}

static void end_recv(fwx_socket_t *s, int status) {
  fwx_op_t *op = &s->recv_op;
  if (op->buf != NULL) fwx_buffer_unlend(op->buf);
  fwx__op_complete(op, status);
}

static void recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  fwx_socket_t *s = h->data;
  fwx__udp_ext_t *u = fwx__socket_udp(s);
  int pending = s->recv_op.state == FWX__PENDING;

  if (nread == 0 && addr == NULL) return; /* nothing more to read now */
  if (nread == UV_ENOBUFS && u->refused) return; /* the budget's: next poll */
  if (nread < 0) {
    if (pending)
      end_recv(s, (int)nread);
    else
      u->chunk_status = (int)nread;
    pause_receiving(s);
    return;
  }
  if (pending) {
    deliver(s, buf->base, (size_t)nread, addr, (flags & UV_UDP_PARTIAL) != 0, NULL);
    return;
  }
  assert(u->chunk == NULL);
  u->chunk = fwx_buffer_new((size_t)nread);
  if (u->chunk == NULL) {
    u->chunk_status = UV_ENOMEM;
  } else {
    fwx__buffer_fill(u->chunk, buf->base, (size_t)nread);
    memset(&u->chunk_addr, 0, sizeof u->chunk_addr);
    if (addr != NULL) memcpy(&u->chunk_addr, addr, addr_len(addr));
    u->chunk_partial = (flags & UV_UDP_PARTIAL) != 0;
  }
  pause_receiving(s);
}

int fwx__udp_recv(fwx_socket_t *s, fwx_op_t *op) {
  fwx__udp_ext_t *u = fwx__socket_udp(s);
  int r;

  if (op->buf != NULL) fwx_buffer_lend(op->buf);
  if (u->chunk_status != 0 && u->chunk == NULL) {
    r = u->chunk_status;
    u->chunk_status = 0;
    end_recv(s, r);
    return 0;
  }
  if (u->chunk != NULL) {
    fwx_buffer_t *chunk = u->chunk;
    u->chunk = NULL;
    deliver(s, fwx_buffer_data(chunk), fwx_buffer_size(chunk),
            (const struct sockaddr *)&u->chunk_addr, u->chunk_partial, chunk);
    fwx_buffer_unref(chunk);
  }
  /* Receive again: for this receive if it is still pending, or to refill the held
   * datagram just claimed. A failure ends a pending receive; otherwise the next one
   * reports it. */
  if (!u->receiving) {
    r = uv_udp_recv_start(&s->uv.udp, alloc_cb, recv_cb);
    if (r == 0)
      u->receiving = 1;
    else if (s->recv_op.state == FWX__PENDING)
      end_recv(s, r);
    else
      u->chunk_status = r;
  }
  return 0;
}

/* Cancel the pending receive alone; receiving goes on into the one unclaimed chunk. */
void fwx__udp_cancel_recv(fwx_socket_t *s) {
  if (s->recv_op.state == FWX__PENDING) end_recv(s, UV_ECANCELED);
}

void fwx__udp_cancel(fwx_socket_t *s, int status) {
  fwx__udp_ext_t *u = fwx__socket_udp(s);
  if (s->recv_op.state == FWX__PENDING) end_recv(s, status);
  if (u->chunk != NULL) {
    fwx_buffer_unref(u->chunk);
    u->chunk = NULL;
  }
  pause_receiving(s);
}

static void send_cb(uv_udp_send_t *req, int status) {
  fwx_op_t *op = req->data;
  fwx_socket_t *s = req->handle->data;
  fwx__socket_udp(s)->sends--;
  fwx__op_complete(op, status);
}

int fwx__udp_send(fwx_socket_t *s, fwx__sendop_t *so, const char *data, size_t len,
                  const struct sockaddr *to) {
  fwx_op_t *op = &so->op;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int r;

  op->bytes = len;
  if (fwx__socket_udp(s)->sends == 0) {
    /* Try at once; queue only behind earlier sends, so completions keep their order. */
    r = uv_udp_try_send(&s->uv.udp, &b, 1, to);
    if (r >= 0) {
      fwx__op_complete(op, 0);
      return 0;
    }
    if (r != UV_EAGAIN && r != UV_ENOSYS) {
      fwx__op_complete(op, r);
      return 0;
    }
  }
  if (op->buf == NULL) {
    op->buf = fwx_buffer_const(data, len);
    if (op->buf == NULL) {
      fwx__op_complete(op, UV_ENOMEM);
      return 0;
    }
    fwx_buffer_lend(op->buf);
    op->lent = 1;
    b = uv_buf_init(fwx_buffer_data(op->buf), (unsigned)len);
  }
  so->req.udp_send.data = op;
  r = uv_udp_send(&so->req.udp_send, &s->uv.udp, &b, 1, to, send_cb);
  if (r != 0) {
    fwx__op_complete(op, r);
    return 0;
  }
  fwx__socket_udp(s)->sends++;
  return 0;
}
