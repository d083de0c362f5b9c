/* timer.c: SetTimer. A one-shot timer ends in one packet; a repeating one queues a
 * packet per period and a final one (995) when cancelled, which is what keeps it
 * pending in the port's count until then.
 *
 * A one-shot timer of 0 ms is due at once: its packet is queued when it is set, with no
 * libuv timer (starting, stopping and closing one cost a loop iteration, with its
 * epoll_wait, per timer). It is still pending until the packet is dequeued: Cancel()
 * until then makes that packet the 995, and it is never delivered inside the call
 * that set it, since only the dequeuer delivers. */
#include "fwx-int.h"

static void close_cb(uv_handle_t *h) {
  fwx_timer_t *t = fwx__container_of(h, fwx_timer_t, timer);
  fwx_timer_unref(t);
}

static void finish(fwx_timer_t *t, int status) {
  t->active = 0;
  fwx__list_remove(&t->link);
  uv_timer_stop(&t->timer);
  uv_close((uv_handle_t *)&t->timer, close_cb);
  fwx__op_complete(&t->op, status);
}

static void timer_cb(uv_timer_t *h) {
  fwx_timer_t *t = fwx__container_of(h, fwx_timer_t, timer);
  fwx_op_t *tick;

  if (t->repeat == 0) {
    finish(t, 0);
    return;
  }
  tick = fwx__op_alloc(t->port, FWX_OP_TIMER);
  if (tick == NULL) return; /* out of memory: this period is lost, the timer goes on */
  tick->last = 0;
  t->refs++;
  fwx__op_start(tick, t->op.key, t);
  fwx__op_complete(tick, 0);
}

int fwx_timer_start(fwx_port_t *port, uint64_t ms, uint64_t repeat_ms, uintptr_t key,
                    fwx_timer_t **out) {
  fwx_timer_t *t;
  if (port->closing) return FWX_ECLOSED;
  t = calloc(1, sizeof *t);
  if (t == NULL) return UV_ENOMEM;
  t->port = port;
  fwx_port_ref(port);
  t->repeat = repeat_ms;
  t->active = 1;
  fwx__list_insert(&port->timers, &t->link);
  fwx__op_init(&t->op, port, FWX_OP_TIMER);
  fwx__op_start(&t->op, key, t);
  if (ms == 0 && repeat_ms == 0) {
    t->due = 1;
    t->refs = 2; /* the caller, the notification */
    fwx__op_complete(&t->op, 0);
  } else {
    t->refs = 3; /* the caller, the libuv handle, the final notification */
    uv_timer_init(&port->loop, &t->timer); /* cannot fail on unix */
    uv_update_time(&port->loop); /* count from now, not from the loop's last iteration */
    uv_timer_start(&t->timer, timer_cb, ms, repeat_ms);
  }
  *out = t;
  return 0;
}

int fwx_timer_cancel(fwx_timer_t *t) {
  if (!t->active) return UV_ENOENT;
  if (t->due) {
    /* Its packet is queued already: it stays in its place and says 995. */
    t->op.status = UV_ECANCELED;
    fwx__timer_dequeued(t);
    return 0;
  }
  finish(t, UV_ECANCELED);
  return 0;
}

void fwx__timer_dequeued(fwx_timer_t *t) {
  t->active = 0;
  fwx__list_remove(&t->link);
}

int fwx_timer_active(const fwx_timer_t *t) { return t->active; }

void fwx_timer_unref(fwx_timer_t *t) {
  fwx_port_t *port;
  assert(t->refs > 0);
  if (--t->refs > 0) return;
  port = t->port;
  free(t);
  fwx_port_unref(port);
}

void fwx__timer_shutdown_all(fwx_port_t *port) {
  while (!fwx__list_empty(&port->timers)) {
    fwx_timer_t *t = fwx__container_of(port->timers.next, fwx_timer_t, link);
    fwx_timer_cancel(t);
  }
}
