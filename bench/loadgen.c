/* loadgen.c: the load generator of the fwx benchmarks.
 *
 *   loadgen [-p PID] [-w WARMUP_S] [-t HOLD_S] pingpong HOST PORT C M SECONDS
 *   loadgen [-p PID] [-w WARMUP_S]             bulk     HOST PORT SECONDS
 *   loadgen [-p PID] [-w WARMUP_S]             bulksend HOST PORT SECONDS
 *   loadgen [-p PID] [-w WARMUP_S]             connrate HOST PORT C SECONDS
 *   loadgen [-p PID] [-t HOLD_S]               idle     HOST PORT N
 *   loadgen [-t HOLD_S]                        sink     HOST PORT
 *
 * pingpong: C connections; each sends M bytes, waits for the whole echo, repeats.
 *           Messages per second, round-trip p50/p99 in microseconds.
 * bulk:     one connection sends 64 KiB chunks flat out to an echo server and
 *           discards the echo: MB/s of bytes echoed back. Sent with sendfile(2)
 *           from a memfd, read back with recv(MSG_TRUNC): no copy on this side.
 * bulksend: the same to a server that does not answer (a proxy in front of `sink`):
 *           MB/s of bytes the kernel accepted, which socket buffers bound, so the
 *           count over a window of seconds is the throughput.
 * connrate: C parallel loops of connect, 64 bytes, echo, close: connections/s.
 * idle:     N connections, each echoes one byte, then held: prints "ready" and
 *           waits for a signal, stdin EOF or the hold limit.
 * sink:     a server (PORT 0: any) that discards (recv MSG_TRUNC: no copy); prints
 *           "PORT n", ends on SIGTERM/SIGINT or after the hold limit. The upstream
 *           of proxy bulk.
 *
 * Every mode prints exactly one machine-readable line on stdout, starting with
 * "RESULT " and followed by key=value pairs; diagnostics go to stderr.
 *
 * -p PID   the server under test. Its CPU time (utime+stime from /proc/PID/stat) is
 *          sampled at the start and at the end of the measurement window, so the
 *          cost per operation excludes start-up, connection set-up and warm-up.
 *          In idle mode its VmRSS is sampled before and after the connections.
 * -w S     warm-up before the window opens (default 0.5 s): connections are set up
 *          and traffic flows, but nothing is counted.
 * -t S     idle mode: the longest time to hold the connections (default 300 s), so
 *          that the process ends by itself even if nobody signals it.
 *
 * Only a numeric IPv4 HOST is accepted: the benchmarks target 127.0.0.1 only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define CHECK(expr)                                                        \
  do {                                                                     \
    int check_rc_ = (expr);                                                \
    if (check_rc_ < 0) {                                                   \
      fprintf(stderr, "loadgen: %s: %s (%s:%d)\n", #expr,                  \
              uv_strerror(check_rc_), __FILE__, __LINE__);                 \
      exit(2);                                                             \
    }                                                                      \
  } while (0)

/* ---------------------------------------------------------------- common state */

static uv_loop_t *loop;
static struct sockaddr_in target;
static int server_pid;          /* 0: no server sampling */
static double warmup_s = 0.5;
static double hold_s = 300.0;

/* The phase decides what is counted: only events that end inside the window. */
enum { PH_WARMUP, PH_WINDOW, PH_DONE };
static int phase = PH_WARMUP;
static uint64_t win_start_ns, win_end_ns;
static double cpu_start_us = -1, cpu_end_us = -1;
static uv_timer_t phase_timer;
static double window_s;
static uint64_t errors;         /* connect failures, resets, short echoes */

/* A static scratch buffer for every read: the payload is only counted, never kept,
 * so one buffer serves all connections (libuv delivers reads one at a time). */
static char scratch[64 * 1024];

static void alloc_scratch(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(scratch, sizeof scratch);
}

/* utime+stime of a process in microseconds, from /proc/PID/stat; -1 if unknown.
 * The command name (field 2) may hold spaces and parentheses, so parsing starts
 * after the last ')'. */
static double proc_cpu_us(int pid) {
  char path[64], text[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  char *p = strrchr(text, ')');
  if (!p) return -1;
  unsigned long utime = 0, stime = 0;
  /* After ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt
   * cmajflt utime stime (fields 3..15). */
  if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
             &utime, &stime) != 2)
    return -1;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0) hz = 100;
  return (double)(utime + stime) * 1e6 / (double)hz;
}

/* VmRSS of a process in KiB, from /proc/PID/status; -1 if unknown. */
static long proc_rss_kb(int pid) {
  char path[64], line[256];
  long kb = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* Idle and 9 000-connection runs need more descriptors than the usual soft limit. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      fprintf(stderr, "loadgen: setrlimit: %s\n", strerror(errno));
  }
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Connections are owned by the mode; at the end every handle is closed so that
 * uv_run returns and the process exits on its own. Per-connection memory is freed
 * with the process, which is about to exit. */
static void stop_everything(void) {
  phase = PH_DONE;
  uv_walk(loop, close_walk_cb, NULL);
}

static void window_open(void) {
  phase = PH_WINDOW;
  if (server_pid) cpu_start_us = proc_cpu_us(server_pid);
  win_start_ns = uv_hrtime();
}

static void window_close(void) {
  win_end_ns = uv_hrtime();
  if (server_pid) cpu_end_us = proc_cpu_us(server_pid);
  stop_everything();
}

static void phase_cb(uv_timer_t *t) {
  if (phase == PH_WARMUP) {
    window_open();
    uv_timer_start(t, phase_cb, (uint64_t)(window_s * 1000.0), 0);
  } else if (phase == PH_WINDOW) {
    window_close();
  }
}

/* Starts the warm-up now; the window follows it, and the end of the window ends the
 * run whatever state the server is in, so every timed mode is bounded. */
static void start_phases(double seconds) {
  window_s = seconds;
  CHECK(uv_timer_init(loop, &phase_timer));
  if (warmup_s > 0) {
    CHECK(uv_timer_start(&phase_timer, phase_cb, (uint64_t)(warmup_s * 1000.0), 0));
  } else {
    window_open();
    CHECK(uv_timer_start(&phase_timer, phase_cb, (uint64_t)(seconds * 1000.0), 0));
  }
}

static double window_seconds(void) {
  return (double)(win_end_ns - win_start_ns) / 1e9;
}

/* " server_cpu_us=... KEY=..." when the server was sampled. */
static void print_cpu(const char *key, double ops) {
  if (!server_pid) return;
  if (cpu_start_us < 0 || cpu_end_us < 0) {
    printf(" server_cpu_us=NA %s=NA", key);
    return;
  }
  double cpu = cpu_end_us - cpu_start_us;
  printf(" server_cpu_us=%.0f", cpu);
  if (ops > 0)
    printf(" %s=%.4f", key, cpu / ops);
  else
    printf(" %s=NA", key);
}

static void set_nodelay(uv_tcp_t *t) {
  /* The client never batches: each message is one write and must leave at once. */
  uv_tcp_nodelay(t, 1);
}

/* ----------------------------------------------------------- latency histogram */

/* Log-linear buckets over nanoseconds with 8 significant bits (< 0.8% error):
 * values below 256 have their own bucket, above that each power of two is split
 * into 128 buckets. 64 exponents cover any uint64_t. */
#define HIST_BUCKETS (64 * 128)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count;

static int hist_index(uint64_t v) {
  if (v < 256) return (int)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - 7;
  return (shift << 7) + (int)(v >> shift);
}

static double hist_value(int idx) {
  if (idx < 256) return idx;
  int shift = (idx >> 7) - 1;
  uint64_t m = (uint64_t)(idx - (shift << 7));
  /* The middle of the bucket. */
  return (double)(m << shift) + (double)((uint64_t)1 << shift) / 2.0;
}

static void hist_add(uint64_t ns) {
  hist[hist_index(ns)]++;
  hist_count++;
}

static double hist_percentile_us(double p) {
  if (hist_count == 0) return 0;
  uint64_t rank = (uint64_t)(p / 100.0 * (double)hist_count);
  if (rank >= hist_count) rank = hist_count - 1;
  uint64_t seen = 0;
  for (int i = 0; i < HIST_BUCKETS; i++) {
    seen += hist[i];
    if (seen > rank) return hist_value(i) / 1000.0;
  }
  return 0;
}

/* -------------------------------------------------------------------- pingpong */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  size_t got;          /* bytes of the current echo received so far */
  uint64_t sent_at;
} pp_conn;

static char *pp_msg;
static size_t pp_size;
static uint64_t pp_done;     /* round trips completed inside the window */

static void pp_write_cb(uv_write_t *req, int status) {
  if (status < 0 && status != UV_ECANCELED && phase != PH_DONE) {
    errors++;
    uv_close((uv_handle_t *)req->handle, NULL);
  }
}

static void pp_send(pp_conn *c) {
  c->got = 0;
  c->sent_at = uv_hrtime();
  uv_buf_t b = uv_buf_init(pp_msg, (unsigned)pp_size);
  /* Try the write at once; only what the kernel refuses is queued. */
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == (int)pp_size) return;
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    errors++;
    uv_close((uv_handle_t *)&c->tcp, NULL);
    return;
  }
  b = uv_buf_init(pp_msg + n, (unsigned)(pp_size - (size_t)n));
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, pp_write_cb) < 0) {
    errors++;
    uv_close((uv_handle_t *)&c->tcp, NULL);
  }
}

static void pp_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  pp_conn *c = (pp_conn *)s;
  if (nread < 0) {
    /* The server must never end a ping-pong connection. */
    if (phase != PH_DONE) errors++;
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
    return;
  }
  c->got += (size_t)nread;
  if (c->got < pp_size) return;
  if (c->got > pp_size) errors++;   /* an echo never exceeds what was sent */
  if (phase == PH_WINDOW) {
    hist_add(uv_hrtime() - c->sent_at);
    pp_done++;
  }
  if (phase != PH_DONE) pp_send(c);
}

static void pp_connect_cb(uv_connect_t *req, int status) {
  pp_conn *c = req->data;
  if (status < 0) {
    if (phase != PH_DONE) {
      errors++;
      fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, NULL);
    return;
  }
  set_nodelay(&c->tcp);
  CHECK(uv_read_start((uv_stream_t *)&c->tcp, alloc_scratch, pp_read_cb));
  pp_send(c);
}

static int run_pingpong(int conns, size_t size, double seconds) {
  pp_size = size;
  pp_msg = malloc(size);
  if (!pp_msg) return 2;
  memset(pp_msg, 'x', size);
  pp_conn *cs = calloc((size_t)conns, sizeof *cs);
  if (!cs) return 2;
  start_phases(seconds);
  for (int i = 0; i < conns; i++) {
    CHECK(uv_tcp_init(loop, &cs[i].tcp));
    cs[i].creq.data = &cs[i];
    CHECK(uv_tcp_connect(&cs[i].creq, &cs[i].tcp, (const struct sockaddr *)&target,
                         pp_connect_cb));
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double w = window_seconds();
  printf("RESULT workload=pingpong conns=%d msg_bytes=%zu seconds=%.3f msgs=%" PRIu64
         " msgs_per_s=%.1f p50_us=%.1f p99_us=%.1f errors=%" PRIu64,
         conns, size, w, pp_done, (double)pp_done / w, hist_percentile_us(50),
         hist_percentile_us(99), errors);
  print_cpu("cpu_us_per_msg", (double)pp_done);
  printf("\n");
  return 0;
}

/* ------------------------------------------------------------------------ bulk */

/* The sender must not be what caps the figure. It shares a CPU with the sink (or
 * reads the echo back), and writing 64 KiB from user memory copies every byte into
 * the kernel: with uv_write that copy and libuv's write queue were most of that CPU's
 * work in proxy_bulk, so every proxy measured about the same MB/s whatever its own
 * cost. So the bytes come from a memfd through sendfile(2), which hands the file's
 * pages to TCP without copying them, and the echo is read back with recv(MSG_TRUNC),
 * which drops it without a copy (as the sink does). The connection is watched
 * through a dup of its descriptor by a uv_poll_t, since libuv's streams always copy. */
#define BULK_CHUNK (64 * 1024)
/* Calls per poll callback in either direction: bounded so that a peer that drains as
 * fast as we send cannot keep the loop (and the window's timer) from running. */
#define BULK_BATCH 16

static uv_tcp_t bulk_tcp;
static uv_connect_t bulk_creq;
static uv_poll_t bulk_poll;
static int bulk_fd = -1;     /* the dup the poll watches */
static int bulk_file = -1;   /* the memfd: BULK_CHUNK bytes of 'b' */
static uint64_t bulk_bytes;
static int bulk_send_only;   /* bulksend: count bytes sent, not bytes echoed */

static void bulk_fail(const char *what) {
  if (phase == PH_DONE) return;
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  errors++;
  stop_everything();
}

static void bulk_poll_cb(uv_poll_t *p, int status, int events) {
  (void)p;
  if (phase == PH_DONE) return;
  if (status < 0) {
    errno = -status;
    bulk_fail("poll");
    return;
  }
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    for (int i = 0; i < BULK_BATCH; i++) {
      ssize_t n = recv(bulk_fd, NULL, 1 << 20, MSG_TRUNC | MSG_DONTWAIT);
      if (n > 0) {
        if (phase == PH_WINDOW && !bulk_send_only) bulk_bytes += (uint64_t)n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      if (n == 0) errno = ECONNRESET; /* the server ended the connection mid-run */
      bulk_fail("recv");
      return;
    }
  }
  if (events & UV_WRITABLE) {
    for (int i = 0; i < BULK_BATCH; i++) {
      off_t off = 0;
      ssize_t n = sendfile(bulk_fd, bulk_file, &off, BULK_CHUNK);
      if (n > 0) {
        if (phase == PH_WINDOW && bulk_send_only) bulk_bytes += (uint64_t)n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      bulk_fail("sendfile");
      return;
    }
  }
}

static void bulk_connect_cb(uv_connect_t *req, int status) {
  uv_os_fd_t fd;
  (void)req;
  if (status < 0) {
    fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
    errors++;
    stop_everything();
    return;
  }
  CHECK(uv_fileno((uv_handle_t *)&bulk_tcp, &fd));
  bulk_fd = dup(fd);
  uv_close((uv_handle_t *)&bulk_tcp, NULL); /* the dup keeps the connection */
  if (bulk_fd < 0) {
    bulk_fail("dup");
    return;
  }
  CHECK(uv_poll_init(loop, &bulk_poll, bulk_fd));
  CHECK(uv_poll_start(&bulk_poll, UV_READABLE | UV_WRITABLE | UV_DISCONNECT, bulk_poll_cb));
}

static int run_bulk(double seconds, int send_only) {
  char *chunk = malloc(BULK_CHUNK);
  bulk_send_only = send_only;
  bulk_file = memfd_create("loadgen-bulk", 0);
  if (chunk == NULL || bulk_file < 0) {
    fprintf(stderr, "loadgen: memfd_create: %s\n", strerror(errno));
    return 2;
  }
  memset(chunk, 'b', BULK_CHUNK);
  if (write(bulk_file, chunk, BULK_CHUNK) != BULK_CHUNK) {
    fprintf(stderr, "loadgen: writing the memfd: %s\n", strerror(errno));
    return 2;
  }
  free(chunk);
  start_phases(seconds);
  CHECK(uv_tcp_init(loop, &bulk_tcp));
  CHECK(uv_tcp_connect(&bulk_creq, &bulk_tcp, (const struct sockaddr *)&target,
                       bulk_connect_cb));
  uv_run(loop, UV_RUN_DEFAULT);
  if (bulk_fd >= 0) close(bulk_fd); /* its poll handle is closed by now */
  close(bulk_file);
  double w = window_seconds();
  double mb = (double)bulk_bytes / 1e6;
  printf("RESULT workload=%s seconds=%.3f bytes=%" PRIu64 " mb_per_s=%.2f errors=%" PRIu64,
         send_only ? "bulksend" : "bulk", w, bulk_bytes, mb / w, errors);
  print_cpu("cpu_us_per_mb", mb);
  printf("\n");
  return 0;
}

/* -------------------------------------------------------------------- connrate */

/* Each slot runs connect, 64 bytes out, 64 bytes back, close, and starts again from
 * the close callback, when libuv is done with the handle. */
typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  size_t got;
} cr_slot;

#define CR_MSG 64
static char cr_msg[CR_MSG];
static uint64_t cr_done;

static void cr_start(cr_slot *s);

static void cr_close_cb(uv_handle_t *h) {
  if (phase != PH_DONE) cr_start((cr_slot *)h);
}

static void cr_close(cr_slot *s) {
  if (!uv_is_closing((uv_handle_t *)&s->tcp)) uv_close((uv_handle_t *)&s->tcp, cr_close_cb);
}

static void cr_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  cr_slot *s = (cr_slot *)st;
  if (nread < 0) {
    if (phase != PH_DONE) errors++;
    cr_close(s);
    return;
  }
  s->got += (size_t)nread;
  if (s->got < CR_MSG) return;
  if (phase == PH_WINDOW) cr_done++;
  cr_close(s);
}

static void cr_connect_cb(uv_connect_t *req, int status) {
  cr_slot *s = req->data;
  if (status < 0) {
    if (phase != PH_DONE) errors++;
    cr_close(s);
    return;
  }
  uv_buf_t b = uv_buf_init(cr_msg, CR_MSG);
  /* 64 bytes always fit an empty socket buffer: a short write is an error. */
  if (uv_try_write((uv_stream_t *)&s->tcp, &b, 1) != CR_MSG) {
    errors++;
    cr_close(s);
    return;
  }
  CHECK(uv_read_start((uv_stream_t *)&s->tcp, alloc_scratch, cr_read_cb));
}

static void cr_start(cr_slot *s) {
  s->got = 0;
  CHECK(uv_tcp_init(loop, &s->tcp));
  s->creq.data = s;
  int rc = uv_tcp_connect(&s->creq, &s->tcp, (const struct sockaddr *)&target, cr_connect_cb);
  if (rc < 0) {
    /* EADDRNOTAVAIL when ephemeral ports run out: counted, and the slot retries. */
    errors++;
    uv_close((uv_handle_t *)&s->tcp, cr_close_cb);
  }
}

static int run_connrate(int conns, double seconds) {
  memset(cr_msg, 'c', CR_MSG);
  cr_slot *ss = calloc((size_t)conns, sizeof *ss);
  if (!ss) return 2;
  start_phases(seconds);
  for (int i = 0; i < conns; i++) cr_start(&ss[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  double w = window_seconds();
  printf("RESULT workload=connrate conns=%d seconds=%.3f done=%" PRIu64
         " conns_per_s=%.1f errors=%" PRIu64,
         conns, w, cr_done, (double)cr_done / w, errors);
  print_cpu("cpu_us_per_conn", (double)cr_done);
  printf("\n");
  return 0;
}

/* ------------------------------------------------------------------------ idle */

/* N connections are opened, at most IDLE_INFLIGHT at a time so that the server's
 * accept backlog never overflows (an overflow costs a 1 s SYN retransmit). Each one
 * sends one byte and waits for its echo: then the server has surely accepted it and
 * armed a read on it, which is the state whose memory we measure. */
#define IDLE_INFLIGHT 128
#define IDLE_SETUP_MAX_S 120
#define IDLE_SETTLE_MS 500

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  int ready;
} idle_conn;

static idle_conn *idle_cs;
static int idle_n, idle_next, idle_inflight, idle_ready, idle_lost;
static long rss_before_kb = -1;
static uv_timer_t idle_timer;
static uv_signal_t sig_term, sig_int;
static uv_poll_t stdin_poll;
static int stdin_watched;

static void idle_launch(void);

static void idle_fail(const char *why) {
  printf("RESULT workload=idle conns=%d ready=%d error=%s\n", idle_n, idle_ready, why);
  fflush(stdout);
  errors++;
  stop_everything();
}

static void idle_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  idle_conn *c = (idle_conn *)s;
  if (nread < 0) {
    /* The server closed a connection it should be holding. */
    if (phase != PH_DONE) {
      if (c->ready) {
        idle_lost++;
        uv_close((uv_handle_t *)s, NULL);
      } else {
        uv_close((uv_handle_t *)s, NULL);
        idle_fail("closed_during_setup");
      }
    }
    return;
  }
  if (nread == 0 || c->ready) return;
  c->ready = 1;
  idle_ready++;
  idle_inflight--;
  idle_launch();
}

static void idle_connect_cb(uv_connect_t *req, int status) {
  idle_conn *c = req->data;
  if (phase == PH_DONE) return;
  if (status < 0) {
    fprintf(stderr, "loadgen: idle connect: %s\n", uv_strerror(status));
    idle_fail("connect");
    return;
  }
  static char one_byte[1] = { 'i' };
  uv_buf_t b = uv_buf_init(one_byte, 1);
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != 1) {
    idle_fail("write");
    return;
  }
  CHECK(uv_read_start((uv_stream_t *)&c->tcp, alloc_scratch, idle_read_cb));
}

static void idle_hold_end(void) {
  /* One line for the runner's log; the RESULT line was printed before "ready". */
  fprintf(stderr, "loadgen: idle: releasing %d connections (%d lost while held)\n",
          idle_ready, idle_lost);
  stop_everything();
}

static void idle_hold_timeout_cb(uv_timer_t *t) {
  (void)t;
  idle_hold_end();
}

static void idle_settled_cb(uv_timer_t *t) {
  long after = server_pid ? proc_rss_kb(server_pid) : -1;
  printf("RESULT workload=idle conns=%d ready=%d lost=%d", idle_n, idle_ready, idle_lost);
  if (server_pid && rss_before_kb >= 0 && after >= 0)
    printf(" rss_before_kb=%ld rss_after_kb=%ld rss_per_conn_b=%.1f", rss_before_kb, after,
           (double)(after - rss_before_kb) * 1024.0 / idle_n);
  printf("\nready\n");
  fflush(stdout);
  /* Hold until a signal, stdin EOF, or the hold limit. */
  CHECK(uv_timer_start(t, idle_hold_timeout_cb, (uint64_t)(hold_s * 1000.0), 0));
}

static void idle_setup_timeout_cb(uv_timer_t *t) {
  (void)t;
  idle_fail("setup_timeout");
}

static void idle_launch(void) {
  if (phase == PH_DONE) return;
  while (idle_inflight < IDLE_INFLIGHT && idle_next < idle_n) {
    idle_conn *c = &idle_cs[idle_next++];
    CHECK(uv_tcp_init(loop, &c->tcp));
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&target,
                            idle_connect_cb);
    if (rc < 0) {
      fprintf(stderr, "loadgen: idle connect: %s\n", uv_strerror(rc));
      uv_close((uv_handle_t *)&c->tcp, NULL);
      idle_fail("connect");
      return;
    }
    idle_inflight++;
  }
  if (idle_ready == idle_n) {
    /* Give the server a moment to finish whatever follows the echo (re-arming a
     * read, freeing a write request) before its memory is sampled. */
    uv_timer_stop(&idle_timer);
    CHECK(uv_timer_start(&idle_timer, idle_settled_cb, IDLE_SETTLE_MS, 0));
  }
}

static void idle_signal_cb(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  idle_hold_end();
}

static void idle_stdin_cb(uv_poll_t *p, int status, int events) {
  (void)events;
  char b[256];
  ssize_t n = status < 0 ? 0 : read(0, b, sizeof b);
  if (n > 0 || (n < 0 && errno == EAGAIN)) return;
  uv_poll_stop(p);
  idle_hold_end();
}

static int run_idle(int n) {
  idle_n = n;
  idle_cs = calloc((size_t)n, sizeof *idle_cs);
  if (!idle_cs) return 2;
  if (server_pid) rss_before_kb = proc_rss_kb(server_pid);
  CHECK(uv_timer_init(loop, &idle_timer));
  CHECK(uv_timer_start(&idle_timer, idle_setup_timeout_cb, IDLE_SETUP_MAX_S * 1000, 0));
  CHECK(uv_signal_init(loop, &sig_term));
  CHECK(uv_signal_start(&sig_term, idle_signal_cb, SIGTERM));
  CHECK(uv_signal_init(loop, &sig_int));
  CHECK(uv_signal_start(&sig_int, idle_signal_cb, SIGINT));
  /* Watch stdin only when it is a pipe or a terminal: a background job's stdin is
   * /dev/null, whose instant EOF would end the hold before it began. */
  struct stat st;
  if (fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(0))) {
    if (uv_poll_init(loop, &stdin_poll, 0) == 0) {
      stdin_watched = 1;
      CHECK(uv_poll_start(&stdin_poll, UV_READABLE, idle_stdin_cb));
    }
  }
  phase = PH_WINDOW;
  idle_launch();
  uv_run(loop, UV_RUN_DEFAULT);
  return errors ? 1 : 0;
}

/* ------------------------------------------------------------------------ sink */

static uv_tcp_t sink_server;
static uv_timer_t sink_timer;

/* The sink discards with recv(MSG_TRUNC), which Linux's TCP takes as "drop these
 * bytes" without copying them out: it shares a CPU with the load generator, and a
 * sink that copied 64 KiB per read into a scratch buffer was half of that CPU's work
 * in proxy_bulk, which then capped every proxy's throughput alike. The connection is
 * watched through a dup of its descriptor by a uv_poll_t, since libuv's stream reads
 * always copy. */
typedef struct sink_conn {
  uv_poll_t poll;
  int fd;
} sink_conn;

static void sink_conn_free(uv_handle_t *h) {
  sink_conn *c = (sink_conn *)h;
  close(c->fd);
  free(c);
}

static void sink_poll_cb(uv_poll_t *p, int status, int events) {
  sink_conn *c = (sink_conn *)p;
  int i;
  (void)events;
  if (status >= 0) {
    for (i = 0; i < 16; i++) {
      ssize_t n = recv(c->fd, NULL, 1 << 20, MSG_TRUNC | MSG_DONTWAIT);
      if (n > 0) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      break; /* 0: the peer's FIN; or an error */
    }
    if (i == 16) return; /* more to come: the poll says so again */
  }
  if (!uv_is_closing((uv_handle_t *)p)) uv_close((uv_handle_t *)p, sink_conn_free);
}

static void sink_tcp_free(uv_handle_t *h) { free(h); }

static void sink_connection_cb(uv_stream_t *srv, int status) {
  uv_os_fd_t fd;
  sink_conn *c;
  uv_tcp_t *t;
  if (status < 0) return;
  t = malloc(sizeof *t);
  if (!t) return;
  CHECK(uv_tcp_init(loop, t));
  if (uv_accept(srv, (uv_stream_t *)t) < 0 || uv_fileno((uv_handle_t *)t, &fd) < 0) {
    uv_close((uv_handle_t *)t, sink_tcp_free);
    return;
  }
  c = malloc(sizeof *c);
  if (c) c->fd = dup(fd);
  uv_close((uv_handle_t *)t, sink_tcp_free); /* the dup keeps the connection */
  if (!c) return;
  if (c->fd < 0 || uv_poll_init(loop, &c->poll, c->fd) < 0) {
    if (c->fd >= 0) close(c->fd);
    free(c);
    return;
  }
  CHECK(uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, sink_poll_cb));
}

static void sink_stop_cb(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  stop_everything();
}

static void sink_timeout_cb(uv_timer_t *t) {
  (void)t;
  stop_everything();
}

static int run_sink(void) {
  CHECK(uv_tcp_init(loop, &sink_server));
  CHECK(uv_tcp_bind(&sink_server, (const struct sockaddr *)&target, 0));
  CHECK(uv_listen((uv_stream_t *)&sink_server, 511, sink_connection_cb));
  struct sockaddr_storage name;
  int len = sizeof name;
  CHECK(uv_tcp_getsockname(&sink_server, (struct sockaddr *)&name, &len));
  printf("PORT %d\n", ntohs(((struct sockaddr_in *)&name)->sin_port));
  fflush(stdout);
  CHECK(uv_signal_init(loop, &sig_term));
  CHECK(uv_signal_start(&sig_term, sink_stop_cb, SIGTERM));
  CHECK(uv_signal_init(loop, &sig_int));
  CHECK(uv_signal_start(&sig_int, sink_stop_cb, SIGINT));
  CHECK(uv_timer_init(loop, &sink_timer));
  CHECK(uv_timer_start(&sink_timer, sink_timeout_cb, (uint64_t)(hold_s * 1000.0), 0));
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

/* ------------------------------------------------------------------------ main */

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen [-p PID] [-w WARMUP_S] [-t HOLD_S] MODE HOST PORT ...\n"
          "  pingpong HOST PORT C M SECONDS\n"
          "  bulk     HOST PORT SECONDS\n"
          "  bulksend HOST PORT SECONDS\n"
          "  connrate HOST PORT C SECONDS\n"
          "  idle     HOST PORT N\n"
          "  sink     HOST PORT\n");
  exit(2);
}

static double arg_num(const char *s, double min) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || v < min) usage();
  return v;
}

int main(int argc, char **argv) {
  int opt;
  /* '+': options end at the mode, as the usage line shows. */
  while ((opt = getopt(argc, argv, "+p:w:t:")) != -1) {
    switch (opt) {
      case 'p': server_pid = (int)arg_num(optarg, 1); break;
      case 'w': warmup_s = arg_num(optarg, 0); break;
      case 't': hold_s = arg_num(optarg, 0); break;
      default: usage();
    }
  }
  argc -= optind;
  argv += optind;
  if (argc < 3) usage();
  const char *mode = argv[0];
  int port = (int)arg_num(argv[2], 0);
  if (uv_ip4_addr(argv[1], port, &target) != 0) {
    fprintf(stderr, "loadgen: HOST must be a numeric IPv4 address\n");
    return 2;
  }
  /* A peer that vanishes must show up as an error code, not kill the generator. */
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  loop = uv_default_loop();
  int rc;
  if (strcmp(mode, "pingpong") == 0 && argc == 6) {
    rc = run_pingpong((int)arg_num(argv[3], 1), (size_t)arg_num(argv[4], 1),
                      arg_num(argv[5], 0.01));
  } else if (strcmp(mode, "bulk") == 0 && argc == 4) {
    rc = run_bulk(arg_num(argv[3], 0.01), 0);
  } else if (strcmp(mode, "bulksend") == 0 && argc == 4) {
    rc = run_bulk(arg_num(argv[3], 0.01), 1);
  } else if (strcmp(mode, "sink") == 0 && argc == 3) {
    rc = run_sink();
  } else if (strcmp(mode, "connrate") == 0 && argc == 5) {
    rc = run_connrate((int)arg_num(argv[3], 1), arg_num(argv[4], 0.01));
  } else if (strcmp(mode, "idle") == 0 && argc == 4) {
    rc = run_idle((int)arg_num(argv[3], 1));
  } else {
    usage();
    rc = 2;
  }
  fflush(stdout);
  /* The loop may still hold closing handles; it owns nothing else worth freeing. */
  uv_loop_close(loop);
  return rc;
}
