/* socket.c: network sockets (IFWXNetworkSocket): create, bind, listen, accept,
 * connect, receive, send, shutdown, close, names and options. TCP receives and sends
 * go through stream.c, UDP ones through udp.c.
 *
 * References: the creator holds one, the libuv handle one (dropped in the close
 * callback), each pending operation one. The memory goes with the last. */
#include "fwx-int.h"
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

static void close_cb(uv_handle_t *h) {
  fwx_socket_t *s = fwx__container_of(h, fwx_socket_t, uv.handle);
  fwx_socket_unref(s);
}

static void close_now(fwx_socket_t *s, int abortive);

/* The connection broke under a write. Sends queued behind it would wait for a close
 * that may never come (and a graceful close waits for them): close the handle now,
 * which ends them with 995. Later operations report the error; the Lua object stays
 * open until its owner closes it. */
void fwx__socket_write_failed(uv_stream_t *stream, int status) {
  fwx_socket_t *s = fwx__container_of(stream, fwx_socket_t, uv.stream);
  fwx__reader_t *r = &s->reader;
  if (r->status == 0 || r->status == UV_EOF) r->status = status;
  if (r->writes > 0 || s->close_after_shutdown) {
    fwx__reader_cancel(stream, status);
    close_now(s, 0);
  }
}

int fwx_socket_new(fwx_port_t *port, fwx_proto_t proto, fwx_socket_t **out) {
  fwx_socket_t *s;
  int r = UV_ENOMEM;

  if (port->closing) return FWX_ECLOSED;
  if (proto != FWX_TCP && proto != FWX_UDP) return FWX_EINVAL;
  s = calloc(1, sizeof *s + (proto == FWX_UDP ? sizeof(fwx__udp_ext_t) : 0));
  if (s == NULL) goto fail;
  if (proto == FWX_UDP) {
    r = uv_udp_init(&port->loop, &s->uv.udp);
    if (r != 0) goto fail;
    s->uv.udp.data = s;
  } else {
    r = uv_tcp_init(&port->loop, &s->uv.tcp);
    if (r != 0) goto fail;
    fwx__reader_init(&s->reader, &s->uv.stream, 1);
  }
  /* Nothing can fail past this point. */
  s->proto = (unsigned)proto & 3u;
  s->refs = 2; /* the caller and the libuv handle */
  fwx_port_ref(port);
  fwx__op_init(&s->recv_op, port, FWX_OP_RECV);
  *out = s;
  return 0;

fail:
  free(s);
  return r;
}

void fwx_socket_ref(fwx_socket_t *s) { s->refs++; }

void fwx_socket_unref(fwx_socket_t *s) {
  fwx_port_t *port;
  assert(s->refs > 0);
  if (--s->refs > 0) return;
  port = fwx__socket_port(s);
  free(s->conn);
  free(s);
  fwx_port_unref(port);
}

fwx_proto_t fwx_socket_proto(const fwx_socket_t *s) { return (fwx_proto_t)s->proto; }
fwx_port_t *fwx_socket_port(const fwx_socket_t *s) { return fwx__socket_port(s); }
int fwx_socket_receiving(const fwx_socket_t *s) { return s->recv_op.state != FWX__IDLE; }
int fwx_socket_closed(const fwx_socket_t *s) { return s->closed; }
uintptr_t fwx_socket_recv_key(const fwx_socket_t *s) { return s->recv_op.key; }
int fwx_socket_mark(const fwx_socket_t *s) { return s->owner_mark; }
void fwx_socket_set_mark(fwx_socket_t *s, int on) { s->owner_mark = on != 0; }
int fwx_socket_owned(const fwx_socket_t *s) { return s->owner_owned; }
void fwx_socket_set_owned(fwx_socket_t *s, int on) { s->owner_owned = on != 0; }

int fwx_socket_fd(fwx_socket_t *s) {
  uv_os_fd_t fd;
  if (s->closed || uv_fileno(&s->uv.handle, &fd) != 0) return -1;
  return fd;
}

static int set_int_opt(fwx_socket_t *s, int level, int name, int value) {
  int fd = fwx_socket_fd(s);
  if (fd < 0) return UV_EBADF;
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) return uv_translate_sys_error(errno);
  return 0;
}

/* Options set before the descriptor existed take effect once it does. */
static void apply_deferred_opts(fwx_socket_t *s) {
  int v;
  if (s->has_fd) return;
  if (fwx_socket_fd(s) < 0) return;
  s->has_fd = 1;
  if (s->conn == NULL) return;
  if (s->conn->rcvbuf > 0) {
    v = s->conn->rcvbuf;
    uv_recv_buffer_size(&s->uv.handle, &v);
  }
  if (s->conn->sndbuf > 0) {
    v = s->conn->sndbuf;
    uv_send_buffer_size(&s->uv.handle, &v);
  }
}

/* libuv 1.44 makes a TCP descriptor in uv_tcp_bind and sets SO_REUSEPORT on none, so a
 * socket that asks for it gets a descriptor made here, with the option, and given to
 * libuv before the bind (which then binds that descriptor). */
static int open_reuseport(fwx_socket_t *s, const struct sockaddr *addr) {
  int one = 1, fd, r;
  if (fwx_socket_fd(s) >= 0) return set_int_opt(s, SOL_SOCKET, SO_REUSEPORT, 1);
  fd = socket(addr->sa_family,
              (s->proto == FWX_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    r = uv_translate_sys_error(errno);
    close(fd);
    return r;
  }
  r = s->proto == FWX_UDP ? uv_udp_open(&s->uv.udp, fd) : uv_tcp_open(&s->uv.tcp, fd);
  if (r != 0) close(fd);
  return r;
}

int fwx_socket_bind(fwx_socket_t *s, const struct sockaddr *addr) {
  int r;
  if (s->closed) return FWX_ECLOSED;
  if (s->reuseport && (r = open_reuseport(s, addr)) != 0) return r;
  if (s->proto == FWX_UDP)
    r = uv_udp_bind(&s->uv.udp, addr, s->reuseaddr ? UV_UDP_REUSEADDR : 0);
  else
    r = uv_tcp_bind(&s->uv.tcp, addr, 0);
  if (r == 0) apply_deferred_opts(s);
  return r;
}

static void do_accept(fwx_socket_t *s);

/* The Accept/Connect record, made on first use. */
fwx__conn_t *fwx__socket_conn(fwx_socket_t *s) {
  if (s->conn == NULL) {
    s->conn = calloc(1, sizeof *s->conn);
    if (s->conn == NULL) return NULL;
    fwx__op_init(&s->conn->op, fwx__socket_port(s), FWX_OP_CONNECT);
  }
  return s->conn;
}

int fwx_socket_count_start(fwx_socket_t *s) {
  if (fwx__socket_conn(s) == NULL) return UV_ENOMEM;
  s->counting = 1;
  return 0;
}

int fwx_socket_counts(const fwx_socket_t *s, fwx_socket_counts_t *out) {
  if (!s->counting) {
    memset(out, 0, sizeof *out);
    return 0;
  }
  *out = s->conn->counts;
  return 1;
}

int fwx_socket_set_send_limit(fwx_socket_t *s, size_t bytes) {
  if (bytes == 0 && s->conn == NULL) return 0;
  if (fwx__socket_conn(s) == NULL) return UV_ENOMEM;
  s->conn->send_limit = bytes;
  return 0;
}

/* A TCP socket past its send limit: what libuv holds unwritten is enough. */
static int over_send_limit(const fwx_socket_t *s) {
  return s->conn != NULL && s->conn->send_limit != 0 && s->proto == FWX_TCP &&
         s->uv.stream.write_queue_size >= s->conn->send_limit;
}

/* A receive or a send started (counting); a send's n bytes taken. */
static inline void count_start(fwx_socket_t *s, size_t sent) {
  if (s->counting) {
    s->conn->counts.operations++;
    s->conn->counts.sent += sent;
  }
}

static int conn_pending(const fwx_socket_t *s, fwx_op_kind_t kind) {
  return s->conn != NULL && s->conn->op.state == FWX__PENDING && s->conn->op.kind == kind;
}

static void connection_cb(uv_stream_t *server, int status) {
  fwx_socket_t *s = fwx__container_of(server, fwx_socket_t, uv.stream);
  int accept_pending = conn_pending(s, FWX_OP_ACCEPT);
  if (status < 0) {
    if (accept_pending)
      fwx__op_complete(&s->conn->op, status);
    else if (s->conn != NULL)
      s->conn->status = status;
    return;
  }
  /* Without an Accept pending, libuv keeps the connection and stops watching the
   * listener until uv_accept: the backlog is the backpressure. */
  if (accept_pending)
    do_accept(s);
  else
    s->conn_ready = 1;
}

static void do_accept(fwx_socket_t *s) {
  fwx_socket_t *c;
  int r = fwx_socket_new(fwx__socket_port(s), FWX_TCP, &c);
  if (r != 0) {
    s->conn_ready = 1; /* libuv still holds it; the next Accept tries again */
    fwx__op_complete(&s->conn->op, r);
    return;
  }
  r = uv_accept(&s->uv.stream, &c->uv.stream);
  if (r != 0) {
    fwx_socket_close(c, 0);
    fwx_socket_unref(c);
    fwx__op_complete(&s->conn->op, r);
    return;
  }
  c->has_fd = 1;
  c->connected = 1;
  s->conn->op.out.accepted = c; /* the creator's reference goes with the packet */
  fwx__op_complete(&s->conn->op, 0);
}

int fwx_socket_listen(fwx_socket_t *s, int backlog) {
  int r;
  if (s->closed) return FWX_ECLOSED;
  if (s->proto != FWX_TCP || s->listening) return FWX_ESTATE;
  r = uv_listen(&s->uv.stream, backlog, connection_cb);
  if (r == 0) {
    s->listening = 1;
    apply_deferred_opts(s);
  }
  return r;
}

static int check_start(fwx_socket_t *s, fwx_op_t *op) {
  if (s->closed || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  if (op->state != FWX__IDLE) return FWX_EBUSY;
  return 0;
}

static void start(fwx_socket_t *s, fwx_op_t *op, fwx_op_kind_t kind, uintptr_t key) {
  op->kind = (unsigned char)kind;
  s->refs++;
  fwx__op_start(op, key, s);
}

int fwx_socket_accept(fwx_socket_t *s, uintptr_t key) {
  fwx__conn_t *conn;
  int r;
  if (s->closed || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  if (!s->listening) return FWX_ESTATE;
  if ((conn = fwx__socket_conn(s)) == NULL) return UV_ENOMEM;
  r = check_start(s, &conn->op);
  if (r != 0) return r;
  start(s, &conn->op, FWX_OP_ACCEPT, key);
  if (conn->status != 0) {
    r = conn->status;
    conn->status = 0;
    fwx__op_complete(&conn->op, r);
  } else if (s->conn_ready) {
    s->conn_ready = 0;
    do_accept(s);
  }
  return 0;
}

static void connect_cb(uv_connect_t *req, int status) {
  fwx_socket_t *s = req->data;
  if (status == 0) {
    apply_deferred_opts(s);
    s->connected = 1;
  }
  fwx__op_complete(&s->conn->op, status);
}

int fwx_socket_connect(fwx_socket_t *s, const struct sockaddr *addr, uintptr_t key) {
  fwx__conn_t *conn;
  int r;
  if (s->closed || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  if (s->listening) return FWX_ESTATE;
  if ((conn = fwx__socket_conn(s)) == NULL) return UV_ENOMEM;
  r = check_start(s, &conn->op);
  if (r != 0) return r;
  start(s, &conn->op, FWX_OP_CONNECT, key);
  if (s->proto == FWX_UDP) {
    r = uv_udp_connect(&s->uv.udp, addr);
    if (r == 0) apply_deferred_opts(s);
    fwx__op_complete(&conn->op, r);
    return 0;
  }
  conn->req.data = s;
  r = uv_tcp_connect(&conn->req, &s->uv.tcp, addr, connect_cb);
  if (r != 0) {
    /* Refused at once (unreachable, bad family): still a notification. */
    fwx__op_complete(&conn->op, r);
    return 0;
  }
  apply_deferred_opts(s);
  return 0;
}

int fwx_socket_recv(fwx_socket_t *s, fwx_buffer_t *buf, uintptr_t key) {
  int r = check_start(s, &s->recv_op);
  if (r != 0) return r;
  if (s->listening) return FWX_ESTATE;
  if (fwx__socket_pump(s) != NULL) return FWX_EPUMPING;
  if (buf != NULL) {
    if (fwx_buffer_capacity(buf) == 0) return FWX_EINVAL;
    r = fwx_buffer_writable(buf);
    if (r != 0) return r;
  }
  start(s, &s->recv_op, FWX_OP_RECV, key);
  count_start(s, 0);
  if (buf != NULL) {
    fwx_buffer_ref(buf);
    s->recv_op.buf = buf;
  }
  if (s->proto == FWX_UDP) return fwx__udp_recv(s, &s->recv_op);
  return fwx__reader_recv(&s->uv.stream, &s->recv_op);
}

int fwx_socket_send(fwx_socket_t *s, fwx_buffer_t *buf, const char *data, size_t len,
                    const struct sockaddr *to, int notify, uintptr_t key) {
  fwx__sendop_t *so;
  int written = 0;
  if (s->closed || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  if (s->listening || (to != NULL && s->proto != FWX_UDP)) return FWX_ESTATE;
  if (fwx__socket_pump(s) != NULL) return FWX_EPUMPING;
  if (over_send_limit(s) && !s->shut && !s->uv_closing) {
    so = fwx__sendop_alloc(fwx__socket_port(s));
    if (so == NULL) return UV_ENOMEM;
    so->op.notify = (unsigned char)(notify != 0);
    start(s, &so->op, FWX_OP_SEND, key);
    count_start(s, 0);
    fwx__op_complete(&so->op, UV_ENOBUFS);
    return 0;
  }
  if (s->proto == FWX_TCP && !s->shut && !s->uv_closing) {
    /* The record the rest needs is made sure of before any byte goes: a send that had
     * written part and then found no memory could not say what it did. */
    if (!fwx__sendop_reserve(fwx__socket_port(s))) return UV_ENOMEM;
    written = fwx__stream_try_write(&s->uv.stream, buf != NULL ? fwx_buffer_data(buf) : data,
                                    buf != NULL ? fwx_buffer_size(buf) : len);
    /* All gone at once, and nobody to tell: no record at all. */
    if (!notify && buf == NULL && written >= 0 && (size_t)written == len) {
      count_start(s, len);
      return 0;
    }
  }
  so = fwx__sendop_alloc(fwx__socket_port(s));
  if (so == NULL) return UV_ENOMEM;
  so->op.notify = (unsigned char)(notify != 0);
  start(s, &so->op, FWX_OP_SEND, key);
  count_start(s, buf != NULL ? fwx_buffer_size(buf) : len);
  if (s->conn != NULL && s->conn->deadline != NULL) fwx__deadline_sent(s, &so->op);
  if (buf != NULL) {
    fwx_buffer_ref(buf);
    fwx_buffer_lend(buf);
    so->op.buf = buf;
    so->op.lent = 1;
    data = fwx_buffer_data(buf);
    len = fwx_buffer_size(buf);
  }
  if (s->shut) {
    fwx__op_complete(&so->op, UV_ESHUTDOWN);
    return 0;
  }
  if (s->uv_closing) { /* broken under an earlier write */
    fwx__op_complete(&so->op, s->reader.status < 0 ? s->reader.status : UV_ECANCELED);
    return 0;
  }
  if (s->proto == FWX_UDP) return fwx__udp_send(s, so, data, len, to);
  return fwx__stream_write(&s->uv.stream, &so->req.write, &so->op, data, len, written);
}

static void close_now(fwx_socket_t *s, int abortive) {
  if (s->uv_closing) return;
  s->uv_closing = 1;
  if (s->conn != NULL && s->conn->deadline != NULL) fwx__deadline_close(s);
  if (abortive && s->proto == FWX_TCP && s->has_fd) {
    /* SO_LINGER {1, 0}: close sends RST, as SO_DONTLINGER does for the SDK. */
    struct linger l;
    uv_os_fd_t fd;
    l.l_onoff = 1;
    l.l_linger = 0;
    if (uv_fileno(&s->uv.handle, &fd) == 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  uv_close(&s->uv.handle, close_cb);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  fwx_socket_t *s = req->data;
  (void)status;
  free(req);
  if (s->close_after_shutdown) close_now(s, 0);
  fwx_socket_unref(s);
}

static int start_shutdown(fwx_socket_t *s) {
  uv_shutdown_t *req = malloc(sizeof *req);
  int r;
  if (req == NULL) return UV_ENOMEM;
  req->data = s;
  r = uv_shutdown(req, &s->uv.stream, shutdown_cb);
  if (r != 0) {
    free(req);
    return r;
  }
  s->shut = 1;
  s->refs++;
  return 0;
}

int fwx_socket_shutdown(fwx_socket_t *s) {
  if (s->closed) return FWX_ECLOSED;
  if (s->proto != FWX_TCP || s->listening) return FWX_ESTATE;
  if (fwx__socket_pump(s) != NULL) return FWX_EPUMPING;
  if (s->shut) return 0;
  if (s->uv_closing) return UV_ENOTCONN;
  return start_shutdown(s);
}

/* force: the port is shutting down, nothing waits for the peer. */
static int close_socket(fwx_socket_t *s, int abortive, int force) {
  int broken = s->proto == FWX_TCP && s->reader.status != 0 && s->reader.status != UV_EOF;
  if (fwx__socket_pump(s) != NULL) fwx__pump_cancel(fwx__socket_pump(s)); /* its one 995, before anything closes */
  if (s->closed) {
    if (abortive || force) close_now(s, abortive);
    return 0;
  }
  s->closed = 1;
  if (s->proto == FWX_UDP)
    fwx__udp_cancel(s, UV_ECANCELED);
  else
    fwx__reader_cancel(&s->uv.stream, UV_ECANCELED);
  /* Accepts are ours to end; a pending connect and queued writes are ended by libuv
   * with UV_ECANCELED when the handle closes. */
  if (conn_pending(s, FWX_OP_ACCEPT)) fwx__op_complete(&s->conn->op, UV_ECANCELED);
  if (!abortive && !force && !broken && s->proto == FWX_TCP && s->reader.writes > 0 &&
      !s->uv_closing) {
    /* A graceful close flushes what was already sent, as closesocket's does: the
     * shutdown request runs after the queued writes and then closes the handle. */
    s->close_after_shutdown = 1;
    if (s->shut || start_shutdown(s) == 0) return 0;
  }
  close_now(s, abortive);
  return 0;
}

int fwx_socket_close(fwx_socket_t *s, int abortive) { return close_socket(s, abortive, 0); }

/* CancelIo for the operations that can be taken back alone: a pending receive (the
 * bytes that come later wait for the next one, as if it had not been started) and a
 * pending accept (a connection that comes later waits for the next Accept). A connect
 * or a send cannot: only closing the socket ends them. A receive or accept whose
 * packet is already queued is not pending any more and keeps its result. */
int fwx__socket_cancel_recv(fwx_socket_t *s) {
  if (s->recv_op.state != FWX__PENDING) return 0;
  if (s->proto == FWX_UDP) {
    fwx__udp_cancel_recv(s);
    return 1;
  }
  return fwx__reader_cancel_op(&s->uv.stream, &s->recv_op) == 0;
}

int fwx_socket_cancel_io(fwx_socket_t *s) {
  int n = fwx__socket_cancel_recv(s);
  if (conn_pending(s, FWX_OP_ACCEPT)) {
    fwx__op_complete(&s->conn->op, UV_ECANCELED);
    n++;
  }
  return n;
}

/* The loop's handles that are network sockets: every UDP handle, and the TCP handles
 * whose reader says so (hooked sockets are TCP handles too). */
static fwx_socket_t *socket_of_handle(uv_handle_t *h) {
  if (h->type == UV_UDP) return fwx__container_of(h, fwx_socket_t, uv.handle);
  if (h->type == UV_TCP && ((fwx__reader_t *)h->data)->socket)
    return fwx__container_of(h, fwx_socket_t, uv.handle);
  return NULL;
}

static void shutdown_walk_cb(uv_handle_t *h, void *arg) {
  fwx_socket_t *s = socket_of_handle(h);
  (void)arg;
  /* Closing only queues packets and requests a close; no handle goes away during the
   * walk. */
  if (s != NULL) close_socket(s, 0, 1);
}

void fwx__socket_shutdown_all(fwx_port_t *port) {
  uv_walk(&port->loop, shutdown_walk_cb, NULL);
}

int fwx_socket_name(fwx_socket_t *s, int peer, struct sockaddr_storage *out) {
  int len = sizeof *out;
  if (s->closed) return FWX_ECLOSED;
  memset(out, 0, sizeof *out);
  if (s->proto == FWX_UDP)
    return peer ? uv_udp_getpeername(&s->uv.udp, (struct sockaddr *)out, &len)
                : uv_udp_getsockname(&s->uv.udp, (struct sockaddr *)out, &len);
  return peer ? uv_tcp_getpeername(&s->uv.tcp, (struct sockaddr *)out, &len)
              : uv_tcp_getsockname(&s->uv.tcp, (struct sockaddr *)out, &len);
}

int fwx_socket_setopt(fwx_socket_t *s, fwx_sockopt_t opt, int value) {
  int fd;
  if (s->closed) return FWX_ECLOSED;
  fd = fwx_socket_fd(s);
  switch (opt) {
  case FWX_OPT_NODELAY:
    if (s->proto != FWX_TCP) return FWX_ESTATE;
    return uv_tcp_nodelay(&s->uv.tcp, value != 0);
  case FWX_OPT_KEEPALIVE:
    if (s->proto != FWX_TCP) return FWX_ESTATE;
    /* value: seconds of idle before probes; 1 (true) means libuv's usual 60. */
    return uv_tcp_keepalive(&s->uv.tcp, value != 0, value > 1 ? (unsigned)value : 60);
  case FWX_OPT_REUSEADDR:
    s->reuseaddr = value != 0;
    return fd >= 0 ? set_int_opt(s, SOL_SOCKET, SO_REUSEADDR, value != 0) : 0;
  case FWX_OPT_RCVBUF:
    if (value <= 0) return FWX_EINVAL;
    if (fd < 0) {
      if (fwx__socket_conn(s) == NULL) return UV_ENOMEM;
      s->conn->rcvbuf = value;
      return 0;
    }
    return uv_recv_buffer_size(&s->uv.handle, &value);
  case FWX_OPT_SNDBUF:
    if (value <= 0) return FWX_EINVAL;
    if (fd < 0) {
      if (fwx__socket_conn(s) == NULL) return UV_ENOMEM;
      s->conn->sndbuf = value;
      return 0;
    }
    return uv_send_buffer_size(&s->uv.handle, &value);
  case FWX_OPT_BROADCAST:
    if (s->proto != FWX_UDP) return FWX_ESTATE;
    return uv_udp_set_broadcast(&s->uv.udp, value != 0);
  case FWX_OPT_REUSEPORT:
    s->reuseport = value != 0;
    return fd >= 0 ? set_int_opt(s, SOL_SOCKET, SO_REUSEPORT, value != 0) : 0;
  case FWX_OPT_TTL:
    if (s->proto == FWX_UDP) return uv_udp_set_ttl(&s->uv.udp, value);
    return set_int_opt(s, IPPROTO_IP, IP_TTL, value);
  }
  return FWX_EINVAL;
}

int fwx_socket_getopt(fwx_socket_t *s, fwx_sockopt_t opt, int *value) {
  int fd, level = SOL_SOCKET, name;
  socklen_t len = sizeof *value;
  if (s->closed) return FWX_ECLOSED;
  fd = fwx_socket_fd(s);
  switch (opt) {
  case FWX_OPT_NODELAY: level = IPPROTO_TCP; name = TCP_NODELAY; break;
  case FWX_OPT_KEEPALIVE: name = SO_KEEPALIVE; break;
  case FWX_OPT_REUSEADDR: name = SO_REUSEADDR; break;
  case FWX_OPT_RCVBUF: name = SO_RCVBUF; break;
  case FWX_OPT_SNDBUF: name = SO_SNDBUF; break;
  case FWX_OPT_BROADCAST: name = SO_BROADCAST; break;
  case FWX_OPT_TTL: level = IPPROTO_IP; name = IP_TTL; break;
  case FWX_OPT_REUSEPORT: name = SO_REUSEPORT; break;
  default: return FWX_EINVAL;
  }
  if ((opt == FWX_OPT_NODELAY || opt == FWX_OPT_KEEPALIVE) && s->proto != FWX_TCP)
    return FWX_ESTATE;
  if (fd < 0) {
    /* No descriptor yet: report what will be applied. */
    if (opt == FWX_OPT_REUSEADDR) *value = s->reuseaddr;
    else if (opt == FWX_OPT_REUSEPORT) *value = s->reuseport;
    else if (opt == FWX_OPT_RCVBUF) *value = s->conn != NULL ? s->conn->rcvbuf : 0;
    else if (opt == FWX_OPT_SNDBUF) *value = s->conn != NULL ? s->conn->sndbuf : 0;
    else return UV_EBADF;
    return 0;
  }
  if (getsockopt(fd, level, name, value, &len) != 0) return uv_translate_sys_error(errno);
  return 0;
}
