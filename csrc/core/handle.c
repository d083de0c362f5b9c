/* handle.c: handles hooked to the port (HookToCompletionPort): regular files through
 * libuv's fs requests at explicit offsets, pipes and stream sockets through stream.c.
 *
 * The port hooks a duplicate of the descriptor, so the hooked handle and the caller's
 * object (a Lua file, a luasocket) close independently. */
#include "fwx-int.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static void close_fd(fwx_handle_t *h) {
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
}

static void close_cb(uv_handle_t *uvh) {
  fwx_handle_t *h = fwx__container_of(uvh, fwx_handle_t, uv.handle);
  fwx_handle_unref(h);
}

int fwx_handle_hook(fwx_port_t *port, int fd, fwx_handle_t **out) {
  fwx_handle_t *h;
  uv_handle_type type;
  int dfd, r;

  if (port->closing) return FWX_ECLOSED;
  if (fd < 0) return FWX_EINVAL;
  type = uv_guess_handle(fd);
  if (type != UV_FILE && type != UV_NAMED_PIPE && type != UV_TCP) return UV_ENOTSUP;
  h = calloc(1, sizeof *h);
  if (h == NULL) return UV_ENOMEM;
  dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dfd < 0) {
    r = uv_translate_sys_error(errno);
    free(h);
    return r;
  }
  h->port = port;
  h->fd = dfd;
  h->refs = 1;
  fwx_port_ref(port);
  if (type == UV_FILE) {
    off_t pos = lseek(dfd, 0, SEEK_CUR);
    h->is_file = 1;
    h->position = pos < 0 ? 0 : (int64_t)pos;
  } else {
    if (type == UV_TCP) {
      uv_tcp_init(&port->loop, &h->uv.tcp);
      r = uv_tcp_open(&h->uv.tcp, dfd);
    } else {
      uv_pipe_init(&port->loop, &h->uv.pipe, 0);
      r = uv_pipe_open(&h->uv.pipe, dfd);
    }
    h->refs++; /* the libuv handle's */
    if (r != 0) {
      close(dfd);
      h->closed = 1;
      uv_close(&h->uv.handle, close_cb);
      fwx_handle_unref(h);
      return r;
    }
    fwx__reader_init(&h->reader, &h->uv.stream, 0);
  }
  fwx__list_insert(&port->handles, &h->link);
  *out = h;
  return 0;
}

void fwx_handle_unref(fwx_handle_t *h) {
  fwx_port_t *port;
  assert(h->refs > 0);
  if (--h->refs > 0) return;
  port = h->port;
  if (h->is_file) close_fd(h);
  free(h);
  fwx_port_unref(port);
}

int fwx_handle_is_file(const fwx_handle_t *h) { return h->is_file; }
int fwx_handle_closed(const fwx_handle_t *h) { return h->closed; }

static void fs_cb(uv_fs_t *req) {
  fwx__reqop_t *ro = fwx__container_of(req, fwx__reqop_t, req.fs);
  fwx_op_t *op = &ro->op;
  fwx_handle_t *h = op->object;
  ssize_t result = req->result;

  uv_fs_req_cleanup(req);
  fwx__list_remove(&ro->link);
  if (--h->ops == 0 && h->closed) close_fd(h);
  if (op->kind == FWX_OP_READ) {
    fwx_buffer_unlend(op->buf);
    fwx__buffer_fill(op->buf, NULL, result > 0 ? (size_t)result : 0);
  }
  if (result < 0) {
    fwx__op_complete(op, (int)result);
    return;
  }
  op->bytes = (size_t)result;
  if (ro->use_position) h->position = ro->offset + result;
  if (op->kind == FWX_OP_READ && result == 0) {
    op->error = 38; /* ERROR_HANDLE_EOF, as an overlapped ReadFile reports it */
    fwx__op_complete(op, UV_EOF);
    return;
  }
  fwx__op_complete(op, 0);
}

static int check(fwx_handle_t *h, fwx_op_t *op, fwx_buffer_t *buf, int64_t offset) {
  if (h->closed || h->port->closing) return FWX_ECLOSED;
  if (op->state != FWX__IDLE) return FWX_EBUSY;
  if (op->port != h->port) return FWX_EINVAL;
  if (buf == NULL) return FWX_EINVAL;
  if (!h->is_file && offset >= 0) return FWX_ESTATE; /* a pipe has no position */
  return 0;
}

static void start(fwx_handle_t *h, fwx_op_t *op, fwx_op_kind_t kind, fwx_buffer_t *buf,
                  uintptr_t key) {
  op->kind = (unsigned char)kind;
  h->refs++;
  fwx__op_start(op, key, h);
  fwx_buffer_ref(buf);
  op->buf = buf;
}

static void start_fs(fwx_handle_t *h, fwx__reqop_t *ro, int64_t offset) {
  ro->use_position = offset < 0;
  ro->offset = offset < 0 ? h->position : offset;
  h->ops++;
  fwx__list_insert(&h->port->ops, &ro->link);
}

int fwx_handle_read(fwx_handle_t *h, fwx_op_t *op, fwx_buffer_t *buf, int64_t offset,
                    uintptr_t key) {
  fwx__reqop_t *ro = fwx__container_of(op, fwx__reqop_t, op);
  uv_buf_t b;
  int r = check(h, op, buf, offset);
  if (r != 0) return r;
  if (fwx_buffer_capacity(buf) == 0) return FWX_EINVAL;
  r = fwx_buffer_writable(buf);
  if (r != 0) return r;
  if (!h->is_file && h->reader.op != NULL) return FWX_EBUSY;
  start(h, op, FWX_OP_READ, buf, key);
  if (!h->is_file) return fwx__reader_recv(&h->uv.stream, op);
  fwx_buffer_lend(buf);
  start_fs(h, ro, offset);
  b = uv_buf_init(fwx_buffer_data(buf), (unsigned)fwx_buffer_capacity(buf));
  r = uv_fs_read(&h->port->loop, &ro->req.fs, h->fd, &b, 1, ro->offset, fs_cb);
  if (r != 0) {
    fwx_buffer_unlend(buf);
    fwx__list_remove(&ro->link);
    h->ops--;
    fwx__op_complete(op, r);
  }
  return 0;
}

int fwx_handle_write(fwx_handle_t *h, fwx_op_t *op, fwx_buffer_t *buf, int64_t offset,
                     uintptr_t key) {
  fwx__reqop_t *ro = fwx__container_of(op, fwx__reqop_t, op);
  uv_buf_t b;
  int r = check(h, op, buf, offset);
  if (r != 0) return r;
  start(h, op, FWX_OP_WRITE, buf, key);
  fwx_buffer_lend(buf);
  op->lent = 1; /* released at dequeue: a write hands no buffer back */
  if (!h->is_file)
    return fwx__stream_write(&h->uv.stream, &ro->req.write, op, fwx_buffer_data(buf),
                             fwx_buffer_size(buf),
                             fwx__stream_try_write(&h->uv.stream, fwx_buffer_data(buf),
                                                   fwx_buffer_size(buf)));
  start_fs(h, ro, offset);
  b = uv_buf_init(fwx_buffer_data(buf), (unsigned)fwx_buffer_size(buf));
  r = uv_fs_write(&h->port->loop, &ro->req.fs, h->fd, &b, 1, ro->offset, fs_cb);
  if (r != 0) {
    fwx__list_remove(&ro->link);
    h->ops--;
    fwx__op_complete(op, r);
  }
  return 0;
}

/* ov:Cancel(): a pipe read ends now with 995; a file request not yet running is
 * withdrawn (995); one already running, or a pipe write libuv has queued, finishes
 * and reports what it did. 0 means the notification will say 995. */
int fwx__handle_cancel(fwx_handle_t *h, fwx_op_t *op) {
  fwx__reqop_t *ro = fwx__container_of(op, fwx__reqop_t, op);
  if (!h->is_file && op->kind == FWX_OP_READ) return fwx__reader_cancel_op(&h->uv.stream, op);
  if (h->is_file) return uv_cancel((uv_req_t *)&ro->req.fs) == 0 ? 0 : UV_EBUSY;
  return UV_EBUSY;
}

int fwx_handle_close(fwx_handle_t *h) {
  fwx__link_t *l;
  if (h->closed) return 0;
  h->closed = 1;
  fwx__list_remove(&h->link);
  if (h->is_file) {
    /* The descriptor stays open until the last request that uses it has finished
     * (fwx_handle_unref); a closed fd number could be reused under it. */
    for (l = h->port->ops.next; l != &h->port->ops; l = l->next) {
      fwx__reqop_t *ro = fwx__container_of(l, fwx__reqop_t, link);
      if (ro->op.object == h) uv_cancel((uv_req_t *)&ro->req.fs);
    }
    if (h->ops == 0) close_fd(h);
    return 0;
  }
  fwx__reader_cancel(&h->uv.stream, UV_ECANCELED);
  uv_close(&h->uv.handle, close_cb);
  return 0;
}

void fwx__handle_shutdown_all(fwx_port_t *port) {
  while (!fwx__list_empty(&port->handles)) {
    fwx_handle_t *h = fwx__container_of(port->handles.next, fwx_handle_t, link);
    fwx_handle_close(h);
  }
}
