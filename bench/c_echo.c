/* c_echo.c: the baseline of the fwx benchmarks, a TCP echo server in plain C on
 * libuv, written the way a careful libuv user would write it.
 *
 *   c_echo PORT        (0 = any free port)
 *
 * Listens on 127.0.0.1, prints "PORT n" on stdout once listening, and exits on
 * SIGTERM or SIGINT after closing every handle.
 *
 * The hot path: reads land in one reused buffer (the echo is written before the next
 * read can arrive, so no per-read allocation); the echo is tried with uv_try_write
 * and only the part the kernel refuses is copied and queued with uv_write (libuv 1.44
 * adds an epoll_ctl to every uv_write). Reading pauses while more than 64 KiB wait
 * to be written, so a client that does not read cannot grow the server's memory.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#define HIGH_WATER (64 * 1024)

#define CHECK(expr)                                                          \
  do {                                                                       \
    int check_rc_ = (expr);                                                  \
    if (check_rc_ < 0) {                                                     \
      fprintf(stderr, "c_echo: %s: %s\n", #expr, uv_strerror(check_rc_));    \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

typedef struct {
  uv_tcp_t tcp;
  int paused;          /* reading stopped because too much is queued */
} conn_t;

/* A queued write owns a copy of the bytes the kernel did not take. */
typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static char rbuf[64 * 1024];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_close(uv_handle_t *h) {
  free(h);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status) {
  conn_t *c = (conn_t *)req->handle;
  free(req);
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->paused && c->tcp.write_queue_size <= HIGH_WATER) {
    c->paused = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) conn_close(c);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)s;
  if (nread < 0) {
    conn_close(c);  /* EOF or error: a ping-pong peer has nothing more to say */
    return;
  }
  if (nread == 0) return;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
  int n = uv_try_write(s, &b, 1);
  if (n == nread) return;
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    conn_close(c);
    return;
  }
  size_t rest = (size_t)nread - (size_t)n;
  wreq_t *w = malloc(sizeof *w + rest);
  if (!w) {
    conn_close(c);
    return;
  }
  memcpy(w->data, buf->base + n, rest);
  b = uv_buf_init(w->data, (unsigned)rest);
  if (uv_write(&w->req, s, &b, 1, on_write) < 0) {
    free(w);
    conn_close(c);
    return;
  }
  if (s->write_queue_size > HIGH_WATER) {
    c->paused = 1;
    uv_read_stop(s);
  }
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;  /* e.g. EMFILE: the next connection may fare better */
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  CHECK(uv_tcp_init(loop, &c->tcp));
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_close(c);
  }
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  /* Connections are heap allocated, the rest is static. */
  if (h->type == UV_TCP && h != (uv_handle_t *)&server)
    uv_close(h, on_close);
  else
    uv_close(h, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  uv_walk(loop, close_walk, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: c_echo PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Thousands of idle connections need more descriptors than the usual soft limit. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  loop = uv_default_loop();
  struct sockaddr_in addr;
  CHECK(uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr));
  CHECK(uv_tcp_init(loop, &server));
  CHECK(uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0));
  CHECK(uv_listen((uv_stream_t *)&server, 511, on_connection));
  struct sockaddr_storage name;
  int len = sizeof name;
  CHECK(uv_tcp_getsockname(&server, (struct sockaddr *)&name, &len));
  printf("PORT %d\n", ntohs(((struct sockaddr_in *)&name)->sin_port));
  fflush(stdout);
  CHECK(uv_signal_init(loop, &sig_term));
  CHECK(uv_signal_start(&sig_term, on_signal, SIGTERM));
  CHECK(uv_signal_init(loop, &sig_int));
  CHECK(uv_signal_start(&sig_int, on_signal, SIGINT));
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return 0;
}
