/* core_test.c: the C core on its own, as a C program that brings its own loop would
 * use it: no Lua. A TCP echo over 127.0.0.1 through fwx_port_wait (the
 * GetQueuedCompletionStatus of the model), posted tasks, cancelled timers and
 * shutdown with operations pending. Exit status 0 and "ok" on success. */
#include "fwx.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);    \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

enum { K_ACCEPT = 1, K_CONNECT, K_SRV_RECV, K_CLI_SEND, K_CLI_RECV, K_TASK, K_TIMER };

int main(void) {
  fwx_port_t *port;
  fwx_socket_t *ls, *cli, *srv = NULL;
  fwx_completion_t c;
  fwx_timer_t *timer;
  struct sockaddr_storage name;
  struct sockaddr_in addr;
  int i, tasks = 0, echoed = 0, done = 0;

  CHECK(fwx_port_new(&port) == 0);
  CHECK(fwx_socket_new(port, FWX_TCP, &ls) == 0);
  uv_ip4_addr("127.0.0.1", 0, &addr);
  CHECK(fwx_socket_bind(ls, (struct sockaddr *)&addr) == 0);
  CHECK(fwx_socket_listen(ls, 16) == 0);
  CHECK(fwx_socket_name(ls, 0, &name) == 0);
  CHECK(fwx_socket_accept(ls, K_ACCEPT) == 0);
  CHECK(fwx_socket_accept(ls, K_ACCEPT) == FWX_EBUSY); /* misuse: no second packet */
  CHECK(fwx_socket_new(port, FWX_TCP, &cli) == 0);
  CHECK(fwx_socket_connect(cli, (struct sockaddr *)&name, K_CONNECT) == 0);
  for (i = 0; i < 3; i++) CHECK(fwx_port_post(port, K_TASK) == 0);
  CHECK(fwx_timer_start(port, 60000, 0, K_TIMER, &timer) == 0);

  while (!done) {
    CHECK(fwx_port_wait(port, &c, 5000) == 1);
    switch ((int)c.key) {
    case K_ACCEPT:
      CHECK(c.kind == FWX_OP_ACCEPT && c.ok && c.accepted != NULL);
      srv = c.accepted;
      c.accepted = NULL;
      CHECK(fwx_socket_recv(srv, NULL, K_SRV_RECV) == 0);
      break;
    case K_CONNECT:
      CHECK(c.kind == FWX_OP_CONNECT && c.ok && c.error == 0);
      CHECK(fwx_socket_send(cli, NULL, "ping", 4, NULL, 1, K_CLI_SEND) == 0);
      CHECK(fwx_socket_recv(cli, NULL, K_CLI_RECV) == 0);
      break;
    case K_SRV_RECV:
      CHECK(c.ok && c.bytes == 4 && c.data != NULL && memcmp(c.data, "ping", 4) == 0);
      /* echo without a notification; the bytes are only lent for the call */
      CHECK(fwx_socket_send(srv, NULL, c.data, c.bytes, NULL, 0, 0) == 0);
      break;
    case K_CLI_SEND:
      CHECK(c.kind == FWX_OP_SEND && c.ok && c.bytes == 4);
      break;
    case K_CLI_RECV:
      CHECK(c.ok && c.bytes == 4 && memcmp(c.data, "ping", 4) == 0);
      echoed = 1;
      break;
    case K_TASK:
      CHECK(c.kind == FWX_OP_TASK);
      tasks++;
      break;
    default:
      CHECK(0);
    }
    fwx_completion_release(&c);
    done = echoed && tasks == 3;
  }

  /* The timer is still pending: cancel it, exactly one 995. */
  CHECK(fwx_timer_cancel(timer) == 0);
  CHECK(fwx_timer_cancel(timer) == UV_ENOENT);
  CHECK(fwx_port_wait(port, &c, 1000) == 1);
  CHECK(c.key == K_TIMER && !c.ok && c.error == 995 && c.last);
  fwx_completion_release(&c);
  fwx_timer_unref(timer);

  /* 0 ms timers are queued at once, behind what is queued, and stay cancellable until
   * dequeued: a task, a 0 ms timer, another cancelled before the wait, another task. */
  {
    fwx_timer_t *due, *cancelled;
    CHECK(fwx_port_post(port, K_TASK) == 0);
    CHECK(fwx_timer_start(port, 0, 0, K_TIMER, &due) == 0);
    CHECK(fwx_timer_start(port, 0, 0, K_TIMER + 1, &cancelled) == 0);
    CHECK(fwx_port_post(port, K_TASK + 1) == 0);
    CHECK(fwx_timer_active(due) && fwx_timer_active(cancelled));
    CHECK(fwx_timer_cancel(cancelled) == 0);
    CHECK(fwx_timer_cancel(cancelled) == UV_ENOENT);
    CHECK(fwx_port_get(port, &c) == 1 && c.key == K_TASK);
    CHECK(fwx_port_get(port, &c) == 1 && c.key == K_TIMER && c.ok && c.error == 0);
    CHECK(!fwx_timer_active(due) && fwx_timer_cancel(due) == UV_ENOENT);
    CHECK(fwx_port_get(port, &c) == 1 && c.key == K_TIMER + 1 && !c.ok && c.error == 995);
    CHECK(fwx_port_get(port, &c) == 1 && c.key == K_TASK + 1);
    CHECK(fwx_port_get(port, &c) == 0);
    fwx_timer_unref(due);
    fwx_timer_unref(cancelled);
  }

  /* A placed 0 ms timer lives in the caller's memory, which is free to go once its
   * packet is dequeued; unref does nothing to it. */
  {
    void *mem = malloc(fwx_timer_place_size());
    fwx_timer_t *placed;
    CHECK(mem != NULL);
    CHECK(fwx_timer_place(port, mem, K_TIMER, &placed) == 0);
    CHECK(fwx_timer_active(placed));
    CHECK(fwx_port_get(port, &c) == 1 && c.key == K_TIMER && c.ok && c.object == placed);
    CHECK(!fwx_timer_active(placed) && fwx_timer_cancel(placed) == UV_ENOENT);
    fwx_timer_unref(placed);
    free(mem);
  }

  /* Shutdown with a Recv pending on each side: each ends once, with 995. */
  CHECK(fwx_socket_recv(srv, NULL, K_SRV_RECV) == 0);
  CHECK(fwx_port_pending(port) == 2 /* the client's Recv is still armed too */ ||
        fwx_port_pending(port) == 1);
  fwx_port_shutdown(port);
  i = 0;
  while (fwx_port_pending(port) > 0) {
    if (fwx_port_wait(port, &c, 1000) != 1) break;
    CHECK(!c.ok && c.error == 995);
    fwx_completion_release(&c);
    i++;
  }
  CHECK(fwx_port_pending(port) == 0);
  CHECK(i >= 1);
  CHECK(fwx_socket_recv(srv, NULL, 1) == FWX_ECLOSED); /* misuse after shutdown */
  CHECK(fwx_port_finish(port) == 0);
  fwx_socket_unref(srv);
  fwx_socket_unref(cli);
  fwx_socket_unref(ls);
  fwx_port_unref(port);
  puts("ok");
  return 0;
}
