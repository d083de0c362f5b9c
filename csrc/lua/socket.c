/* socket.c: the "fwx.socket" class (IFWXNetworkSocket). User value 1 is the service
 * box, so a socket keeps its service alive; 2 and 3 are the sink and user data of its
 * own receive (lfwx.h). Asynchronous methods check every argument first, anchor what the
 * notification needs, then start; a start the core refuses unanchors and raises, so
 * misuse leaves nothing behind. */
#include "lfwx.h"
#include <string.h>

static lfwx_socket_t *check_box(lua_State *L, int idx) {
  lfwx_socket_t *box = lfwx_checkudata(L, idx, LFWX_SOCKET);
  if (box->s == NULL || fwx_socket_closed(box->s)) luaL_error(L, "socket is closed");
  return box;
}

static fwx_socket_t *check_socket(lua_State *L, int idx) { return check_box(L, idx)->s; }

/* The service of an open socket (its user value 1 keeps it alive). */
static lfwx_service_t *service_of(const lfwx_socket_t *box) {
  return fwx_port_owner(fwx_socket_port(box->s));
}

/* The socket's service, open, and its anchor table pushed (returned: the index). */
static lfwx_service_t *open_service(lua_State *L, lfwx_socket_t *box, int *tidx) {
  lfwx_service_t *sv = service_of(box);
  if (sv->closing || sv->closed) luaL_error(L, "service is closed");
  lua_getiuservalue(L, 1, 1);
  *tidx = lfwx_push_anchors(L, lua_gettop(L));
  return sv;
}

void lfwx_push_socket(lua_State *L, fwx_socket_t *s, int svidx) {
  lfwx_socket_t *box = lfwx_newobject(L, sizeof *box, LFWX_SOCKET, LFWX_SOCKET_NUV);
  box->s = s;
  lua_pushvalue(L, svidx);
  lua_setiuservalue(L, -2, 1);
}

/* Buffer or nil at idx; anything else is an argument error. */
static fwx_buffer_t *opt_buffer(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  return lfwx_check_buffer(L, idx);
}

/* A buffer or a string at idx: the bytes to send. */
static fwx_buffer_t *check_payload(lua_State *L, int idx, const char **data, size_t *len) {
  fwx_buffer_t *b;
  if (lua_type(L, idx) == LUA_TSTRING) {
    *data = lua_tolstring(L, idx, len);
    return NULL;
  }
  b = lfwx_test_buffer(L, idx);
  if (b == NULL) luaL_typeerror(L, idx, "fwx.buffer or string");
  *data = NULL;
  *len = 0;
  return b;
}

static int start_failed(lua_State *L, lfwx_service_t *sv, int tidx, int slot, int r) {
  if (slot != 0) lfwx_unanchor(L, sv, tidx, slot);
  return lfwx_raise(L, r, "socket");
}

static int l_bind(lua_State *L) {
  struct sockaddr_storage ss;
  fwx_socket_t *s;
  int r;
  lua_settop(L, 3);
  s = check_socket(L, 1);
  lfwx_check_sockaddr(L, 2, 3, &ss);
  r = fwx_socket_bind(s, (struct sockaddr *)&ss);
  if (r < -10000) return lfwx_raise(L, r, "socket");
  if (r != 0) return lfwx_fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_listen(lua_State *L) {
  fwx_socket_t *s = check_socket(L, 1);
  lua_Integer backlog = luaL_optinteger(L, 2, 511);
  int r;
  luaL_argcheck(L, backlog > 0 && backlog <= 65535, 2, "backlog must be 1 to 65535");
  r = fwx_socket_listen(s, (int)backlog);
  if (r == FWX_ESTATE) return luaL_error(L, "Listen: only a tcp socket that is not listening yet can listen");
  if (r < -10000) return lfwx_raise(L, r, "socket");
  if (r != 0) return lfwx_fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_accept(lua_State *L) {
  lfwx_socket_t *box;
  lfwx_service_t *sv;
  int slot, r, t;
  lua_settop(L, 3);
  box = check_box(L, 1);
  lfwx_check_sink(L, 2, "CompleteAsyncAccept", 0);
  sv = open_service(L, box, &t);
  slot = lfwx_anchor(L, sv, t, 1, 2, 3, 0);
  r = fwx_socket_accept(box->s, (uintptr_t)slot);
  if (r == FWX_ESTATE) {
    lfwx_unanchor(L, sv, t, slot);
    return luaL_error(L, "Accept: the socket is not listening (call Listen first)");
  }
  if (r != 0) return start_failed(L, sv, t, slot, r);
  return 0;
}

static int l_connect(lua_State *L) {
  struct sockaddr_storage ss;
  lfwx_socket_t *box;
  lfwx_service_t *sv;
  int slot, r, t;
  lua_settop(L, 5);
  box = check_box(L, 1);
  lfwx_check_sockaddr(L, 2, 3, &ss);
  lfwx_check_sink(L, 4, "CompleteAsyncConnect", 0);
  sv = open_service(L, box, &t);
  slot = lfwx_anchor(L, sv, t, 1, 4, 5, 0);
  r = fwx_socket_connect(box->s, (struct sockaddr *)&ss, (uintptr_t)slot);
  if (r != 0) return start_failed(L, sv, t, slot, r);
  return 0;
}

/* Start the socket's own receive (the box at boxidx; its sink and user data already
 * in its user values): from its own delivery it is still in its keep slot, and the key
 * is that slot's; otherwise it takes a slot. Returns the core's result; on failure
 * nothing is left behind (from a delivery, the delivery lets the slot go). */
int lfwx_recv_own(lua_State *L, int boxidx, lfwx_socket_t *box) {
  lfwx_service_t *sv = service_of(box);
  int slot, r, kidx, at, top = lua_gettop(L);
  uintptr_t key;
  if (fwx_socket_mark(box->s)) return fwx_socket_recv(box->s, NULL, fwx_socket_recv_key(box->s));
  boxidx = lua_absindex(L, boxidx);
  lua_getiuservalue(L, boxidx, LFWX_SOCKET_UV_SERVICE);
  lua_getiuservalue(L, -1, LFWX_UV_KEEP);
  kidx = lua_gettop(L);
  slot = lfwx_slot_take(L, &sv->kept);
  at = lfwx_keep_chunk(L, kidx, slot);
  kidx = lua_gettop(L);
  lua_pushvalue(L, boxidx);
  lua_rawseti(L, kidx, at);
  key = (uintptr_t)slot << LFWX_A_WIDTH;
  r = fwx_socket_recv(box->s, NULL, key);
  if (r != 0) {
    lua_pushnil(L);
    lua_rawseti(L, kidx, at);
    lfwx_slot_give(&sv->kept, slot);
  } else {
    fwx_socket_set_mark(box->s, 1);
  }
  lua_settop(L, top);
  return r;
}

/* Recv(nil, sink, ud), the socket's own receive (arguments 1, 3 and, if has_ud, 4):
 * the sink and user data go into the socket's user values and the socket into a keep
 * slot. A receive already pending must not lose its values, so that misuse is refused
 * first. */
static int recv_kept(lua_State *L, lfwx_socket_t *box, int has_ud) {
  lfwx_service_t *sv = service_of(box);
  int r;
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  if (fwx_socket_receiving(box->s)) return lfwx_raise(L, FWX_EBUSY, "socket");
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, LFWX_SOCKET_UV_SINK);
  if (has_ud) lua_pushvalue(L, 4); else lua_pushnil(L);
  lua_setiuservalue(L, 1, LFWX_SOCKET_UV_UD);
  r = lfwx_recv_own(L, 1, box);
  return r != 0 ? lfwx_raise(L, r, "socket") : 0;
}

int lfwx_socket_recv(lua_State *L) {
  lfwx_socket_t *box;
  lfwx_service_t *sv;
  fwx_buffer_t *buf;
  int slot, r, t;
  /* Recv(nil, sink [, ud]) is the hot path: lua_settop only when it must pad or cut,
   * and a function sink needs no other look. */
  int n = lua_gettop(L);
  if (n != 4 && n != 3) lua_settop(L, 4);
  box = check_box(L, 1);
  buf = opt_buffer(L, 2);
  if (lua_type(L, 3) != LUA_TFUNCTION) lfwx_check_sink(L, 3, "CompleteAsyncIO", 0);
  /* A filtered pump (relay.c) receives on it: a Recv would take its bytes. */
  if (fwx_socket_owned(box->s)) return lfwx_raise(L, FWX_EPUMPING, "socket");
  if (buf == NULL) return recv_kept(L, box, n != 3);
  lua_settop(L, 4);
  {
    luaL_argcheck(L, fwx_buffer_capacity(buf) > 0, 2, "buffer has no room");
    r = fwx_buffer_writable(buf);
    if (r == FWX_ELOCKED) luaL_argerror(L, 2, "buffer is lent to a pending operation");
    if (r != 0) luaL_argerror(L, 2, "buffer is constant");
  }
  if (fwx_socket_mark(box->s) && !fwx_socket_receiving(box->s)) {
    /* From its own delivery, still in its keep slot: this receive's key replaces
     * that slot's, so let the slot go now. */
    lua_getiuservalue(L, 1, LFWX_SOCKET_UV_SERVICE);
    lfwx_unkeep(L, service_of(box), lua_gettop(L), box->s);
    lua_pop(L, 1);
  }
  sv = open_service(L, box, &t);
  slot = lfwx_anchor_io(L, sv, t, 1, 3, 4, 2);
  r = fwx_socket_recv(box->s, buf, (uintptr_t)slot);
  if (r != 0) return start_failed(L, sv, t, slot, r);
  return 0;
}

/* Send and SendTo share this; to is NULL for Send. Arguments from `first` on:
 * sink, user data. */
static int do_send(lua_State *L, const struct sockaddr *to, int sink_idx) {
  lfwx_socket_t *box;
  lfwx_service_t *sv;
  fwx_buffer_t *buf;
  const char *data;
  size_t len;
  int slot = 0, r, svidx = 0, notify;
  box = check_box(L, 1);
  buf = check_payload(L, 2, &data, &len);
  notify = lua_type(L, sink_idx) > LUA_TNIL; /* absent (none) or nil: no sink */
  if (notify) lfwx_check_sink(L, sink_idx, "CompleteAsyncIO", 1); /* 1: "or nil" */
  sv = service_of(box);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  /* A send with no sink anchors nothing: it passes the bytes, of which the core
   * copies what it cannot write at once, so the buffer is free again on return. */
  if (notify) {
    lua_settop(L, sink_idx + 1); /* the user data may be absent */
    open_service(L, box, &svidx);
    slot = lfwx_anchor_io(L, sv, svidx, 1, sink_idx, sink_idx + 1, 2);
  } else if (buf != NULL) {
    data = fwx_buffer_data(buf);
    len = fwx_buffer_size(buf);
    buf = NULL;
  }
  r = fwx_socket_send(box->s, buf, data, len, to, notify, (uintptr_t)slot);
  if (r == FWX_ESTATE) {
    if (slot != 0) lfwx_unanchor(L, sv, svidx, slot);
    return luaL_error(L, to ? "SendTo: the socket is not a udp socket"
                            : "Send: a listening socket cannot send");
  }
  if (r != 0) return start_failed(L, sv, svidx, slot, r);
  return 0;
}

/* Send(data [, sink, ud]): no lua_settop, which cost a tenth of a sink-less Send to pad
 * two nils; do_send reads an absent sink as none. */
int lfwx_socket_send(lua_State *L) {
  return do_send(L, NULL, 3);
}

static int l_sendto(lua_State *L) {
  struct sockaddr_storage ss;
  lua_settop(L, 6);
  check_socket(L, 1);
  lfwx_check_sockaddr(L, 3, 4, &ss);
  return do_send(L, (struct sockaddr *)&ss, 5);
}

static int l_close(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  if (box->s != NULL) fwx_socket_close(box->s, lua_toboolean(L, 2));
  lua_pushboolean(L, 1);
  return 1;
}

/* s:CancelIo() -> whether it ended a pending Accept or Recv (each then notifies 995).
 * The socket stays open; connects and sends are ended only by closing it. */
static int l_cancel_io(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  lua_pushboolean(L, box->s != NULL && fwx_socket_cancel_io(box->s) > 0);
  return 1;
}

/* __close (a <close> variable): the graceful close, whatever the error value. */
static int l_tbc(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  if (box->s != NULL) fwx_socket_close(box->s, 0);
  return 0;
}

static int l_shutdown(lua_State *L) {
  fwx_socket_t *s;
  int r;
  if (lua_toboolean(L, 2)) return l_close(L); /* abortive shutdown is an abortive close */
  s = check_socket(L, 1);
  r = fwx_socket_shutdown(s);
  if (r == FWX_ESTATE) return luaL_error(L, "Shutdown: only a connected tcp socket can shut down");
  if (r < -10000) return lfwx_raise(L, r, "socket");
  if (r != 0) return lfwx_fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* __gc: a socket nobody references, with nothing pending (pending operations anchor
 * it). Close it gracefully: bytes of sink-less Sends still queued are flushed first. */
static int l_gc(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  if (box->s != NULL) {
    fwx_socket_close(box->s, 0);
    fwx_socket_unref(box->s);
    box->s = NULL;
  }
  return 0;
}

static int push_name(lua_State *L, int peer) {
  struct sockaddr_storage ss;
  int r = fwx_socket_name(check_socket(L, 1), peer, &ss);
  if (r != 0) return lfwx_fail(L, r);
  lfwx_push_address(L, (struct sockaddr *)&ss);
  return 1;
}

static int l_getsockname(lua_State *L) { return push_name(L, 0); }
static int l_getpeername(lua_State *L) { return push_name(L, 1); }

static const char *const opt_names[] = {
  "nodelay", "keepalive", "reuseaddr", "rcvbuf", "sndbuf", "broadcast", "ttl", "reuseport",
  "TCP_NODELAY", "SO_KEEPALIVE", "SO_REUSEADDR", "SO_RCVBUF", "SO_SNDBUF", "SO_BROADCAST",
  "IP_TTL", "SO_REUSEPORT", NULL
};
static const fwx_sockopt_t opt_values[] = {
  FWX_OPT_NODELAY, FWX_OPT_KEEPALIVE, FWX_OPT_REUSEADDR, FWX_OPT_RCVBUF, FWX_OPT_SNDBUF,
  FWX_OPT_BROADCAST, FWX_OPT_TTL, FWX_OPT_REUSEPORT
};
#define NOPTS (sizeof opt_values / sizeof opt_values[0])

static int is_flag(fwx_sockopt_t o) {
  return o == FWX_OPT_NODELAY || o == FWX_OPT_REUSEADDR || o == FWX_OPT_BROADCAST ||
         o == FWX_OPT_REUSEPORT;
}

static int l_setsockopt(lua_State *L) {
  fwx_socket_t *s = check_socket(L, 1);
  fwx_sockopt_t o = opt_values[luaL_checkoption(L, 2, NULL, opt_names) % NOPTS];
  lua_Integer v;
  int r;
  if (lua_isboolean(L, 3)) {
    luaL_argcheck(L, is_flag(o) || o == FWX_OPT_KEEPALIVE, 3, "this option takes a number");
    v = lua_toboolean(L, 3);
  } else {
    v = luaL_checkinteger(L, 3);
    luaL_argcheck(L, v >= 0 && v <= 0x7fffffff, 3, "value out of range");
  }
  if ((o == FWX_OPT_RCVBUF || o == FWX_OPT_SNDBUF) && v <= 0)
    luaL_argerror(L, 3, "buffer size must be positive");
  r = fwx_socket_setopt(s, o, (int)v);
  if (r == FWX_ESTATE) luaL_argerror(L, 2, "option does not apply to this protocol");
  if (r < -10000) return lfwx_raise(L, r, "socket");
  if (r != 0) return lfwx_fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_getsockopt(lua_State *L) {
  fwx_socket_t *s = check_socket(L, 1);
  fwx_sockopt_t o = opt_values[luaL_checkoption(L, 2, NULL, opt_names) % NOPTS];
  int v = 0, r = fwx_socket_getopt(s, o, &v);
  if (r == FWX_ESTATE) luaL_argerror(L, 2, "option does not apply to this protocol");
  if (r < -10000) return lfwx_raise(L, r, "socket");
  if (r != 0) return lfwx_fail(L, r);
  if (is_flag(o) || o == FWX_OPT_KEEPALIVE)
    lua_pushboolean(L, v != 0);
  else
    lua_pushinteger(L, v);
  return 1;
}

static int l_getfd(lua_State *L) {
  lua_pushinteger(L, fwx_socket_fd(check_socket(L, 1)));
  return 1;
}

static int l_isclosed(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  lua_pushboolean(L, box->s == NULL || fwx_socket_closed(box->s));
  return 1;
}

/* s:counters() -> sent, received, operations: the bytes sent on this socket (by its
 * Send and SendTo, or a pump), the bytes received (by its Recv, or a pump), and how
 * many Recv, Send and SendTo it started, counted from the first call of counters() on
 * it (so a socket nobody counts carries no counts). A closed socket keeps its counts. */
static int l_counters(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  fwx_socket_counts_t c;
  if (box->s == NULL) {
    memset(&c, 0, sizeof c);
  } else if (!fwx_socket_counts(box->s, &c) && !fwx_socket_closed(box->s) &&
             fwx_socket_count_start(box->s) != 0) {
    return luaL_error(L, "not enough memory");
  }
  lua_pushinteger(L, (lua_Integer)c.sent);
  lua_pushinteger(L, (lua_Integer)c.received);
  lua_pushinteger(L, (lua_Integer)c.operations);
  return 3;
}

/* s:setsendlimit(bytes) -> true: a Send that finds that many bytes or more still
 * queued in the socket (taken, not yet written to the kernel) moves nothing and fails
 * with 1450 (ERROR_NO_SYSTEM_RESOURCES) as its notification, so that a sender that
 * does not wait for its completions holds a bounded amount. nil or 0: no limit. */
static int l_setsendlimit(lua_State *L) {
  fwx_socket_t *s = check_socket(L, 1);
  if (fwx_socket_set_send_limit(s, (size_t)lfwx_check_count(L, 2, "bytes")) != 0)
    return luaL_error(L, "not enough memory");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L) {
  lfwx_socket_t *box = lfwx_checkudata(L, 1, LFWX_SOCKET);
  if (box->s == NULL || fwx_socket_closed(box->s))
    lua_pushfstring(L, "fwx.socket (closed, %p)", (void *)box);
  else
    lua_pushfstring(L, "fwx.socket (%s, fd %d)",
                    fwx_socket_proto(box->s) == FWX_TCP ? "tcp" : "udp", fwx_socket_fd(box->s));
  return 1;
}

int lfwx_open_socket(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"Bind", l_bind},
    {"Listen", l_listen},
    {"Accept", l_accept},
    {"Connect", l_connect},
    {"Recv", lfwx_socket_recv},
    {"Send", lfwx_socket_send},
    {"SendTo", l_sendto},
    {"Shutdown", l_shutdown},
    {"Close", l_close},
    {"CancelIo", l_cancel_io},
    {"GetSockName", l_getsockname},
    {"GetPeerName", l_getpeername},
    {"SetSockOpt", l_setsockopt},
    {"GetSockOpt", l_getsockopt},
    {"getfd", l_getfd},
    {"IsClosed", l_isclosed},
    {"counters", l_counters},
    {"setsendlimit", l_setsendlimit},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__close", l_tbc},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  static const char *const async_ops[] = {"Accept", "Connect", "Recv", "Send", "SendTo", NULL};
  lfwx_newclass(L, LFWX_SOCKET, methods, meta, async_ops);
  return 0;
}
