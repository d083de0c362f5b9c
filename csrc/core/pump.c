/* pump.c: the core pump, the SDK's "kernel mode" pumping. A connection with no data
 * filter is moved by the core alone: bytes go both ways between two connected TCP
 * sockets with no caller code on the path and, on Linux, without passing through user
 * space (splice(2) from one socket into a pipe, and from the pipe into the other
 * socket), until both directions have ended or one fails. Then one FWX_OP_PUMP packet.
 *
 * Descriptors. libuv owns each socket's descriptor in its uv_tcp_t and allows one
 * watcher per descriptor in a loop. The pump stops libuv's reading and watches a dup()
 * of each descriptor with a uv_poll_t instead: epoll registers (descriptor, file
 * description) pairs, so the duplicate is watched while libuv keeps the original.
 * Closing a poll removes its registration at once, so the dups can be closed when the
 * pump ends and the sockets go back to their owner as they were.
 *
 * Backpressure. A direction holds at most one pipe (64 KiB) or, on the read/write
 * path, one buffer of the same size. While that is full its source is not watched for
 * readable, so the kernel's socket buffers and then the peer's TCP window push back:
 * the memory of a pump is bounded whatever its peers do.
 *
 * Order. Bytes the source's reader holds unclaimed (libuv read them before the pump
 * started) are written before anything the pump reads. Sends libuv still has queued on
 * a socket go out before the pump writes to it: a zero-byte uv_write is queued behind
 * them, and the pump writes to that socket (or shuts it down) once it completes.
 *
 * Ends. An end of stream from one side is passed on as shutdown(SHUT_WR) of the other
 * once everything read before it is written; the other direction goes on. Both ended:
 * success. An error (reset, EPIPE) ends the pump at once with it; closing either
 * socket ends it with 995 (fwx__pump_cancel, from socket.c's close). Bytes read but not
 * yet written are then dropped; the counts say what was written.
 *
 * Idle limit (fwx_pump_idle). A pump given one ends with UV_ETIMEDOUT once no byte has
 * moved either way for that long: a connection, not a direction, is idle, so a long
 * download does not time out its silent upload side (Envoy's tcp_proxy idle_timeout,
 * nginx's proxy_timeout). Moving bytes only notes the loop's time; the timer is armed
 * for the whole limit and, when it fires early, re-armed for what is left, so a busy
 * pump touches its timer once per limit, not once per exchange. */
#include "fwx-int.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* the port ignores SIGPIPE anyway */
#endif

/* The read/write path's buffer per direction: the same bound as a pipe's default
 * capacity and as a reader's chunk. */
#define FWX__PUMP_BUFFER FWX__READ_CHUNK
/* Exchanges (a fill and a drain) one event may make before the loop looks at other
 * handles; a poll that is still ready brings the pump back on the next turn. */
#define FWX__PUMP_ROUNDS 16

typedef struct fwx__pump fwx__pump_t;

/* One direction: from sock[d] to sock[1 - d]. */
typedef struct fwx__pump_dir {
  int pipe[2];            /* splice: source -> pipe[1], pipe[0] -> destination;
                             -1 until the first bytes come */
  size_t in_pipe;         /* bytes in the pipe */
  size_t pipe_cap;
  char *buf;              /* the read/write path: bytes read, not yet written */
  size_t buf_cap, buf_off, buf_len;
  fwx_buffer_t *held;     /* the source reader's unclaimed chunk: written first */
  size_t held_off;
  uint64_t bytes;         /* written to the destination */
  unsigned eof : 1;       /* the source sent its FIN */
  unsigned shut : 1;      /* the destination's sending side is shut */
  unsigned full : 1;      /* the pipe took nothing although it has room (out of pipe
                             slots): read again after a drain */
  unsigned copy : 1;      /* read/write through buf instead of splice */
  unsigned src_wait : 1;  /* the source ran dry: wait for readable */
  unsigned dst_wait : 1;  /* the destination is full: wait for writable */
} fwx__pump_dir_t;

struct fwx__pump {
  fwx_op_t *op;           /* the one packet; NULL once completed */
  fwx_socket_t *sock[2];  /* a, b: one reference each, until the pump is freed */
  int fd[2];              /* dups of their descriptors, watched by poll[] */
  uv_poll_t poll[2];
  int events[2];          /* what each poll watches now */
  uv_write_t barrier[2];  /* zero-byte writes behind the sends libuv had queued */
  unsigned char barrier_pending[2];
  fwx__pump_dir_t dir[2]; /* 0: a -> b, 1: b -> a */
  int refs;               /* running, each open poll, each pending barrier, the idle
                             timer once made */
  uv_timer_t idle;        /* made by the first fwx_pump_idle */
  uint64_t idle_ms;       /* the idle limit; 0: none */
  uint64_t active_at;     /* loop time bytes last moved (or the limit was set) */
  unsigned done : 1;
  unsigned has_idle : 1;  /* idle was initialised: it is closed with the pump */
};

static int use_splice = 1;

void fwx_pump_use_splice(int on) { use_splice = on != 0; }

int fwx_socket_pumping(const fwx_socket_t *s) { return fwx__socket_pump(s) != NULL; }

static void pump_unref(fwx__pump_t *p) {
  int i;
  if (--p->refs > 0) return;
  for (i = 0; i < 2; i++)
    if (p->sock[i] != NULL) fwx_socket_unref(p->sock[i]);
  free(p);
}

static int sys_error(void) { return uv_translate_sys_error(errno); }

/* The error a socket has pending (a reset that arrived), or fallback. */
static int socket_error(int fd, int fallback) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
    return uv_translate_sys_error(err);
  return fallback;
}

static int dir_pending(const fwx__pump_dir_t *dir) {
  return dir->held != NULL || dir->in_pipe > 0 || dir->buf_len > dir->buf_off;
}

/* Room for more bytes from the source. */
static size_t dir_room(const fwx__pump_dir_t *dir) {
  if (dir->full) return 0;
  if (dir->copy) return dir->buf == NULL ? FWX__PUMP_BUFFER : dir->buf_cap - (dir->buf_len - dir->buf_off);
  return dir->pipe[0] < 0 ? FWX__PUMP_BUFFER : dir->pipe_cap - dir->in_pipe;
}

static int dir_done(const fwx__pump_dir_t *dir) {
  return dir->eof && dir->shut && !dir_pending(dir);
}

/* Record an error of socket i as its reader would have (a later Recv reports it), and
 * return it. */
static int failed(fwx__pump_t *p, int i, int err) {
  fwx__reader_t *r = &p->sock[i]->reader;
  if (err != UV_ESHUTDOWN && (r->status == 0 || r->status == UV_EOF)) r->status = err;
  return err;
}

/* send() what it takes; 0 when the socket is full, or a negative error. */
static ssize_t send_some(int fd, const char *data, size_t len) {
  ssize_t n;
  do n = send(fd, data, len, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n >= 0) return n;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  return sys_error();
}

static void close_pipe(fwx__pump_dir_t *dir) {
  if (dir->pipe[0] >= 0) close(dir->pipe[0]);
  if (dir->pipe[1] >= 0) close(dir->pipe[1]);
  dir->pipe[0] = dir->pipe[1] = -1;
  dir->in_pipe = 0;
}

/* Leave splice for the read/write path: what the pipe holds moves into the buffer
 * first, so the order stays. */
static int to_copy(fwx__pump_dir_t *dir) {
  size_t cap = dir->in_pipe > FWX__PUMP_BUFFER ? dir->in_pipe : FWX__PUMP_BUFFER;
  dir->copy = 1;
  dir->full = 0;
  if (dir->buf == NULL) {
    dir->buf = malloc(cap);
    if (dir->buf == NULL) return UV_ENOMEM;
    dir->buf_cap = cap;
  }
  while (dir->in_pipe > 0) {
    ssize_t n = read(dir->pipe[0], dir->buf + dir->buf_len, dir->in_pipe);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? sys_error() : UV_EIO;
    dir->buf_len += (size_t)n;
    dir->in_pipe -= (size_t)n;
  }
  close_pipe(dir);
  return 0;
}

#ifdef __linux__
/* The pipe of a direction, made when its first bytes come: an idle pump holds no
 * pipes. A kernel that refuses one leaves the read/write path. */
static int open_pipe(fwx__pump_dir_t *dir) {
  int cap;
  if (pipe2(dir->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    dir->pipe[0] = dir->pipe[1] = -1;
    return to_copy(dir);
  }
  cap = fcntl(dir->pipe[1], F_GETPIPE_SZ);
  dir->pipe_cap = cap > 0 ? (size_t)cap : 4096;
  return 0;
}
#endif

/* Write what direction d holds to its destination: the held chunk, then the pipe or
 * the buffer. Returns the bytes written or a negative error; sets dst_wait when the
 * destination took less than offered (its send buffer is full). */
static ssize_t drain(fwx__pump_t *p, int d) {
  fwx__pump_dir_t *dir = &p->dir[d];
  int fd = p->fd[1 - d];
  size_t total = 0, len;
  ssize_t n;

  if (dir->shut) return UV_ESHUTDOWN; /* its owner shut it before the pump began */
  if (dir->held != NULL) {
    len = fwx_buffer_size(dir->held) - dir->held_off;
    n = send_some(fd, fwx_buffer_data(dir->held) + dir->held_off, len);
    if (n < 0) return n;
    dir->held_off += (size_t)n;
    total += (size_t)n;
    if ((size_t)n < len) {
      dir->dst_wait = 1;
      goto out;
    }
    fwx_buffer_unref(dir->held);
    dir->held = NULL;
  }
#ifdef __linux__
  if (dir->in_pipe > 0) {
    do n = splice(dir->pipe[0], NULL, fd, NULL, dir->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    while (n < 0 && errno == EINTR);
    if (n >= 0) {
      dir->in_pipe -= (size_t)n;
      total += (size_t)n;
      if (dir->in_pipe > 0) dir->dst_wait = 1;
      goto out;
    }
    if (errno == EAGAIN) {
      dir->dst_wait = 1;
      goto out;
    }
    if (errno != EINVAL && errno != ENOSYS) return sys_error();
    n = to_copy(dir); /* this destination cannot be spliced into */
    if (n < 0) return n;
  }
#endif
  if (dir->buf_len > dir->buf_off) {
    len = dir->buf_len - dir->buf_off;
    n = send_some(fd, dir->buf + dir->buf_off, len);
    if (n < 0) return n;
    dir->buf_off += (size_t)n;
    total += (size_t)n;
    if (dir->buf_off == dir->buf_len)
      dir->buf_off = dir->buf_len = 0;
    else
      dir->dst_wait = 1;
  }
out:
  dir->bytes += total;
  fwx__socket_count_moved(p->sock[d], p->sock[1 - d], total);
  return (ssize_t)total;
}

/* Read what the source of direction d has into the pipe or the buffer. Returns the
 * bytes read or a negative error; sets eof at the end of stream, src_wait when the
 * source had less than there was room for, full when no more fits. */
static ssize_t fill(fwx__pump_t *p, int d) {
  fwx__pump_dir_t *dir = &p->dir[d];
  int fd = p->fd[d], r;
  size_t room;
  ssize_t n;

#ifdef __linux__
  if (!dir->copy && dir->pipe[0] < 0) {
    r = open_pipe(dir);
    if (r < 0) return r;
  }
  if (!dir->copy) {
    room = dir->pipe_cap - dir->in_pipe;
    if (room == 0) return 0;
    do n = splice(fd, NULL, dir->pipe[1], NULL, room, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
      dir->in_pipe += (size_t)n;
      if ((size_t)n < room) dir->src_wait = 1;
      return n;
    }
    if (n == 0) {
      dir->eof = 1;
      return 0;
    }
    if (errno == EAGAIN) {
      /* The socket is dry, or the pipe is out of slots (each holds one segment, so
       * a pipe can be "full" well short of its capacity): with bytes in the pipe,
       * wait for a drain rather than for readable, which may already be true. */
      if (dir->in_pipe > 0)
        dir->full = 1;
      else
        dir->src_wait = 1;
      return 0;
    }
    if (errno != EINVAL && errno != ENOSYS) return sys_error();
    r = to_copy(dir); /* this source cannot be spliced from */
    if (r < 0) return r;
  }
#else
  (void)r;
  dir->copy = 1;
#endif
  if (dir->buf == NULL) {
    dir->buf = malloc(FWX__PUMP_BUFFER);
    if (dir->buf == NULL) return UV_ENOMEM;
    dir->buf_cap = FWX__PUMP_BUFFER;
  }
  if (dir->buf_off > 0 && dir->buf_len == dir->buf_cap) {
    memmove(dir->buf, dir->buf + dir->buf_off, dir->buf_len - dir->buf_off);
    dir->buf_len -= dir->buf_off;
    dir->buf_off = 0;
  }
  room = dir->buf_cap - dir->buf_len;
  if (room == 0) return 0;
  do n = recv(fd, dir->buf + dir->buf_len, room, 0); while (n < 0 && errno == EINTR);
  if (n > 0) {
    dir->buf_len += (size_t)n;
    if ((size_t)n < room) dir->src_wait = 1;
    return n;
  }
  if (n == 0) {
    dir->eof = 1;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    dir->src_wait = 1;
    return 0;
  }
  return sys_error();
}

/* Move bytes in direction d while both ends take them, up to FWX__PUMP_ROUNDS
 * exchanges, then pass an end of stream on. Returns 0 or a negative error. */
static int dir_run(fwx__pump_t *p, int d) {
  fwx__pump_dir_t *dir = &p->dir[d];
  fwx_socket_t *src = p->sock[d], *dst = p->sock[1 - d];
  int round, writable = !p->barrier_pending[1 - d];
  ssize_t n;

  for (round = 0; round < FWX__PUMP_ROUNDS; round++) {
    int moved = 0;
    if (writable && !dir->dst_wait && dir_pending(dir)) {
      n = drain(p, d);
      if (n < 0) return failed(p, 1 - d, (int)n);
      if (n > 0) {
        moved = 1;
        dir->full = 0;
      }
    }
    if (!dir->eof && !dir->src_wait && dir_room(dir) > 0) {
      n = fill(p, d);
      if (n < 0) return failed(p, d, (int)n);
      if (n > 0) moved = 1;
      if (dir->eof && src->reader.status == 0) src->reader.status = UV_EOF;
    }
    if (!moved) break;
  }
  if (round > 0) p->active_at = uv_now(p->poll[d].loop); /* bytes moved: not idle */
  if (dir->eof && !dir->shut && writable && !dir_pending(dir)) {
    /* Everything before the FIN is written: pass it on, after those bytes. */
    if (shutdown(p->fd[1 - d], SHUT_WR) != 0) return failed(p, 1 - d, socket_error(p->fd[1 - d], sys_error()));
    dir->shut = 1;
    dst->shut = 1; /* a later Send reports WSAESHUTDOWN, as after Shutdown() */
  }
  return 0;
}

static void finish(fwx__pump_t *p, int status);
static void poll_cb(uv_poll_t *h, int status, int events);

/* Watch each socket for what its two directions wait for: readable while the
 * direction it feeds has room, writable while the direction into it has bytes. Polls
 * are level-triggered, so a direction that stopped at the round limit is called back
 * at once. */
static int set_polls(fwx__pump_t *p) {
  int i, r, ev;
  for (i = 0; i < 2; i++) {
    const fwx__pump_dir_t *in = &p->dir[i], *out = &p->dir[1 - i];
    ev = 0;
    if (!in->eof && dir_room(in) > 0) ev |= UV_READABLE;
    if (dir_pending(out) && !p->barrier_pending[i]) ev |= UV_WRITABLE;
    if (ev == p->events[i]) continue;
    r = ev != 0 ? uv_poll_start(&p->poll[i], ev, poll_cb) : uv_poll_stop(&p->poll[i]);
    if (r != 0) return r;
    p->events[i] = ev;
  }
  return 0;
}

static void pump_run(fwx__pump_t *p) {
  int d, r;
  for (d = 0; d < 2; d++) {
    r = dir_run(p, d);
    if (r < 0) {
      finish(p, r);
      return;
    }
  }
  if (dir_done(&p->dir[0]) && dir_done(&p->dir[1])) {
    finish(p, 0);
    return;
  }
  r = set_polls(p);
  if (r < 0) finish(p, r);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  fwx__pump_t *p = h->data;
  int i = h == &p->poll[0] ? 0 : 1, err;
  if (p->done) return;
  if (status < 0) {
    /* POLLERR: libuv has stopped this poll. The socket says what happened (a reset);
     * if it says nothing, the next system calls will. */
    p->events[i] = 0;
    err = socket_error(p->fd[i], 0);
    if (err != 0) {
      finish(p, failed(p, i, err));
      return;
    }
    events = UV_READABLE | UV_WRITABLE;
  }
  if (events == 0) events = UV_READABLE | UV_WRITABLE; /* POLLHUP alone: look */
  if (events & UV_READABLE) p->dir[i].src_wait = 0;
  if (events & UV_WRITABLE) p->dir[1 - i].dst_wait = 0;
  pump_run(p);
}

static void barrier_cb(uv_write_t *req, int status) {
  fwx__pump_t *p = req->data;
  int i = req == &p->barrier[0] ? 0 : 1;
  fwx__reader_t *r = &p->sock[i]->reader;
  r->writes--;
  p->barrier_pending[i] = 0;
  if (!p->done) {
    if (status < 0)
      /* An earlier send failed and the socket closed its handle (socket.c's
       * write_failed): the reader holds the reason. */
      finish(p, r->status < 0 && r->status != UV_EOF ? r->status : status);
    else
      pump_run(p);
  }
  pump_unref(p);
}

static void poll_close_cb(uv_handle_t *h) { pump_unref(h->data); }

/* The idle limit's timer: the pump ends if nothing moved for the whole limit, and the
 * timer waits out the rest of it if something did. */
static void idle_cb(uv_timer_t *t) {
  fwx__pump_t *p = t->data;
  uint64_t now = uv_now(t->loop), due = p->active_at + p->idle_ms;
  if (p->done || p->idle_ms == 0) return;
  if (now >= due)
    finish(p, UV_ETIMEDOUT);
  else
    uv_timer_start(&p->idle, idle_cb, due - now, 0);
}

/* Give a direction's resources back. Held bytes nothing was written of yet return to
 * the source's reader, so a later Recv still gets them. */
static void dir_release(fwx__pump_t *p, int d) {
  fwx__pump_dir_t *dir = &p->dir[d];
  fwx__reader_t *r = &p->sock[d]->reader;
  close_pipe(dir);
  free(dir->buf);
  dir->buf = NULL;
  dir->buf_off = dir->buf_len = 0;
  if (dir->held != NULL) {
    if (r->chunk == NULL && !p->sock[d]->closed) {
      r->chunk = dir->held;
      r->chunk_off = dir->held_off;
    } else {
      fwx_buffer_unref(dir->held);
    }
    dir->held = NULL;
  }
}

static void finish(fwx__pump_t *p, int status) {
  fwx_op_t *op = p->op;
  int i;
  if (p->done) return;
  p->done = 1;
  for (i = 0; i < 2; i++) {
    p->sock[i]->pumping = 0;
    p->sock[i]->conn->pump = NULL;
    /* uv_close stops the poll, which removes the dup's epoll registration at once:
     * the dup can close now. */
    uv_close((uv_handle_t *)&p->poll[i], poll_close_cb);
    close(p->fd[i]);
    p->fd[i] = -1;
    dir_release(p, i);
  }
  if (p->has_idle) uv_close((uv_handle_t *)&p->idle, poll_close_cb);
  op->bytes = (size_t)p->dir[0].bytes;
  op->out.back = (size_t)p->dir[1].bytes;
  p->op = NULL;
  fwx__op_complete(op, status);
  pump_unref(p); /* running */
}

void fwx__pump_cancel(fwx__pump_t *p) { finish(p, UV_ECANCELED); }

int fwx_pump_idle(fwx_socket_t *s, uint64_t ms) {
  fwx__pump_t *p = fwx__socket_pump(s);
  if (p == NULL || p->done) return 0;
  if (!p->has_idle) {
    if (ms == 0) return 1;
    uv_timer_init(p->poll[0].loop, &p->idle); /* cannot fail */
    p->idle.data = p;
    p->has_idle = 1;
    p->refs++; /* its close */
  }
  p->idle_ms = ms;
  if (ms == 0) {
    uv_timer_stop(&p->idle);
    return 1;
  }
  uv_update_time(p->poll[0].loop); /* count from now, not from the loop's last turn */
  p->active_at = uv_now(p->poll[0].loop);
  uv_timer_start(&p->idle, idle_cb, ms, 0);
  return 1;
}

static int check_pumpable(fwx_socket_t *s) {
  if (s->closed || fwx__socket_port(s)->closing) return FWX_ECLOSED;
  if (s->proto != FWX_TCP || s->listening || !s->connected) return FWX_ESTATE;
  if (fwx__socket_pump(s) != NULL) return FWX_EPUMPING;
  if (s->reader.op != NULL) return FWX_EBUSY;
  return 0;
}

/* An error a socket already carries (a reset its reader saw, a send that broke it):
 * the pump ends with it at once, as a notification. */
static int sticky_error(const fwx_socket_t *s) {
  int st = s->reader.status;
  if (st < 0 && st != UV_EOF) return st;
  if (s->uv_closing) return UV_ECANCELED;
  return 0;
}

int fwx_pump_check(fwx_socket_t *a, fwx_socket_t *b) {
  int r;
  if (a == b || fwx__socket_port(a) != fwx__socket_port(b)) return FWX_EINVAL;
  if ((r = check_pumpable(a)) != 0) return r;
  return check_pumpable(b);
}

int fwx_pump_start(fwx_socket_t *a, fwx_socket_t *b, uintptr_t key) {
  static char nothing;
  fwx_socket_t *s[2];
  fwx_port_t *port = fwx__socket_port(a);
  fwx__pump_t *p;
  fwx_op_t *op;
  uv_os_fd_t fd;
  uv_buf_t empty = uv_buf_init(&nothing, 0);
  int i, r, err;

  s[0] = a;
  s[1] = b;
  if ((r = fwx_pump_check(a, b)) != 0) return r;
  /* A socket keeps its pump in its connect record, made now if it has none (an
   * accepted connection), so that idle connections do not pay for the pointer. */
  for (i = 0; i < 2; i++)
    if (fwx__socket_conn(s[i]) == NULL) return UV_ENOMEM;
  op = fwx__op_alloc(port, FWX_OP_PUMP);
  if (op == NULL) return UV_ENOMEM;
  err = sticky_error(a);
  if (err == 0) err = sticky_error(b);
  if (err != 0) {
    fwx__op_start(op, key, NULL);
    fwx__op_complete(op, err);
    return 0;
  }

  p = calloc(1, sizeof *p);
  if (p == NULL) {
    free(op);
    return UV_ENOMEM;
  }
  p->op = op;
  for (i = 0; i < 2; i++) {
    p->fd[i] = -1;
    p->dir[i].pipe[0] = p->dir[i].pipe[1] = -1;
    p->dir[i].copy = !use_splice;
  }
  for (i = 0; i < 2; i++) {
    r = uv_fileno(&s[i]->uv.handle, &fd);
    if (r == 0) {
      p->fd[i] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (p->fd[i] < 0) r = sys_error();
    }
    if (r == 0) r = uv_poll_init(&port->loop, &p->poll[i], p->fd[i]);
    if (r != 0) goto fail;
    p->poll[i].data = p;
  }

  /* Nothing can fail past this point: the pump runs. */
  fwx__op_start(op, key, NULL);
  p->refs = 3; /* running and the two polls */
  for (i = 0; i < 2; i++) {
    fwx__reader_t *rd = &s[i]->reader;
    fwx_socket_ref(s[i]);
    p->sock[i] = s[i];
    s[i]->conn->pump = p;
    s[i]->pumping = 1;
    if (rd->reading) {
      uv_read_stop(&s[i]->uv.stream);
      rd->reading = 0;
    }
    p->dir[i].held = rd->chunk;
    p->dir[i].held_off = rd->chunk_off;
    rd->chunk = NULL;
    p->dir[i].eof = rd->status == UV_EOF;
    p->dir[1 - i].shut = s[i]->shut;
    if (rd->writes > 0) {
      /* Counted as a send in flight: a send that fails under it then closes the
       * handle (socket.c's write_failed), which ends the barrier, and the pump. */
      p->barrier[i].data = p;
      if (uv_write(&p->barrier[i], &s[i]->uv.stream, &empty, 1, barrier_cb) == 0) {
        rd->writes++;
        p->barrier_pending[i] = 1;
        p->refs++;
      }
    }
  }
  pump_run(p);
  return 0;

fail:
  /* The environment refused a descriptor (EMFILE): a notification, as an Accept's
   * would be. A poll already made is closed first; its close callback frees the pump. */
  p->refs = 1;
  for (i = 0; i < 2; i++) {
    if (p->poll[i].data == p) {
      p->refs++;
      uv_close((uv_handle_t *)&p->poll[i], poll_close_cb);
    }
    if (p->fd[i] >= 0) close(p->fd[i]);
  }
  pump_unref(p);
  fwx__op_start(op, key, NULL);
  fwx__op_complete(op, r);
  return 0;
}
