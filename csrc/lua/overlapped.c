/* overlapped.c: the "fwx.overlapped" class (IFWXOverlapped). User values: 1 the service,
 * 2 the sink and 3 the user data from SetNotificationInterface, 4 the handle of the
 * operation in flight (so a hooked handle dropped by Lua stays open until it ends). */
#include "lfwx.h"

static lfwx_overlapped_t *check_ov(lua_State *L, int idx) {
  return lfwx_checkudata(L, idx, LFWX_OVERLAPPED);
}

int lfwx_create_overlapped(lua_State *L) {
  lfwx_service_t *sv = lfwx_check_service(L, 1);
  lfwx_overlapped_t *ov;
  if (sv->closing || sv->closed) return luaL_error(L, "service is closed");
  ov = lfwx_newobject(L, sizeof *ov, LFWX_OVERLAPPED, 4);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  ov->op = fwx_overlapped_new(sv->port);
  if (ov->op == NULL) return luaL_error(L, "not enough memory");
  ov->port = sv->port;
  fwx_port_ref(sv->port);
  return 1;
}

static int l_set_notification_interface(lua_State *L) {
  lfwx_overlapped_t *ov = check_ov(L, 1);
  lua_settop(L, 3);
  lfwx_check_sink(L, 2, "CompleteAsyncIO", 0);
  if (fwx_op_pending(ov->op))
    return luaL_error(L, "overlapped is pending: set its notification interface between operations");
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 2);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, 3);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_cancel(lua_State *L) {
  lfwx_overlapped_t *ov = check_ov(L, 1);
  lua_pushboolean(L, fwx_op_cancel(ov->op) == 0);
  return 1;
}

static int l_is_pending(lua_State *L) {
  lua_pushboolean(L, fwx_op_pending(check_ov(L, 1)->op));
  return 1;
}

static int l_gc(lua_State *L) {
  lfwx_overlapped_t *ov = check_ov(L, 1);
  /* Pending operations anchor their overlapped, so it is idle here. */
  if (ov->op != NULL) fwx_overlapped_free(ov->op);
  if (ov->port != NULL) fwx_port_unref(ov->port);
  ov->op = NULL;
  ov->port = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  lfwx_overlapped_t *ov = check_ov(L, 1);
  lua_pushfstring(L, "fwx.overlapped (%s, %p)", fwx_op_pending(ov->op) ? "pending" : "idle",
                  (void *)ov);
  return 1;
}

int lfwx_open_overlapped(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"SetNotificationInterface", l_set_notification_interface},
    {"Cancel", l_cancel},
    {"IsPending", l_is_pending},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {"__tostring", l_tostring},
    {NULL, NULL}
  };
  lfwx_newclass(L, LFWX_OVERLAPPED, methods, meta, NULL);
  return 0;
}
