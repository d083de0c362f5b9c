/* c_proxy.c: the proxy baseline of the fwx benchmarks, a TCP proxy in plain C on
 * libuv, written the way a careful libuv user would write it.
 *
 *   c_proxy PORT UPSTREAM_HOST UPSTREAM_PORT      (PORT 0 = any free port)
 *
 * Listens on 127.0.0.1, prints "PORT n" on stdout once listening, and exits on
 * SIGTERM or SIGINT after closing every handle.
 *
 * Each accepted connection gets its own upstream connection; reading on both sides
 * starts once the upstream connect succeeds. Bytes read on one side are tried at once
 * on the other with uv_try_write, and only the rest is copied and queued. A side
 * stops reading while its peer has more than 64 KiB queued, and resumes when the
 * queue drains below that (a small high-water mark keeps the data hot in cache; on
 * these machines it doubled bulk throughput against 1 MiB). EOF on one side is passed
 * on as a shutdown of the other; the pair closes when both directions are done or on
 * the first error.
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
      fprintf(stderr, "c_proxy: %s: %s\n", #expr, uv_strerror(check_rc_));   \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

typedef struct pair_s pair_t;

typedef struct side_s {
  uv_tcp_t tcp;        /* first member: the handle pointer is the side pointer */
  struct side_s *peer;
  pair_t *pair;
  int paused;          /* reading stopped because the peer has too much queued */
  int eof;             /* this side sent EOF */
} side_t;

struct pair_s {
  side_t client, upstream;
  uv_connect_t creq;
  uv_shutdown_t sreq[2];
  int shutdowns;       /* shutdowns still pending */
  int closing;
  int closed;          /* handles whose close callback ran */
};

typedef struct {
  uv_write_t req;
  char data[];
} wreq_t;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;
static struct sockaddr_in upstream_addr;
static char rbuf[64 * 1024];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_pair_closed(uv_handle_t *h) {
  pair_t *p = ((side_t *)h)->pair;
  if (++p->closed == 2) free(p);
}

/* Pending writes and shutdowns get UV_ECANCELED before the close callbacks run, so
 * the pair outlives every request that points into it. */
static void pair_close(pair_t *p) {
  if (p->closing) return;
  p->closing = 1;
  uv_close((uv_handle_t *)&p->client.tcp, on_pair_closed);
  uv_close((uv_handle_t *)&p->upstream.tcp, on_pair_closed);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status) {
  side_t *dst = (side_t *)req->handle;
  free(req);
  if (status < 0) {
    pair_close(dst->pair);
    return;
  }
  side_t *src = dst->peer;
  if (src->paused && dst->tcp.write_queue_size <= HIGH_WATER && !dst->pair->closing) {
    src->paused = 0;
    if (uv_read_start((uv_stream_t *)&src->tcp, on_alloc, on_read) < 0) pair_close(src->pair);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  pair_t *p = ((side_t *)req->handle)->pair;
  p->shutdowns--;
  if (status < 0 || (p->client.eof && p->upstream.eof && p->shutdowns == 0)) pair_close(p);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  side_t *src = (side_t *)s;
  side_t *dst = src->peer;
  pair_t *p = src->pair;
  if (nread == UV_EOF) {
    /* Half close: forward the FIN once the queued bytes are out. */
    src->eof = 1;
    uv_read_stop(s);
    int i = src == &p->client ? 0 : 1;
    if (uv_shutdown(&p->sreq[i], (uv_stream_t *)&dst->tcp, on_shutdown) < 0)
      pair_close(p);
    else
      p->shutdowns++;
    return;
  }
  if (nread < 0) {
    pair_close(p);
    return;
  }
  if (nread == 0) return;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
  int n = uv_try_write((uv_stream_t *)&dst->tcp, &b, 1);
  if (n == nread) return;
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    pair_close(p);
    return;
  }
  size_t rest = (size_t)nread - (size_t)n;
  wreq_t *w = malloc(sizeof *w + rest);
  if (!w) {
    pair_close(p);
    return;
  }
  memcpy(w->data, buf->base + n, rest);
  b = uv_buf_init(w->data, (unsigned)rest);
  if (uv_write(&w->req, (uv_stream_t *)&dst->tcp, &b, 1, on_write) < 0) {
    free(w);
    pair_close(p);
    return;
  }
  if (dst->tcp.write_queue_size > HIGH_WATER) {
    src->paused = 1;
    uv_read_stop(s);
  }
}

static void on_upstream_connect(uv_connect_t *req, int status) {
  pair_t *p = req->data;
  if (status < 0 || p->closing) {
    pair_close(p);
    return;
  }
  if (uv_read_start((uv_stream_t *)&p->client.tcp, on_alloc, on_read) < 0 ||
      uv_read_start((uv_stream_t *)&p->upstream.tcp, on_alloc, on_read) < 0)
    pair_close(p);
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  pair_t *p = calloc(1, sizeof *p);
  if (!p) return;
  p->client.peer = &p->upstream;
  p->upstream.peer = &p->client;
  p->client.pair = p->upstream.pair = p;
  CHECK(uv_tcp_init(loop, &p->client.tcp));
  CHECK(uv_tcp_init(loop, &p->upstream.tcp));
  p->creq.data = p;
  if (uv_accept(srv, (uv_stream_t *)&p->client.tcp) < 0 ||
      uv_tcp_connect(&p->creq, &p->upstream.tcp, (const struct sockaddr *)&upstream_addr,
                     on_upstream_connect) < 0)
    pair_close(p);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h != (uv_handle_t *)&server)
    pair_close(((side_t *)h)->pair);
  else
    uv_close(h, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  uv_walk(loop, close_walk, NULL);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: c_proxy PORT UPSTREAM_HOST UPSTREAM_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  loop = uv_default_loop();
  CHECK(uv_ip4_addr(argv[2], atoi(argv[3]), &upstream_addr));
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
