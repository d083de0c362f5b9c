/* read_budget_test.c: one poll reads at most a budget of bytes into the port's arena,
 * and the reads it defers are done by the next polls, with nothing lost.
 *
 * N connections each have BYTES waiting in the kernel before the server arms its
 * receives, so a single poll finds every one of them readable. Without the budget that
 * poll would read all N * BYTES (far past the arena budget); with it, it reads a few
 * and the rest come in later polls, the deferred ones first (a TCP socket's deferred
 * read is queued and done before the next poll, csrc/core/deferred.c). Then the same with N UDP
 * sockets holding a datagram each. Every byte is checked. Exit 0 and "ok". */
#include "fwx.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

enum { N = 64, BYTES = 60000 }; /* 3.7 MB in all, well past the budget */
/* The core's read budget per poll and read size (FWX__READ_BUDGET, FWX__READ_CHUNK). */
enum { BUDGET = 256 * 1024, CHUNK = 65536 };
enum { K_ACCEPT = 1, K_CONNECT, K_RECV = 1000 };

static char pattern(int conn, size_t at) { return (char)((conn * 31 + at) % 251); }

int main(void) {
  fwx_port_t *port;
  fwx_socket_t *ls, *cli[N], *srv[N];
  fwx_completion_t c;
  struct sockaddr_storage name;
  struct sockaddr_in addr;
  static char data[BYTES];
  size_t got[N] = {0}, first_poll;
  int i, accepted = 0, connected = 0, done = 0, polls = 0;

  CHECK(fwx_port_new(&port) == 0);
  CHECK(fwx_socket_new(port, FWX_TCP, &ls) == 0);
  uv_ip4_addr("127.0.0.1", 0, &addr);
  CHECK(fwx_socket_bind(ls, (struct sockaddr *)&addr) == 0);
  CHECK(fwx_socket_listen(ls, N) == 0);
  CHECK(fwx_socket_name(ls, 0, &name) == 0);
  CHECK(fwx_socket_accept(ls, K_ACCEPT) == 0);
  for (i = 0; i < N; i++) {
    CHECK(fwx_socket_new(port, FWX_TCP, &cli[i]) == 0);
    CHECK(fwx_socket_connect(cli[i], (struct sockaddr *)&name, K_CONNECT) == 0);
  }
  /* Accept all and connect all; the server's sockets are in accept order, and the
   * first byte each client sends says which client it is. */
  while (accepted < N || connected < N) {
    CHECK(fwx_port_wait(port, &c, 5000) == 1);
    CHECK(c.ok);
    if (c.key == K_ACCEPT) {
      srv[accepted++] = c.accepted;
      c.accepted = NULL;
      if (accepted < N) CHECK(fwx_socket_accept(ls, K_ACCEPT) == 0);
    } else {
      CHECK(c.key == K_CONNECT);
      connected++;
    }
    fwx_completion_release(&c);
  }
  for (i = 0; i < N; i++) {
    size_t k;
    data[0] = (char)i;
    for (k = 1; k < BYTES; k++) data[k] = pattern(i, k);
    CHECK(fwx_socket_send(cli[i], NULL, data, BYTES, NULL, 0, 0) == 0);
  }
  usleep(100 * 1000); /* loopback: the bytes are in the server sockets' buffers */
  for (i = 0; i < N; i++) CHECK(fwx_socket_recv(srv[i], NULL, K_RECV + (uintptr_t)i) == 0);

  first_poll = fwx_port_poll(port, 1);
  CHECK(first_poll >= 1);
  CHECK(first_poll < N); /* the budget stopped the poll short */

  /* Drain: ids come from the first byte; each receive is re-armed until all is in. */
  {
    int owner[N];
    for (i = 0; i < N; i++) owner[i] = -1;
    while (done < N) {
      while (fwx_port_get(port, &c)) {
        int s = (int)(c.key - K_RECV);
        size_t k;
        CHECK(c.kind == FWX_OP_RECV && c.ok && c.bytes > 0 && s >= 0 && s < N);
        for (k = 0; k < c.bytes; k++) {
          size_t at = got[s] + k;
          if (at == 0) {
            owner[s] = (unsigned char)c.data[0];
          } else {
            CHECK(c.data[k] == pattern(owner[s], at));
          }
        }
        got[s] += c.bytes;
        fwx_completion_release(&c);
        if (got[s] == BYTES)
          done++;
        else
          CHECK(fwx_socket_recv(srv[s], NULL, K_RECV + (uintptr_t)s) == 0);
      }
      if (done < N) {
        fwx_port_poll(port, 1);
        CHECK(++polls < 100000);
      }
    }
  }

  /* Fairness: N connections with ROUNDS chunks each waiting, every receive re-armed as
   * soon as it completes. The poll reports ready sockets in the same order each time;
   * if the first ones were served again and again the last ones would wait until those
   * ran dry (about ROUNDS times longer). The reads a poll defers are queued and done
   * in that order before the next poll, a budget at a time, so every connection gets
   * its first bytes within N / (reads per budget) polls. */
  {
    enum { ROUNDS = 4 };
    int first_at[N], poll_no = 0, worst = 0;
    size_t left[N], per_poll = BUDGET / CHUNK; /* the fewest: each read is a whole chunk */
    for (i = 0; i < N; i++) {
      int k;
      first_at[i] = -1;
      left[i] = (size_t)ROUNDS * BYTES;
      for (k = 0; k < ROUNDS; k++) CHECK(fwx_socket_send(cli[i], NULL, data, BYTES, NULL, 0, 0) == 0);
    }
    usleep(100 * 1000);
    for (i = 0; i < N; i++) CHECK(fwx_socket_recv(srv[i], NULL, K_RECV + (uintptr_t)i) == 0);
    done = 0;
    while (done < N) {
      fwx_port_poll(port, 1);
      poll_no++;
      CHECK(poll_no < 100000);
      while (fwx_port_get(port, &c)) {
        int s = (int)(c.key - K_RECV);
        CHECK(c.kind == FWX_OP_RECV && c.ok && s >= 0 && s < N && c.bytes <= left[s]);
        if (first_at[s] < 0) first_at[s] = poll_no;
        left[s] -= c.bytes;
        fwx_completion_release(&c);
        if (left[s] == 0)
          done++;
        else
          CHECK(fwx_socket_recv(srv[s], NULL, K_RECV + (uintptr_t)s) == 0);
      }
    }
    for (i = 0; i < N; i++)
      if (first_at[i] > worst) worst = first_at[i];
    /* Fair: N / per_poll polls and some slack (17 of 18 here); served in poll order,
     * without the queue (re-armed reads went first) the last got them at poll 38. */
    if (worst > (int)((N + per_poll - 1) / per_poll) + 2) {
      fprintf(stderr, "a connection first got bytes at poll %d\n", worst);
      exit(1);
    }
  }

  /* The same for datagrams: N UDP sockets with one datagram each waiting. */
  {
    fwx_socket_t *u[N], *sender;
    struct sockaddr_storage to[N];
    int seen = 0;
    CHECK(fwx_socket_new(port, FWX_UDP, &sender) == 0);
    CHECK(fwx_socket_bind(sender, (struct sockaddr *)&addr) == 0);
    for (i = 0; i < N; i++) {
      size_t k;
      CHECK(fwx_socket_new(port, FWX_UDP, &u[i]) == 0);
      CHECK(fwx_socket_bind(u[i], (struct sockaddr *)&addr) == 0);
      CHECK(fwx_socket_name(u[i], 0, &to[i]) == 0);
      data[0] = (char)i;
      for (k = 1; k < BYTES; k++) data[k] = pattern(i, k);
      CHECK(fwx_socket_send(sender, NULL, data, BYTES, (struct sockaddr *)&to[i], 0, 0) == 0);
    }
    usleep(100 * 1000);
    for (i = 0; i < N; i++) CHECK(fwx_socket_recv(u[i], NULL, K_RECV + (uintptr_t)i) == 0);
    first_poll = fwx_port_poll(port, 1);
    CHECK(first_poll >= 1 && first_poll < N);
    while (seen < N) {
      while (fwx_port_get(port, &c)) {
        int s = (int)(c.key - K_RECV);
        size_t k;
        CHECK(c.kind == FWX_OP_RECV && c.ok && c.bytes == BYTES && s >= 0 && s < N);
        CHECK((unsigned char)c.data[0] == s);
        for (k = 1; k < BYTES; k++) CHECK(c.data[k] == pattern(s, k));
        fwx_completion_release(&c);
        seen++;
      }
      if (seen < N) {
        fwx_port_poll(port, 1);
        CHECK(++polls < 100000);
      }
    }
    for (i = 0; i < N; i++) {
      CHECK(fwx_socket_close(u[i], 0) == 0);
      fwx_socket_unref(u[i]);
    }
    CHECK(fwx_socket_close(sender, 0) == 0);
    fwx_socket_unref(sender);
  }

  fwx_port_shutdown(port);
  while (fwx_port_pending(port) > 0) {
    CHECK(fwx_port_wait(port, &c, 1000) == 1);
    fwx_completion_release(&c);
  }
  CHECK(fwx_port_finish(port) == 0);
  for (i = 0; i < N; i++) {
    fwx_socket_unref(cli[i]);
    fwx_socket_unref(srv[i]);
  }
  fwx_socket_unref(ls);
  fwx_port_unref(port);
  printf("ok\n");
  return 0;
}
