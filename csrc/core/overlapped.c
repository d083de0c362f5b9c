/* overlapped.c: overlapped objects the caller owns (IFWXOverlapped), for operations on
 * hooked handles. One operation at a time; reusable once its packet is dequeued. */
#include "fwx-int.h"

fwx_op_t *fwx_overlapped_new(fwx_port_t *port) {
  fwx__reqop_t *ro = calloc(1, sizeof *ro);
  if (ro == NULL) return NULL;
  fwx__op_init(&ro->op, port, FWX_OP_READ);
  return &ro->op;
}

void fwx_overlapped_free(fwx_op_t *op) {
  assert(op->state == FWX__IDLE);
  free(fwx__container_of(op, fwx__reqop_t, op));
}

int fwx_op_pending(const fwx_op_t *op) { return op->state != FWX__IDLE; }

int fwx_op_cancel(fwx_op_t *op) {
  /* Already completed and queued: too late, as CancelIoEx finds it. */
  if (op->state != FWX__PENDING) return UV_ENOENT;
  if ((op->kind == FWX_OP_READ || op->kind == FWX_OP_WRITE) && op->object != NULL)
    return fwx__handle_cancel(op->object, op);
  return UV_ENOENT;
}
