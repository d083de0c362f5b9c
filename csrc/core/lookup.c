/* lookup.c: GetHostByName, asynchronous here on libuv's getaddrinfo (the SDK's
 * blocks a pool thread). */
#include "fwx-int.h"
#include <netdb.h>

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  fwx__reqop_t *ro = fwx__container_of(req, fwx__reqop_t, req.gai);
  fwx__list_remove(&ro->link);
  if (ro->op.cancelled && res != NULL) {
    uv_freeaddrinfo(res);
    res = NULL;
  }
  ro->op.out.result = res;
  fwx__op_complete(&ro->op, status);
}

int fwx_lookup(fwx_port_t *port, const char *name, uintptr_t key) {
  fwx__reqop_t *ro;
  struct addrinfo hints;
  int r;

  if (port->closing) return FWX_ECLOSED;
  ro = malloc(sizeof *ro);
  if (ro == NULL) return UV_ENOMEM;
  fwx__op_init(&ro->op, port, FWX_OP_LOOKUP);
  ro->op.heap = 3;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM; /* one entry per address, not per socket type */
  fwx__op_start(&ro->op, key, NULL);
  fwx__list_insert(&port->ops, &ro->link);
  r = uv_getaddrinfo(&port->loop, &ro->req.gai, gai_cb, name, NULL, &hints);
  if (r != 0) {
    fwx__list_remove(&ro->link);
    fwx__op_complete(&ro->op, r);
  }
  return 0;
}

void fwx_lookup_free(struct addrinfo *result) { uv_freeaddrinfo(result); }

/* Shutdown: withdraw the look-ups and file requests not yet running in libuv's pool
 * (they end with 995). Look-ups already running end with 995 too; file requests
 * already running finish and report what they did. */
void fwx__lookup_shutdown_all(fwx_port_t *port) {
  fwx__link_t *l;
  for (l = port->ops.next; l != &port->ops; l = l->next) {
    fwx__reqop_t *ro = fwx__container_of(l, fwx__reqop_t, link);
    if (ro->op.kind == FWX_OP_LOOKUP) ro->op.cancelled = 1;
    uv_cancel((uv_req_t *)&ro->req);
  }
}
