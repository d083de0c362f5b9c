/* pump.c: fw:Pump(a, b, sink, userdata), the core pump (csrc/core/pump.c) for Lua: the
 * SDK's "kernel mode" pumping of a connection no data filter is attached to. The
 * bytes never reach Lua; the sink hears once, when both directions have ended or one
 * failed: sink(ok, err, bytes_a_to_b, bytes_b_to_a, userdata), or
 * sink:CompletePump(...). Like every operation it anchors what the notification needs
 * (sink, user data, a as the object, b as the extra value) until it is delivered. */
#include "lfwx.h"

static lfwx_socket_t *check_pumped(lua_State *L, int idx, lfwx_service_t *sv) {
  lfwx_socket_t *box = lfwx_checkudata(L, idx, LFWX_SOCKET);
  if (box->s == NULL || fwx_socket_closed(box->s)) luaL_argerror(L, idx, "socket is closed");
  if (fwx_port_owner(fwx_socket_port(box->s)) != sv)
    luaL_argerror(L, idx, "socket belongs to another service");
  return box;
}

/* fw:Pump(a, b, sink, userdata [, filter [, idle_ms]]): with a filter, the filtered
 * pump (relay.c), which is returned (pump:Pause(direction), pump:Resume(direction));
 * with idle_ms, the pump ends with 121 once nothing has moved either way for that
 * long. */
int lfwx_pump(lua_State *L) {
  lfwx_service_t *sv;
  lfwx_socket_t *a, *b;
  lua_Integer idle;
  int slot, r, t;
  lua_settop(L, 7);
  sv = lfwx_check_service(L, 1);
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  a = check_pumped(L, 2, sv);
  b = check_pumped(L, 3, sv);
  if (a->s == b->s) luaL_argerror(L, 3, "a socket cannot be pumped to itself");
  lfwx_check_sink(L, 4, "CompletePump", 0);
  if (!lua_isnil(L, 6))
    luaL_argcheck(L, lua_type(L, 6) == LUA_TFUNCTION, 6, "filter must be a function or nil");
  idle = lfwx_check_count(L, 7, "idle milliseconds"); /* 0: none */
  if (fwx_socket_owned(a->s) || fwx_socket_owned(b->s)) {
    r = FWX_EPUMPING; /* a filtered pump's (the core checks its own) */
  } else if (!lua_isnil(L, 6)) {
    r = lfwx_relay_start(L);
  } else {
    t = lfwx_push_anchors(L, 1);
    slot = lfwx_anchor(L, sv, t, 2, 4, 5, 3);
    r = fwx_pump_start(a->s, b->s, (uintptr_t)slot);
    if (r != 0)
      lfwx_unanchor(L, sv, t, slot);
    else if (idle > 0)
      fwx_pump_idle(a->s, (uint64_t)idle); /* 0 if it ended at once: nothing to limit */
  }
  if (r == 0) {
    if (lua_isnil(L, 6)) return 0;
    lua_settop(L, 8); /* the filtered pump returns its relay (lfwx_relay_start put it there) */
    return 1;
  }
  switch (r) {
  case FWX_ESTATE:
    return luaL_error(L, "Pump: both sockets must be connected tcp sockets (accepted, or "
                         "connected), not listening ones");
  case FWX_EPUMPING: return luaL_error(L, "Pump: a socket is already being pumped");
  case FWX_EBUSY: return luaL_error(L, "Pump: a Recv is pending on a socket");
  default: return lfwx_raise(L, r, "Pump");
  }
}

/* core._pump_use_splice(false): later pumps read and write through a buffer, the path
 * a kernel without splice(2) takes; for the specs. */
int lfwx_pump_use_splice(lua_State *L) {
  fwx_pump_use_splice(lua_toboolean(L, 1));
  return 0;
}
