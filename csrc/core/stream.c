/* stream.c: one-shot receives and ordered sends on a libuv stream (TCP sockets and
 * hooked pipes).
 *
 * The SDK's Recv is one-shot; libuv reads continuously. Re-arming per receive would
 * cost an epoll_ctl each time, so reading stays armed while receives keep coming, and
 * a chunk that arrives with none pending is put off one poll (see alloc_cb), then held
 * (one per stream) with reading paused until a receive claims it: the kernel's buffer
 * does the backpressure. */
#include "fwx-int.h"
#include <errno.h>
#include <unistd.h>

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

void fwx__reader_init(fwx__reader_t *r, uv_stream_t *stream, int socket) {
  memset(r, 0, sizeof *r);
  r->socket = socket != 0;
  stream->data = r;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  fwx__reader_t *r = h->data;
  fwx_op_t *op = r->op;
  (void)hint;
  if (op != NULL && op->buf != NULL) {
    /* A receive into the caller's buffer: read straight into it, no copy. */
    *buf = uv_buf_init(fwx_buffer_data(op->buf), (unsigned)fwx_buffer_capacity(op->buf));
    r->refused = 0;
  } else if (op == NULL && !r->put_off) {
    /* No receive pending. libuv reads on while a read fills its buffer (bulk), and
     * this read would become the held chunk: a copy in, a copy out when a receive
     * claims it, and a pause and resume of reading (an epoll_ctl each). Most handlers
     * start the next receive as soon as they have the last, so put the read off to
     * the next poll, which reads straight into that receive; only a read that still
     * finds none then is held. */
    r->put_off = 1;
    r->refused = 1;
    *buf = uv_buf_init(NULL, 0);
  } else {
    /* A socket's read the budget refuses is queued (deferred.c), a pipe's ages. */
    size_t room;
    int refused;
    char *p = fwx__arena_tail(h->loop->data, &room, r->socket ? NULL : &r->defer_age, &refused);
    *buf = uv_buf_init(p, (unsigned)room);
    r->refused = refused != 0;
    if (refused && r->socket) fwx__deferred_add((uv_stream_t *)h);
  }
}

static void pause_reading(uv_stream_t *stream) {
  fwx__reader_t *r = stream->data;
  if (r->reading) {
    uv_read_stop(stream);
    r->reading = 0;
  }
}

static int resume_reading(uv_stream_t *stream) {
  fwx__reader_t *r = stream->data;
  int rc;
  if (r->reading || r->status != 0) return 0;
  rc = uv_read_start(stream, alloc_cb, read_cb);
  if (rc == 0) r->reading = 1;
  return rc;
}

/* End the pending receive with status and no data (fwx__op_end_recv). */
static void end_recv(fwx__reader_t *r, fwx_op_t *op, int status) {
  if (r->op == op) r->op = NULL;
  fwx__op_end_recv(op, status);
}

/* Give op up to its buffer's worth of bytes from p; a service receive gets exactly n. */
static int fill_recv(fwx_op_t *op, const char *p, size_t n, size_t *taken) {
  if (op->buf != NULL) {
    size_t cap = fwx_buffer_capacity(op->buf);
    if (n > cap) n = cap;
    fwx__buffer_fill(op->buf, p, n);
    fwx_buffer_unlend(op->buf);
  } else {
    op->buf = fwx_buffer_new(n);
    if (op->buf == NULL) return UV_ENOMEM;
    fwx__buffer_fill(op->buf, p, n);
  }
  op->bytes = n;
  *taken = n;
  return 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  fwx__reader_t *r = stream->data;
  fwx_op_t *op = r->op;
  size_t taken;
  int rc;

  if (nread == 0) return; /* EAGAIN */
  if (nread == UV_ENOBUFS && r->refused) return; /* read later (deferred.c, or next poll) */
  if (nread < 0) {
    r->status = (int)nread;
    pause_reading(stream);
    if (op != NULL) end_recv(r, op, (int)nread);
    return;
  }
  if (op != NULL) {
    r->op = NULL;
    if (op->buf == NULL) {
      /* A service receive: the packet points at the bytes where they were read. */
      fwx__arena_commit(stream->loop->data, buf->base, (size_t)nread, op);
      op->bytes = (size_t)nread;
      rc = 0;
    } else {
      rc = fill_recv(op, buf->base, (size_t)nread, &taken);
    }
    fwx__op_complete(op, rc);
    return;
  }
  /* Nobody asked yet: hold the chunk and let the kernel buffer the rest. */
  assert(r->chunk == NULL);
  r->chunk = fwx_buffer_new((size_t)nread);
  if (r->chunk == NULL) {
    r->status = UV_ENOMEM;
  } else {
    fwx__buffer_fill(r->chunk, buf->base, (size_t)nread);
    r->chunk_off = 0;
  }
  pause_reading(stream);
}

/* One read of a reading stream, as libuv's own would go, outside the poll (deferred.c).
 * Returns -1 when the budget refuses it again, 0 otherwise (read, ended, or nothing
 * there any more). */
int fwx__reader_read_now(uv_stream_t *stream) {
  fwx__reader_t *r = stream->data;
  uv_os_fd_t fd;
  uv_buf_t buf;
  ssize_t n;

  /* Only for a pending receive: one with none is the poll's to put off or hold. */
  if (!r->reading || r->op == NULL || uv_fileno((uv_handle_t *)stream, &fd) != 0) return 0;
  alloc_cb((uv_handle_t *)stream, FWX__READ_CHUNK, &buf);
  if (buf.len == 0) {
    if (r->refused) return -1;
    read_cb(stream, UV_ENOBUFS, &buf); /* out of memory: as libuv reports it */
    return 0;
  }
  do
    n = read(fd, buf.base, buf.len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  read_cb(stream, n > 0 ? n : n == 0 ? UV_EOF : uv_translate_sys_error(errno), &buf);
  return 0;
}

int fwx__reader_recv(uv_stream_t *stream, fwx_op_t *op) {
  fwx__reader_t *r = stream->data;
  int rc;

  assert(r->op == NULL);
  r->put_off = 0;
  if (op->buf != NULL) fwx_buffer_lend(op->buf);
  if (r->chunk != NULL) {
    size_t avail = fwx_buffer_size(r->chunk) - r->chunk_off, taken = avail;
    if (op->buf == NULL && r->chunk_off == 0) {
      op->buf = r->chunk; /* hand the held chunk over whole */
      op->bytes = avail;
      r->chunk = NULL;
      rc = 0;
    } else {
      rc = fill_recv(op, fwx_buffer_data(r->chunk) + r->chunk_off, avail, &taken);
      r->chunk_off += (uint32_t)taken;
      if (r->chunk_off == fwx_buffer_size(r->chunk)) {
        fwx_buffer_unref(r->chunk);
        r->chunk = NULL;
      }
    }
    fwx__op_complete(op, rc);
    if (r->chunk == NULL) {
      rc = resume_reading(stream);
      if (rc != 0) r->status = rc; /* the next receive reports it */
    }
    return 0;
  }
  r->op = op;
  if (r->status != 0) {
    end_recv(r, op, r->status);
    return 0;
  }
  rc = resume_reading(stream);
  if (rc != 0) end_recv(r, op, rc); /* e.g. not connected: a notification, not a raise */
  return 0;
}

void fwx__reader_cancel(uv_stream_t *stream, int status) {
  fwx__reader_t *r = stream->data;
  if (r->op != NULL) end_recv(r, r->op, status);
  if (r->chunk != NULL) {
    fwx_buffer_unref(r->chunk);
    r->chunk = NULL;
  }
  pause_reading(stream);
  if (r->status == 0) r->status = status;
}

/* Cancel one receive (an overlapped's), leaving the stream's state as it is. */
int fwx__reader_cancel_op(uv_stream_t *stream, fwx_op_t *op) {
  fwx__reader_t *r = stream->data;
  if (r->op != op) return UV_ENOENT;
  end_recv(r, op, UV_ECANCELED);
  return 0;
}

static void write_cb(uv_write_t *req, int status) {
  fwx_op_t *op = req->data;
  fwx__reader_t *r = req->handle->data;
  r->writes--;
  fwx__op_complete(op, status);
  if (status < 0 && status != UV_ECANCELED && r->socket) fwx__socket_write_failed(req->handle, status);
}

/* Write what the kernel takes at once, when nothing is queued before it: uv_try_write
 * first, since libuv 1.44's uv_write costs an epoll_ctl per call. Returns the bytes
 * written (0 when writes are queued, or the kernel takes none now) or a libuv error. */
int fwx__stream_try_write(uv_stream_t *stream, const char *data, size_t len) {
  fwx__reader_t *r = stream->data;
  uv_buf_t b;
  int n;
  if (r->writes > 0 || len == 0) return 0;
  b = uv_buf_init((char *)data, (unsigned)len);
  n = uv_try_write(stream, &b, 1);
  return n == UV_EAGAIN || n == UV_ENOSYS ? 0 : n;
}

/* Write data/len (which op->buf holds, or which the caller only lends for this call),
 * of which fwx__stream_try_write already wrote `written` (or failed with it): queue
 * the rest, copying borrowed bytes only when they must outlive the call. */
int fwx__stream_write(uv_stream_t *stream, uv_write_t *req, fwx_op_t *op,
                      const char *data, size_t len, int written) {
  fwx__reader_t *r = stream->data;
  uv_buf_t b;
  int rc;
  size_t n;

  if (written < 0) {
    fwx__op_complete(op, written);
    return 0;
  }
  n = (size_t)written;
  op->bytes = len;
  if (n == len && r->writes == 0) {
    fwx__op_complete(op, 0);
    return 0;
  }
  if (op->buf == NULL) {
    op->buf = fwx_buffer_const(data + n, len - n);
    if (op->buf == NULL) {
      fwx__op_complete(op, UV_ENOMEM);
      return 0;
    }
    fwx_buffer_lend(op->buf);
    op->lent = 1;
    data = fwx_buffer_data(op->buf);
  } else {
    data += n;
  }
  b = uv_buf_init((char *)data, (unsigned)(len - n));
  req->data = op;
  rc = uv_write(req, stream, &b, 1, write_cb);
  if (rc != 0) {
    fwx__op_complete(op, rc);
    return 0;
  }
  r->writes++;
  return 0;
}
