/* timer.c: SetTimer. A one-shot timer ends in one packet; a repeating one queues a
 * packet per period and a final one (995) when cancelled, which is what keeps it
 * pending in the port's count until then. A signal watcher (SetSignal) is a repeating
 * timer whose ticks come from a libuv signal handle instead of a period.
 *
 * A one-shot timer of 0 ms is due at once: its packet is queued when it is set, with no
 * libuv timer (starting, stopping and closing one cost a loop iteration, with its
 * epoll_wait, per timer). It is still pending until the packet is dequeued: Cancel()
 * until then makes that packet the 995, and it is never delivered inside the call
 * that set it, since only the dequeuer delivers. */
#include "fwx-int.h"

static void close_cb(uv_handle_t *h) {
  fwx_timer_unref(h->data);
}

/* Only for a timer that is not due (it runs on libuv). */
static void finish(fwx_timer_t *t, int status) {
  t->active = 0;
  fwx__list_remove(&t->link);
  if (t->signal) {
    fwx__uv_signal_t *us = fwx__container_of(t, fwx__uv_signal_t, t);
    uv_signal_stop(&us->sig);
    uv_close((uv_handle_t *)&us->sig, close_cb);
  } else {
    fwx__uv_timer_t *ut = fwx__container_of(t, fwx__uv_timer_t, t);
    uv_timer_stop(&ut->timer);
    uv_close((uv_handle_t *)&ut->timer, close_cb);
  }
  fwx__op_complete(&t->op, status);
}

/* A repeating timer's period, or a watched signal: one packet that does not end it. */
static void tick(fwx_timer_t *t) {
  fwx_op_t *op = fwx__op_alloc(t->port, FWX_OP_TIMER);
  if (op == NULL) return; /* out of memory: this tick is lost, the timer goes on */
  op->last = 0;
  t->refs++;
  fwx__op_start(op, t->op.key, t);
  fwx__op_complete(op, 0);
}

static void timer_cb(uv_timer_t *h) {
  fwx_timer_t *t = h->data;
  if (t->repeat == 0) {
    finish(t, 0);
    return;
  }
  tick(t);
}

static void signal_cb(uv_signal_t *h, int signum) {
  (void)signum;
  tick(h->data);
}

static void signal_failed_cb(uv_handle_t *h) {
  fwx_port_t *port = ((fwx_timer_t *)h->data)->port;
  free(fwx__container_of(h, fwx__uv_signal_t, sig));
  fwx_port_unref(port);
}

int fwx_signal_start(fwx_port_t *port, int signum, uintptr_t key, fwx_timer_t **out) {
  fwx__uv_signal_t *us;
  fwx_timer_t *t;
  int r;
  if (port->closing) return FWX_ECLOSED;
  if (signum <= 0 || signum >= 65 || signum == SIGKILL || signum == SIGSTOP) return UV_EINVAL;
  us = calloc(1, sizeof *us);
  if (us == NULL) return UV_ENOMEM;
  t = &us->t;
  t->port = port;
  fwx_port_ref(port);
  uv_signal_init(&port->loop, &us->sig); /* cannot fail on unix */
  us->sig.data = t;
  r = uv_signal_start(&us->sig, signal_cb, signum);
  if (r != 0) {
    uv_close((uv_handle_t *)&us->sig, signal_failed_cb);
    return r;
  }
  t->refs = 3; /* the caller, the libuv handle, the final notification */
  t->signal = 1;
  t->active = 1;
  fwx__list_insert(&port->timers, &t->link);
  fwx__op_init(&t->op, port, FWX_OP_TIMER);
  fwx__op_start(&t->op, key, t);
  *out = t;
  return 0;
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
  ut->timer.data = t;
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
  else if (t->signal)
    free(fwx__container_of(t, fwx__uv_signal_t, t));
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
