/* relay.c: the filtered pump, fw:Pump(a, b, sink, ud, filter). The bytes of two
 * connected TCP sockets move both ways as with the core pump, but every chunk passes
 * through filter(ud, direction, buf) first, where direction is "request" (a to b) or
 * "response" (b to a). The filter's result says what goes on: nil the chunk as it came,
 * a string or a buffer that instead, false nothing.
 *
 * Why it is C. The same loop written in Lua (a Recv sink that calls the filter, sends
 * and receives again) cost the host about 4 700 instructions a chunk, against 2 800
 * here; most of it was the closure's own bytecode, two method calls through the
 * socket's metatable and #buf.
 * Here a chunk costs the dispatcher's delivery, one call of the filter and, in C, a
 * send and a receive: each direction's receive is the socket's own receive (the keep
 * slot of socket.c), with a C closure of this file as its sink, so receiving again
 * from its own delivery is one core call.
 *
 * Notifications. Chunks are delivered by the dispatcher like any receive, never inside
 * Pump. The filter runs under a lua_pcall: one that raises, or returns anything else
 * than nil, false, a string or a buffer, is reported (on_error, with socket a or b and
 * "Pump") and ends the relay with ERROR_CONNECTION_ABORTED (1236). The sink hears once,
 * sink(ok, err, bytes_a, bytes_b, ud), where the counts are the bytes the filter was
 * given from each side, after both receives have come back: the sockets are their
 * owner's again when it runs (Recv works; nothing of the relay is pending on them).
 *
 * Ends, as the core pump's: an end of stream from one side is passed on as a shutdown
 * of the other (after what was sent before it); both ended is success. A receive error
 * (reset: 64) ends it with that error; closing either socket, in the filter or
 * elsewhere, or closing the service, with 995. Bytes received but not yet filtered are
 * dropped then.
 *
 * Backpressure without a notification per chunk: sends on one socket complete in order,
 * so after each 64 KiB sent one send carries a marker (a C sink), and its completion
 * says all before it is written. While one marker is out and another 64 KiB has gone,
 * that direction stops receiving until the marker comes back: at most about 128 KiB
 * queued per direction, whatever the peers do.
 *
 * While it runs, Recv and Pump on either socket raise ("being pumped"); Send and
 * Shutdown do not: a filter may inject bytes (they go out in the order sent).
 *
 * Idle limit, as the core pump's: with idle_ms, the relay ends with ERROR_SEM_TIMEOUT
 * (121) once no chunk has come and no marker has come back (no byte has moved either
 * way) for that long. A chunk only notes the loop's time. The limit is a timer of the
 * callback style (its box in the relay's user values, whose __gc gives the core timer
 * back), set for the whole limit and, when it fires early, set again for what is
 * left: one timer per limit's length of a busy relay, not one per chunk.
 *
 * Pause (the relay is returned by fw:Pump, with Pause(direction) and
 * Resume(direction)): a paused direction's filter sees no chunk until it is resumed.
 * The receive already armed may still bring one; it is held, and the direction does
 * not receive again, so what the peer sends meanwhile waits in the kernel (the peer is
 * pushed back on). Resume receives again or, for a held chunk, posts a task that hands
 * it to the filter: from the dispatcher, never inside Resume. */
#include "lfwx.h"
#include <string.h>

#define RELAY_HIGH_WATER (64 * 1024)
#define ERROR_CONNECTION_ABORTED 1236
#define ERROR_OPERATION_ABORTED 995
#define ERROR_SEM_TIMEOUT 121

/* The relay's user values. */
enum {
  RUV_SINK = 1, RUV_UD, RUV_BOX_A, RUV_BOX_B, RUV_MARKER_A, RUV_MARKER_B,
  RUV_IDLE, /* the idle limit's timer box, or nil */
  RUV_HELD_A, RUV_HELD_B, /* a paused direction's chunk, held for its Resume */
  RUV_N = RUV_HELD_B
};
/* The upvalues of a direction's receive closure. */
enum { RECV_RELAY = 1, RECV_NAME, RECV_FILTER, RECV_UD, RECV_DIR };
/* The upvalues of a direction's marker closure. */
enum { MARK_RELAY = 1, MARK_DIR };

typedef struct relay_dir {
  uint64_t bytes;            /* given to the filter from this direction's source */
  size_t since_mark;         /* bytes sent since the last marker */
  unsigned marker_out : 1;   /* a marker send has not come back */
  unsigned waiting : 1;      /* receiving stopped until it does */
  unsigned ended : 1;        /* the source's end of stream was passed on */
  unsigned paused : 1;       /* Pause: the filter sees no chunk of it until Resume */
  unsigned held : 1;         /* a chunk came while paused: in RUV_HELD_*, no receive */
  unsigned parked : 1;       /* paused with no receive armed and nothing held */
} relay_dir_t;

typedef struct relay {
  fwx_socket_t *s[2];        /* a, b: the boxes in RUV_BOX_* keep them alive */
  relay_dir_t dir[2];        /* 0: a to b ("request"), 1: b to a ("response") */
  int error;                 /* the Win32 code it ended with; 0: success */
  fwx_port_t *port;
  uint64_t idle_ms;          /* the idle limit; 0: none */
  uint64_t active_at;        /* loop time bytes last moved (with an idle limit) */
  unsigned done : 1;         /* ended: what comes back now is only waited for */
  unsigned notified : 1;     /* the sink has been called */
} relay_t;

/* A send or receive the core refused: a socket or the service closing is 995, as
 * for the core pump. */
static int win32_of(int r) {
  return r == FWX_ECLOSED ? ERROR_OPERATION_ABORTED : fwx_win32_error(r);
}

/* The sink, once neither socket has a receive of the relay's still to come back. */
static void notify_when_idle(lua_State *L, relay_t *R, int ridx) {
  int top = lua_gettop(L), i, svidx, sink, nargs = 5;
  if (R->notified) return;
  for (i = 0; i < 2; i++)
    if (fwx_socket_receiving(R->s[i])) return; /* its 995 or its chunk is on the way */
  R->notified = 1;
  /* Give the sockets back: no receive of theirs names the relay's closure any more. */
  for (i = 0; i < 2; i++) {
    fwx_socket_set_owned(R->s[i], 0);
    lua_getiuservalue(L, ridx, RUV_BOX_A + i);
    lua_pushnil(L);
    lua_setiuservalue(L, -2, LFWX_SOCKET_UV_SINK);
    lua_pop(L, 1);
  }
  lua_getiuservalue(L, ridx, RUV_BOX_A);
  lua_getiuservalue(L, -1, LFWX_SOCKET_UV_SERVICE);
  svidx = lua_gettop(L);
  lua_pushcfunction(L, lfwx_traceback);
  lua_getiuservalue(L, ridx, RUV_SINK);
  sink = lua_gettop(L);
  if (lua_type(L, sink) != LUA_TFUNCTION) {
    lua_getfield(L, sink, "CompletePump");
    lua_insert(L, sink); /* the method, then the sink as self */
    nargs = 6;
  }
  lua_pushboolean(L, R->error == 0);
  lua_pushinteger(L, R->error);
  lua_pushinteger(L, (lua_Integer)R->dir[0].bytes);
  lua_pushinteger(L, (lua_Integer)R->dir[1].bytes);
  lua_getiuservalue(L, ridx, RUV_UD);
  if (lua_pcall(L, nargs, 0, svidx + 1) != LUA_OK) lfwx_report(L, svidx, svidx - 1, FWX_OP_PUMP);
  lua_settop(L, top);
}

/* Cancel the idle limit's timer, if it has one that is active: its 995 then finds the
 * relay done. */
static void stop_idle(lua_State *L, int ridx) {
  lfwx_timer_t *box;
  lua_getiuservalue(L, ridx, RUV_IDLE);
  box = lfwx_testudata(L, -1, LFWX_TIMER);
  if (box != NULL && box->t != NULL) fwx_timer_cancel(box->t);
  lua_pop(L, 1);
}

/* End the relay with a Win32 code (0: success): the receives still pending are taken
 * back, and the sink hears once they have come back. */
static void end_relay(lua_State *L, relay_t *R, int ridx, int error) {
  int i;
  if (R->done) return;
  R->done = 1;
  R->error = error;
  if (R->idle_ms > 0) stop_idle(L, ridx);
  for (i = 0; i < 2; i++)
    if (!fwx_socket_closed(R->s[i])) fwx_socket_cancel_io(R->s[i]);
  notify_when_idle(L, R, ridx);
}

static int relay_idle(lua_State *L);

/* Set the idle limit's timer for ms, with fw:SetTimer (the service of socket a), its
 * sink relay_idle; may raise (out of memory). */
static void start_idle(lua_State *L, int ridx, uint64_t ms) {
  int top = lua_gettop(L);
  ridx = lua_absindex(L, ridx);
  lua_getiuservalue(L, ridx, RUV_BOX_A);
  lua_getiuservalue(L, -1, LFWX_SOCKET_UV_SERVICE);
  lua_getfield(L, -1, "SetTimer");
  lua_insert(L, -2);
  lua_pushinteger(L, (lua_Integer)ms);
  lua_pushvalue(L, ridx);
  lua_pushcclosure(L, relay_idle, 1);
  lua_call(L, 3, 1);
  lua_setiuservalue(L, ridx, RUV_IDLE);
  lua_settop(L, top);
}

static int start_idle_protected(lua_State *L) {
  start_idle(L, 1, (uint64_t)lua_tointeger(L, 2));
  return 0;
}

/* The idle limit's timer: sink(ok, err, ud). The relay ends if nothing moved for the
 * whole limit; if something did, the timer is set again for what is left. */
static int relay_idle(lua_State *L) {
  int ridx = lua_upvalueindex(1);
  relay_t *R = lua_touserdata(L, ridx);
  uint64_t now, due;
  if (!lua_toboolean(L, 1) || R->done) return 0; /* cancelled at the end, or ended */
  now = fwx_port_now(R->port);
  due = R->active_at + R->idle_ms;
  if (now >= due) {
    end_relay(L, R, ridx, ERROR_SEM_TIMEOUT);
    return 0;
  }
  lua_pushcfunction(L, start_idle_protected);
  lua_pushvalue(L, ridx);
  lua_pushinteger(L, (lua_Integer)(due - now));
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) /* no limit is no bound: end it instead */
    end_relay(L, R, ridx, fwx_win32_error(UV_ENOMEM));
  return 0;
}

/* Receive on direction d's source again. From its own delivery that is one core call;
 * after a marker it takes a keep slot again. */
static int receive(lua_State *L, int ridx, int d) {
  lfwx_socket_t *box;
  int r;
  lua_getiuservalue(L, ridx, RUV_BOX_A + d);
  box = lua_touserdata(L, -1);
  r = lfwx_recv_own(L, -1, box);
  lua_pop(L, 1);
  return r;
}

/* Send len bytes of data on direction d's destination: with a marker sink after each
 * RELAY_HIGH_WATER bytes. Returns 0, 1 when the direction must wait for its marker
 * before receiving again, or a negative core error. */
static int send_on(lua_State *L, relay_t *R, int ridx, int d, const char *data, size_t len) {
  relay_dir_t *dir = &R->dir[d];
  fwx_socket_t *dst = R->s[1 - d];
  lfwx_service_t *sv;
  int r, tidx, slot, box;

  dir->since_mark += len;
  if (dir->since_mark < RELAY_HIGH_WATER)
    return fwx_socket_send(dst, NULL, data, len, NULL, 0, 0);
  if (dir->marker_out) {
    /* A marker is out and another 64 KiB has gone: send, then wait for it. */
    r = fwx_socket_send(dst, NULL, data, len, NULL, 0, 0);
    if (r != 0) return r;
    dir->waiting = 1;
    return 1;
  }
  lua_getiuservalue(L, ridx, RUV_BOX_A + 1 - d);
  box = lua_gettop(L);
  lua_getiuservalue(L, box, LFWX_SOCKET_UV_SERVICE);
  sv = lua_touserdata(L, -1);
  tidx = lfwx_push_anchors(L, lua_gettop(L));
  lua_getiuservalue(L, ridx, RUV_MARKER_A + d);
  slot = lfwx_anchor(L, sv, tidx, box, lua_gettop(L), 0, 0);
  r = fwx_socket_send(dst, NULL, data, len, NULL, 1, (uintptr_t)slot);
  if (r != 0)
    lfwx_unanchor(L, sv, tidx, slot);
  else {
    dir->since_mark = 0;
    dir->marker_out = 1;
  }
  lua_settop(L, box - 1);
  return r;
}

/* A filter that failed: its message on top. Reported with the socket its chunk came
 * from; the relay ends with ERROR_CONNECTION_ABORTED. */
static void filter_failed(lua_State *L, relay_t *R, int ridx, int d) {
  int msg = lua_gettop(L), box;
  lua_getiuservalue(L, ridx, RUV_BOX_A + d);
  box = msg + 1;
  lua_getiuservalue(L, box, LFWX_SOCKET_UV_SERVICE);
  lua_pushvalue(L, msg);
  lfwx_report(L, msg + 2, box, FWX_OP_PUMP);
  lua_settop(L, msg - 1);
  end_relay(L, R, ridx, ERROR_CONNECTION_ABORTED);
}

/* A direction's receive came back: the kept delivery calls this as the sink, with
 * (ok, err, buf, ud, address). */
static int relay_recv(lua_State *L) {
  int ridx = lua_upvalueindex(RECV_RELAY);
  relay_t *R = lua_touserdata(L, ridx);
  int d = (int)lua_tointeger(L, lua_upvalueindex(RECV_DIR)), r;
  relay_dir_t *dir = &R->dir[d];
  fwx_buffer_t *b, *out;
  const char *data;
  size_t n, len;

  if (R->done) {
    notify_when_idle(L, R, ridx); /* a chunk that came back after the end is dropped */
    return 0;
  }
  if (!lua_toboolean(L, 1)) {
    end_relay(L, R, ridx, (int)lua_tointeger(L, 2));
    return 0;
  }
  b = lfwx_test_buffer(L, 3);
  n = b != NULL ? fwx_buffer_size(b) : 0;
  if (n > 0 && dir->paused) { /* the receive armed before Pause: hold its chunk */
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, ridx, RUV_HELD_A + d);
    dir->held = 1;
    return 0;
  }
  if (n == 0) {
    /* End of stream: pass it on after what was sent before it. A shutdown that fails
     * (the peer is gone) shows in the other direction's receive. */
    dir->ended = 1;
    fwx_socket_shutdown(R->s[1 - d]);
    if (R->dir[1 - d].ended) end_relay(L, R, ridx, 0);
    return 0;
  }
  dir->bytes += n;
  if (R->idle_ms > 0) R->active_at = fwx_port_now(R->port);
  lua_settop(L, 3);
  lua_pushcfunction(L, lfwx_traceback);            /* 4 */
  lua_pushvalue(L, lua_upvalueindex(RECV_FILTER));
  lua_pushvalue(L, lua_upvalueindex(RECV_UD));
  lua_pushvalue(L, lua_upvalueindex(RECV_NAME));
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 3, 1, 4) != LUA_OK) {
    filter_failed(L, R, ridx, d);
    return 0;
  }
  if (R->done) return 0; /* the filter ended it (closed the service, ...) */
  if (fwx_socket_closed(R->s[0]) || fwx_socket_closed(R->s[1])) {
    end_relay(L, R, ridx, ERROR_OPERATION_ABORTED); /* the filter closed one */
    return 0;
  }
  switch (lua_type(L, 5)) {
  case LUA_TNIL: /* the chunk, as the filter left it (it may have resized it) */
    data = fwx_buffer_data(b);
    len = fwx_buffer_size(b);
    break;
  case LUA_TSTRING:
    data = lua_tolstring(L, 5, &len);
    break;
  default:
    if (lua_type(L, 5) == LUA_TBOOLEAN && !lua_toboolean(L, 5)) {
      len = 0; /* dropped */
      data = NULL;
      break;
    }
    out = lfwx_test_buffer(L, 5);
    if (out == NULL) {
      lua_pushfstring(L, "Pump filter returned a %s for a %s chunk (nil, false, a string or "
                         "an fwx.buffer expected)", luaL_typename(L, 5),
                      lua_tostring(L, lua_upvalueindex(RECV_NAME)));
      filter_failed(L, R, ridx, d);
      return 0;
    }
    data = fwx_buffer_data(out);
    len = fwx_buffer_size(out);
  }
  r = len > 0 ? send_on(L, R, ridx, d, data, len) : 0;
  if (r == 0) {
    if (dir->paused) /* the filter paused its own direction */
      dir->parked = 1;
    else
      r = receive(L, ridx, d);
  }
  if (r < 0) end_relay(L, R, ridx, win32_of(r));
  return 0;
}

/* A marker send came back: (ok, err, buf, ud, address). */
static int relay_marker(lua_State *L) {
  int ridx = lua_upvalueindex(MARK_RELAY), r;
  relay_t *R = lua_touserdata(L, ridx);
  int d = (int)lua_tointeger(L, lua_upvalueindex(MARK_DIR));
  relay_dir_t *dir = &R->dir[d];
  dir->marker_out = 0;
  if (R->done) return 0;
  if (!lua_toboolean(L, 1)) {
    end_relay(L, R, ridx, (int)lua_tointeger(L, 2));
    return 0;
  }
  if (R->idle_ms > 0) R->active_at = fwx_port_now(R->port); /* 64 KiB were written */
  if (!dir->waiting) return 0;
  dir->waiting = 0;
  if (dir->paused) {
    dir->parked = 1;
    return 0;
  }
  r = receive(L, ridx, d);
  if (r != 0) end_relay(L, R, ridx, win32_of(r));
  return 0;
}

/* The task Resume posts for a held chunk (upvalues: the relay, the direction): the
 * chunk goes to the direction's receive closure as if it had just come. */
static int relay_redeliver(lua_State *L) {
  int ridx = lua_upvalueindex(1);
  relay_t *R = lua_touserdata(L, ridx);
  int d = (int)lua_tointeger(L, lua_upvalueindex(2));
  relay_dir_t *dir = &R->dir[d];
  if (!dir->held || dir->paused) return 0; /* paused again meanwhile: still held */
  dir->held = 0;
  lua_getiuservalue(L, ridx, RUV_BOX_A + d);
  lua_getiuservalue(L, -1, LFWX_SOCKET_UV_SINK); /* relay_recv, with its upvalues */
  lua_pushboolean(L, 1);
  lua_pushinteger(L, 0);
  lua_getiuservalue(L, ridx, RUV_HELD_A + d);
  lua_pushnil(L);
  lua_setiuservalue(L, ridx, RUV_HELD_A + d);
  if (R->done) { /* ended meanwhile: the chunk is dropped, as unfiltered bytes are */
    lua_settop(L, 0);
    if (!R->notified) notify_when_idle(L, R, ridx);
    return 0;
  }
  lua_call(L, 3, 0); /* relay_recv raises nothing: the filter runs under its pcall */
  return 0;
}

static relay_t *check_relay(lua_State *L, int *d) {
  static const char *const dirs[] = {"request", "response", NULL};
  relay_t *R = luaL_checkudata(L, 1, "fwx.pump");
  *d = luaL_checkoption(L, 2, NULL, dirs);
  return R;
}

/* pump:Pause(direction): the filter sees no chunk of that direction ("request": a to
 * b, "response": b to a) until Resume. Returns false once the pump has ended. */
static int l_pause(lua_State *L) {
  int d;
  relay_t *R = check_relay(L, &d);
  R->dir[d].paused = !R->done;
  lua_pushboolean(L, !R->done);
  return 1;
}

/* pump:Resume(direction): the direction goes on; a chunk held meanwhile reaches the
 * filter from a posted task, never inside this call. */
static int l_resume(lua_State *L) {
  int d, r;
  relay_t *R = check_relay(L, &d);
  relay_dir_t *dir = &R->dir[d];
  if (R->done) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (dir->paused) {
    dir->paused = 0;
    if (dir->held) {
      lua_getiuservalue(L, 1, RUV_BOX_A);
      lua_getiuservalue(L, -1, LFWX_SOCKET_UV_SERVICE);
      lua_getfield(L, -1, "PostTaskCompletion");
      lua_insert(L, -2);
      lua_pushvalue(L, 1);
      lua_pushinteger(L, d);
      lua_pushcclosure(L, relay_redeliver, 2);
      lua_call(L, 2, 0);
    } else if (dir->parked) {
      dir->parked = 0;
      r = receive(L, 1, d);
      if (r != 0) end_relay(L, R, 1, win32_of(r));
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The relay's metatable: fw:Pump returns the relay, with Pause and Resume. */
static void push_relay_meta(lua_State *L) {
  static const luaL_Reg methods[] = {{"Pause", l_pause}, {"Resume", l_resume}, {NULL, NULL}};
  if (luaL_newmetatable(L, "fwx.pump")) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "fwx.pump");
    lua_setfield(L, -2, "__name");
  }
}

/* fw:Pump(a, b, sink, ud, filter, idle_ms), from lfwx_pump: 1 the service, 2 and 3 the
 * sockets (checked: open, of this service, not the same, not a filtered pump's), 4 the
 * sink (checked), 5 the user data, 6 the filter (a function), 7 the idle limit
 * (checked; nil or 0: none). Returns 0 with the relay at index 8, or what the core
 * pump would have refused them with, for lfwx_pump to say. */
int lfwx_relay_start(lua_State *L) {
  static const char *const names[2] = { "request", "response" };
  lfwx_socket_t *box[2];
  relay_t *R;
  int i, r, ridx;
  for (i = 0; i < 2; i++) box[i] = lua_touserdata(L, 2 + i);
  r = fwx_pump_check(box[0]->s, box[1]->s);
  if (r != 0) return r;

  R = lua_newuserdatauv(L, sizeof *R, RUV_N);
  memset(R, 0, sizeof *R);
  ridx = lua_gettop(L);
  push_relay_meta(L);
  lua_setmetatable(L, ridx);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, ridx, RUV_SINK);
  lua_pushvalue(L, 5);
  lua_setiuservalue(L, ridx, RUV_UD);
  R->port = fwx_socket_port(box[0]->s);
  for (i = 0; i < 2; i++) {
    R->s[i] = box[i]->s;
    lua_pushvalue(L, 2 + i);
    lua_setiuservalue(L, ridx, RUV_BOX_A + i);
    lua_pushvalue(L, ridx);
    lua_pushinteger(L, i);
    lua_pushcclosure(L, relay_marker, 2);
    lua_setiuservalue(L, ridx, RUV_MARKER_A + i);
  }
  /* The idle timer first: if it cannot be set, nothing has started. */
  if (!lua_isnil(L, 7) && lua_tointeger(L, 7) > 0) {
    R->idle_ms = (uint64_t)lua_tointeger(L, 7);
    start_idle(L, ridx, R->idle_ms);
    R->active_at = fwx_port_now(R->port); /* SetTimer brought the loop's time up to now */
  }
  /* Each source's receive: sink the direction's closure, no user data. */
  for (i = 0; i < 2; i++) {
    lua_pushvalue(L, ridx);
    lua_pushstring(L, names[i]);
    lua_pushvalue(L, 6);
    lua_pushvalue(L, 5);
    lua_pushinteger(L, i);
    lua_pushcclosure(L, relay_recv, 5);
    lua_setiuservalue(L, 2 + i, LFWX_SOCKET_UV_SINK);
    lua_pushnil(L);
    lua_setiuservalue(L, 2 + i, LFWX_SOCKET_UV_UD);
  }
  /* Both receives, or neither. The checks above leave only running out of memory to
   * fail here; a second receive that fails takes the first back, whose 995 then finds
   * the relay done and notified: nobody hears of it. */
  r = lfwx_recv_own(L, 2, box[0]);
  if (r == 0) {
    r = lfwx_recv_own(L, 3, box[1]);
    if (r != 0) {
      R->done = R->notified = 1;
      if (R->idle_ms > 0) stop_idle(L, ridx);
      fwx_socket_cancel_io(box[0]->s);
      lua_pushnil(L);
      lua_setiuservalue(L, 3, LFWX_SOCKET_UV_SINK);
      return r;
    }
  }
  if (r != 0) {
    R->done = R->notified = 1;
    if (R->idle_ms > 0) stop_idle(L, ridx);
    for (i = 0; i < 2; i++) {
      lua_pushnil(L);
      lua_setiuservalue(L, 2 + i, LFWX_SOCKET_UV_SINK);
    }
    return r;
  }
  for (i = 0; i < 2; i++) fwx_socket_set_owned(box[i]->s, 1);
  return 0;
}
