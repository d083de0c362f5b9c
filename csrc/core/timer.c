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
  fwx__uv_timer_t *ut = fwx__container_of(h, fwx__uv_timer_t, timer);
  fwx_timer_unref(&ut->t);
}

/* Only for a timer that is not due (it runs on libuv). */
static void finish(fwx_timer_t *t, int status) {
  fwx__uv_timer_t *ut = fwx__container_of(t, fwx__uv_timer_t, t);
  t->active = 0;
  fwx__list_remove(&t->link);
  uv_timer_stop(&ut->timer);
  uv_close((uv_handle_t *)&ut->timer, close_cb);
  fwx__op_complete(&t->op, status);
}

static void timer_cb(uv_timer_t *h) {
  fwx_timer_t *t = &fwx__container_of(h, fwx__uv_timer_t, timer)->t;
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

/* Queue the packet of a 0 ms one-shot timer now. */
static void start_due(fwx_timer_t *t, fwx_port_t *port, uintptr_t key) {
  t->port = port;
  t->active = 1;
  t->due = 1;
  fwx__list_insert(&port->timers, &t->link);
  fwx__op_init(&t->op, port, FWX_OP_TIMER);
  fwx__op_start(&t->op, key, t);
  fwx__op_complete(&t->op, 0);
}

int fwx_timer_start(fwx_port_t *port, uint64_t ms, uint64_t repeat_ms, uintptr_t key,
                    fwx_timer_t **out) {
  fwx_timer_t *t;
  fwx__uv_timer_t *ut;
  if (port->closing) return FWX_ECLOSED;
  if (ms == 0 && repeat_ms == 0) {
    t = calloc(1, sizeof *t);
    if (t == NULL) return UV_ENOMEM;
    fwx_port_ref(port);
    t->refs = 2; /* the caller, the notification */
    start_due(t, port, key);
    *out = t;
    return 0;
  }
  ut = calloc(1, sizeof *ut);
  if (ut == NULL) return UV_ENOMEM;
  t = &ut->t;
  t->port = port;
  fwx_port_ref(port);
  t->refs = 3; /* the caller, the libuv handle, the final notification */
  t->repeat = repeat_ms;
  t->active = 1;
  fwx__list_insert(&port->timers, &t->link);
  fwx__op_init(&t->op, port, FWX_OP_TIMER);
  fwx__op_start(&t->op, key, t);
  uv_timer_init(&port->loop, &ut->timer); /* cannot fail on unix */
  uv_update_time(&port->loop); /* count from now, not from the loop's last iteration */
  uv_timer_start(&ut->timer, timer_cb, ms, repeat_ms);
  *out = t;
  return 0;
}

size_t fwx_timer_place_size(void) { return sizeof(fwx_timer_t); }

/* No port reference either: the port dequeues (or abandons) every packet before it
 * goes, and after that nothing here touches the port. */
int fwx_timer_place(fwx_port_t *port, void *mem, uintptr_t key, fwx_timer_t **out) {
  fwx_timer_t *t = mem;
  if (port->closing) return FWX_ECLOSED;
  memset(t, 0, sizeof *t);
  t->placed = 1;
  start_due(t, port, key);
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
  if (t->placed) return;
  assert(t->refs > 0);
  if (--t->refs > 0) return;
  port = t->port;
  if (t->due)
    free(t);
  else
    free(fwx__container_of(t, fwx__uv_timer_t, t));
  fwx_port_unref(port);
}

void fwx__timer_shutdown_all(fwx_port_t *port) {
  while (!fwx__list_empty(&port->timers)) {
    fwx_timer_t *t = fwx__container_of(port->timers.next, fwx_timer_t, link);
    fwx_timer_cancel(t);
  }
}
