/* dispatch_c.c: the C baseline of the dispatch micro-benchmark: how many callbacks
 * per second plain libuv delivers through zero-timeout timers.
 *
 *   dispatch_c chain|batch SECONDS
 *
 * chain: one timer; each callback counts and re-arms it (one notification in
 *        flight at a time, like a posted task that posts the next).
 * batch: BATCH timers armed at once; the callback that ends a batch arms the next.
 *
 * The rate is per second of the process's CPU time, not of wall time, so that a
 * noisy shared machine that takes the CPU away does not count against us. The clock
 * is read once every CHECK_EVERY callbacks to keep it out of the measured path.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define BATCH 1000
#define CHECK_EVERY 1024

static uv_loop_t *loop;
static uint64_t count;
static double limit_s, start_s;
static int done;
static uv_timer_t timers[BATCH];
static int pending;

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int time_is_up(void) {
  if (cpu_now() - start_s >= limit_s) done = 1;
  return done;
}

static void chain_cb(uv_timer_t *t) {
  count++;
  if ((count % CHECK_EVERY) == 0 && time_is_up()) return;
  uv_timer_start(t, chain_cb, 0, 0);
}

static void batch_arm(void);

static void batch_cb(uv_timer_t *t) {
  (void)t;
  count++;
  if (--pending == 0 && !time_is_up()) batch_arm();
}

static void batch_arm(void) {
  for (int i = 0; i < BATCH; i++) uv_timer_start(&timers[i], batch_cb, 0, 0);
  pending = BATCH;
}

static void close_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  uv_close(h, NULL);
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "chain") != 0 && strcmp(argv[1], "batch") != 0)) {
    fprintf(stderr, "usage: dispatch_c chain|batch SECONDS\n");
    return 2;
  }
  limit_s = atof(argv[2]);
  loop = uv_default_loop();
  int n = strcmp(argv[1], "chain") == 0 ? 1 : BATCH;
  for (int i = 0; i < n; i++) uv_timer_init(loop, &timers[i]);
  start_s = cpu_now();
  if (n == 1)
    uv_timer_start(&timers[0], chain_cb, 0, 0);
  else
    batch_arm();
  /* The loop ends when no timer is armed any more. */
  uv_run(loop, UV_RUN_DEFAULT);
  double elapsed = cpu_now() - start_s;
  uv_walk(loop, close_cb, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  printf("RESULT bench=dispatch impl=c variant=%s notifs=%llu cpu_s=%.3f notif_per_s=%.0f\n",
         argv[1], (unsigned long long)count, elapsed, (double)count / elapsed);
  return 0;
}
