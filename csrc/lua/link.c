/* link.c: the "fwx.link" class, an end of a link between two data filters of the
 * host's chain (csrc/core/link.c, lua/fwx/link.lua). It has a socket's methods and
 * notifies as a socket does: its packets are FWX_OP_RECV and FWX_OP_SEND, anchored in
 * the service's anchor table with the end as their object (so the end is not collected
 * while one is pending, and an error its handler raises names it). User value 1 is the
 * service box, 2 and 3 the addresses GetSockName and GetPeerName give. The await
 * style's recv and send are added in Lua (lua/fwx/link.lua). */
#include "lfwx.h"

enum { LINK_UV_SERVICE = 1, LINK_UV_SOCKNAME = 2, LINK_UV_PEERNAME = 3, LINK_NUV = 3 };

typedef struct lfwx_link { LFWX_TAG; fwx_link_t *l; } lfwx_link_t;

static lfwx_link_t *check_open(lua_State *L, int idx, const char *what) {
  lfwx_link_t *box = lfwx_checkudata(L, idx, LFWX_LINK);
  if (box->l == NULL || fwx_link_closed(box->l)) luaL_error(L, "%s: socket is closed", what);
  return box;
}

/* The end's service, open, and its anchor table pushed (returned: the index). */
static lfwx_service_t *open_service(lua_State *L, lfwx_link_t *box, int *tidx) {
  lfwx_service_t *sv = fwx_port_owner(fwx_link_port(box->l));
  if (sv->closing || sv->closed) luaL_error(L, "service is closed");
  lua_getiuservalue(L, 1, LINK_UV_SERVICE);
  *tidx = lfwx_push_anchors(L, lua_gettop(L));
  return sv;
}

static int start_failed(lua_State *L, lfwx_service_t *sv, int tidx, int slot, int r) {
  lfwx_unanchor(L, sv, tidx, slot);
  return lfwx_raise(L, r, "link");
}

/* e:Recv(buffer_or_nil, sink, ud) */
static int l_recv(lua_State *L) {
  lfwx_link_t *box;
  lfwx_service_t *sv;
  fwx_buffer_t *buf = NULL;
  int slot, r, t;
  lua_settop(L, 4);
  box = check_open(L, 1, "Recv");
  if (!lua_isnil(L, 2)) {
    buf = lfwx_check_buffer(L, 2);
    luaL_argcheck(L, fwx_buffer_capacity(buf) > 0, 2, "buffer has no room");
    r = fwx_buffer_writable(buf);
    if (r == FWX_ELOCKED) luaL_argerror(L, 2, "buffer is lent to a pending operation");
    if (r != 0) luaL_argerror(L, 2, "buffer is constant");
  }
  lfwx_check_sink(L, 3, "CompleteAsyncIO", 0);
  if (fwx_link_receiving(box->l)) return luaL_error(L, "Recv: a receive is already pending on this socket");
  sv = open_service(L, box, &t);
  slot = lfwx_anchor_io(L, sv, t, 1, 3, 4, 2);
  r = fwx_link_recv(box->l, buf, (uintptr_t)slot);
  if (r != 0) return start_failed(L, sv, t, slot, r);
  return 0;
}

/* e:Send(buffer_or_string [, sink, ud]): the bytes are copied at the call. */
static int l_send(lua_State *L) {
  lfwx_link_t *box;
  lfwx_service_t *sv;
  const char *data;
  size_t len;
  int slot = 0, r, t = 0, notify;
  box = check_open(L, 1, "Send");
  if (lua_type(L, 2) == LUA_TSTRING) {
    data = lua_tolstring(L, 2, &len);
  } else {
    fwx_buffer_t *b = lfwx_test_buffer(L, 2);
    if (b == NULL) luaL_typeerror(L, 2, "fwx.buffer or string");
    data = fwx_buffer_data(b);
    len = fwx_buffer_size(b);
  }
  notify = lua_type(L, 3) > LUA_TNIL;
  if (notify) {
    lfwx_check_sink(L, 3, "CompleteAsyncIO", 1);
    lua_settop(L, 4);
    sv = open_service(L, box, &t);
    slot = lfwx_anchor_io(L, sv, t, 1, 3, 4, 2);
  } else {
    sv = fwx_port_owner(fwx_link_port(box->l));
    if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  }
  r = fwx_link_send(box->l, data, len, notify, (uintptr_t)slot);
  if (r != 0) {
    if (slot != 0) lfwx_unanchor(L, sv, t, slot);
    return lfwx_raise(L, r, "link");
  }
  return 0;
}

static int l_close(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  if (box->l != NULL) fwx_link_close(box->l, lua_toboolean(L, 2));
  lua_pushboolean(L, 1);
  return 1;
}

/* e:Shutdown([abortive]): no more sends; abortive, the same as Close(true). */
static int l_shutdown(lua_State *L) {
  lfwx_link_t *box;
  if (lua_toboolean(L, 2)) return l_close(L);
  box = check_open(L, 1, "Shutdown");
  fwx_link_shutdown(box->l);
  lua_pushboolean(L, 1);
  return 1;
}

/* e:CancelIo() -> whether it ended a pending Recv (which then notifies 995). */
static int l_cancel_io(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  lua_pushboolean(L, box->l != NULL && fwx_link_cancel_io(box->l) > 0);
  return 1;
}

/* e:setsendlimit(bytes): as a socket's, on the bytes the other end has not taken. */
static int l_setsendlimit(lua_State *L) {
  lfwx_link_t *box = check_open(L, 1, "setsendlimit");
  fwx_link_set_send_limit(box->l, (size_t)lfwx_check_count(L, 2, "bytes"));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_is_closed(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  lua_pushboolean(L, box->l == NULL || fwx_link_closed(box->l));
  return 1;
}

static int l_get_sock_name(lua_State *L) {
  lfwx_checkudata(L, 1, LFWX_LINK);
  lua_getiuservalue(L, 1, LINK_UV_SOCKNAME);
  return 1;
}

static int l_get_peer_name(lua_State *L) {
  lfwx_checkudata(L, 1, LFWX_LINK);
  lua_getiuservalue(L, 1, LINK_UV_PEERNAME);
  return 1;
}

static int l_no_options(lua_State *L) {
  return luaL_error(L, "a link between data filters has no socket options");
}

/* __gc: nothing references the end and nothing is pending (a pending operation anchors
 * it): close it gracefully, so that the other end reads the end of the stream. */
static int l_gc(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  if (box->l != NULL) {
    fwx_link_free(box->l);
    box->l = NULL;
  }
  return 0;
}

static int l_tbc(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  if (box->l != NULL) fwx_link_close(box->l, 0);
  return 0;
}

static int l_tostring(lua_State *L) {
  lfwx_link_t *box = lfwx_checkudata(L, 1, LFWX_LINK);
  lua_pushfstring(L, "fwx.link (%s, %p)",
                  box->l == NULL || fwx_link_closed(box->l) ? "closed" : "open", (void *)box);
  return 1;
}

/* The user values of the end at idx: the service at 1, its names at sock and peer. */
static void set_end_values(lua_State *L, int idx, int sock, int peer) {
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, LINK_UV_SERVICE);
  lua_pushvalue(L, sock);
  lua_setiuservalue(L, idx, LINK_UV_SOCKNAME);
  lua_pushvalue(L, peer);
  lua_setiuservalue(L, idx, LINK_UV_PEERNAME);
}

/* core.link_pair(fw [, a_name, b_name]) -> a, b: the ends of a new link. a's
 * GetSockName is a_name and its GetPeerName b_name; b's the other way round. */
int lfwx_link_pair(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  fwx_link_t *x, *y;
  lfwx_link_t *a, *b;
  int r;
  lua_settop(L, 3);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  /* The boxes first: an error after fwx_link_pair would leave the ends unowned. */
  a = lfwx_newobject(L, sizeof *a, LFWX_LINK, LINK_NUV);
  b = lfwx_newobject(L, sizeof *b, LFWX_LINK, LINK_NUV);
  r = fwx_link_pair(sv->port, &x, &y);
  if (r != 0) return lfwx_raise(L, r, "link");
  a->l = x;
  b->l = y;
  set_end_values(L, 4, 2, 3);
  set_end_values(L, 5, 3, 2);
  return 2;
}

int lfwx_open_link(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"Recv", l_recv},
    {"Send", l_send},
    {"Shutdown", l_shutdown},
    {"Close", l_close},
    {"CancelIo", l_cancel_io},
    {"IsClosed", l_is_closed},
    {"setsendlimit", l_setsendlimit},
    {"GetSockName", l_get_sock_name},
    {"GetPeerName", l_get_peer_name},
    {"SetSockOpt", l_no_options},
    {"GetSockOpt", l_no_options},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_tbc},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  /* recv and send are the await style's (lua/fwx/link.lua). */
  static const char *const skip[] = {"Recv", "Send", NULL};
  lfwx_newclass(L, LFWX_LINK, methods, meta, skip);
  return 0;
}
