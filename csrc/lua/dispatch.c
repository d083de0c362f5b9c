/* dispatch.c: the dispatcher. It dequeues completion packets from the port and calls
 * their notification interfaces under lua_pcall, and it keeps what each pending
 * operation needs (sink, user data, object, lent buffer) anchored in the service's
 * anchor table until its last notification is delivered.
 *
 * This is the only place Lua is entered for a completion, and it is never inside a
 * libuv callback: fwx_port_poll() runs the loop, the callbacks queue packets, and
 * packets are delivered after it returns. */
#include "lfwx.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* Tests: a GC step after every notification. Each worker's state sets it as it loads
 * the module, so it is read and written atomically. */
static int debug_gc_flag;
#define debug_gc __atomic_load_n(&debug_gc_flag, __ATOMIC_RELAXED)

/* Notifications delivered between two looks at I/O when the queue keeps filling. */
#define LFWX_DISPATCH_BATCH 256

void lfwx_set_debug_gc(int on) { __atomic_store_n(&debug_gc_flag, on, __ATOMIC_RELAXED); }

/* Push the anchor table of the service box at svidx; return its index. */
int lfwx_push_anchors(lua_State *L, int svidx) {
  lua_getiuservalue(L, svidx, LFWX_UV_ANCHORS);
  return lua_gettop(L);
}

/* Anchor the values at the given stack indices (0: nil) in a free slot of the anchor
 * table at tidx and return the operation's key: the slot, shifted, with a bit per
 * value that is not nil, so that only those are stored, fetched and cleared (fresh
 * slots are all nil). */
int lfwx_slot_take(lua_State *L, lfwx_slots_t *slots) {
  if (slots->nfree > 0) {
    slots->live++;
    return slots->free[--slots->nfree];
  }
  /* Grow the free list now, so that giving a slot back can never fail. */
  if (slots->next + 1 > slots->cap) {
    int cap = slots->cap ? slots->cap * 2 : 64;
    int *p = realloc(slots->free, sizeof *p * (size_t)cap);
    if (p == NULL) return luaL_error(L, "not enough memory");
    slots->free = p;
    slots->cap = cap;
  }
  slots->live++;
  return ++slots->next;
}

/* Push the chunk of the keep table at keep_idx that holds slot (made when new) and
 * return the slot's index in it. */
int lfwx_keep_chunk(lua_State *L, int keep_idx, int slot) {
  int chunk = (slot - 1) / LFWX_KEEP_CHUNK + 1;
  if (lua_rawgeti(L, keep_idx, chunk) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, LFWX_KEEP_CHUNK, 0);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keep_idx, chunk);
  }
  return (slot - 1) % LFWX_KEEP_CHUNK + 1;
}

/* Push the keep table, the chunk holding the keep slot of key, and the slot's value (a
 * socket box, or nil); return the value's index. */
static int push_kept(lua_State *L, int svidx, uintptr_t key) {
  int keep, at;
  lua_getiuservalue(L, svidx, LFWX_UV_KEEP);
  keep = lua_gettop(L);
  at = lfwx_keep_chunk(L, keep, (int)(key >> LFWX_A_WIDTH));
  lua_rawgeti(L, keep + 1, at);
  return keep + 2;
}

static void unkeep(lua_State *L, lfwx_service_t *sv, int svidx, fwx_socket_t *s) {
  int slot = (int)(fwx_socket_recv_key(s) >> LFWX_A_WIDTH), at;
  lua_getiuservalue(L, svidx, LFWX_UV_KEEP);
  at = lfwx_keep_chunk(L, lua_gettop(L), slot);
  lua_pushnil(L);
  lua_rawseti(L, -2, at);
  lua_pop(L, 2);
  lfwx_slot_give(&sv->kept, slot);
  fwx_socket_set_mark(s, 0);
}

/* Take the socket s out of the keep slot it holds (its mark says it holds one: the
 * slot of its last receive's key). svidx: the service box. A socket out of its slot
 * may be collected: the end of the round must not find it among those to let go. */
void lfwx_unkeep(lua_State *L, lfwx_service_t *sv, int svidx, fwx_socket_t *s) {
  int i;
  for (i = sv->let_go_n - 1; i >= 0; i--)
    if (sv->let_go[i] == s) sv->let_go[i] = sv->let_go[--sv->let_go_n];
  unkeep(L, sv, svidx, s);
}

void lfwx_slot_give(lfwx_slots_t *slots, int slot) {
  slots->free[slots->nfree++] = slot;
  slots->live--;
}

int lfwx_anchor(lua_State *L, lfwx_service_t *sv, int tidx, int obj_idx, int sink_idx,
                int ud_idx, int extra_idx) {
  int slot, base, i, mask = 0, idx[LFWX_A_WIDTH];
  slot = lfwx_slot_take(L, &sv->anchors);
  idx[0] = sink_idx;
  idx[1] = ud_idx;
  idx[2] = obj_idx;
  idx[3] = extra_idx;
  base = (slot - 1) * LFWX_A_WIDTH;
  for (i = 0; i < LFWX_A_WIDTH; i++) {
    /* sinks are checked and objects are objects: only the others can be nil */
    if (idx[i] == 0 || (i != 0 && i != 2 && lua_isnil(L, idx[i]))) continue;
    lua_pushvalue(L, idx[i]);
    lua_rawseti(L, tidx, base + i + 1);
    mask |= 1 << i;
  }
  return slot << LFWX_A_WIDTH | mask;
}

/* lfwx_anchor for a socket's operation: an awaited one (sink core.wake_io, user data a
 * coroutine) anchors the coroutine and the extra value only. Half the row: an
 * awaited send's anchoring and delivery were about 1 000 of an awaited echo's 8 200
 * instructions a message. */
int lfwx_anchor_io(lua_State *L, lfwx_service_t *sv, int tidx, int obj_idx, int sink_idx,
                   int ud_idx, int extra_idx) {
  if (lua_tocfunction(L, sink_idx) == lfwx_wake_io && lua_type(L, ud_idx) == LUA_TTHREAD)
    return lfwx_anchor(L, sv, tidx, 0, 0, ud_idx, extra_idx);
  return lfwx_anchor(L, sv, tidx, obj_idx, sink_idx, ud_idx, extra_idx);
}

static void clear_slot(lua_State *L, lfwx_service_t *sv, int tidx, int key) {
  int slot = key >> LFWX_A_WIDTH, base = (slot - 1) * LFWX_A_WIDTH, i;
  for (i = 0; i < LFWX_A_WIDTH; i++) {
    if (!(key & (1 << i))) continue;
    lua_pushnil(L);
    lua_rawseti(L, tidx, base + i + 1);
  }
  lfwx_slot_give(&sv->anchors, slot);
}

/* Undo lfwx_anchor for an operation that did not start. */
void lfwx_unanchor(lua_State *L, lfwx_service_t *sv, int tidx, int key) {
  clear_slot(L, sv, tidx, key);
}

void lfwx_check_sink(lua_State *L, int idx, const char *method, int optional) {
  int t = lua_type(L, idx), ok = 0;
  if (t == LUA_TFUNCTION) return;
  if (optional && t <= LUA_TNIL) return;
  if (t == LUA_TTABLE) {
    ok = lua_getfield(L, idx, method) == LUA_TFUNCTION;
    lua_pop(L, 1);
  } else if (t == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__index") != LUA_TNIL) {
    lua_pop(L, 1);
    ok = lua_getfield(L, idx, method) == LUA_TFUNCTION;
    lua_pop(L, 1);
  }
  if (!ok)
    luaL_argerror(L, idx,
                  lua_pushfstring(L, "sink must be a function or an object with a %s method%s",
                                  method, optional ? ", or nil" : ""));
}

const char *const lfwx_op_names[FWX_OP_LAST + 1] = {
  "none", "Accept", "Connect", "Recv", "Send", "Read", "Write", "task", "timer", "GetHostByName",
  "Pump", "message"
};

static const char *method_of(fwx_op_kind_t kind) {
  switch (kind) {
  case FWX_OP_ACCEPT: return "CompleteAsyncAccept";
  case FWX_OP_CONNECT: return "CompleteAsyncConnect";
  case FWX_OP_TASK:
  case FWX_OP_MESSAGE: return "CompleteTask";
  case FWX_OP_TIMER: return "CompleteTimer";
  case FWX_OP_LOOKUP: return "CompleteGetHostByName";
  case FWX_OP_PUMP: return "CompletePump";
  default: return "CompleteAsyncIO";
  }
}

static const char *kind_name(fwx_op_kind_t kind) {
  return (unsigned)kind <= FWX_OP_LAST ? lfwx_op_names[kind] : "?";
}

/* The handler raised: the message (with its traceback) is on top. Hand it to the
 * service's on_error, or print it; either way the port goes on. objidx 0: no object. */
void lfwx_report(lua_State *L, int svidx, int objidx, fwx_op_kind_t kind) {
  int msg = lua_gettop(L);
  lua_getiuservalue(L, svidx, LFWX_UV_OPTIONS);
  if (lua_getfield(L, -1, "on_error") == LUA_TFUNCTION) {
    lua_pushvalue(L, msg);
    if (objidx != 0)
      lua_pushvalue(L, objidx);
    else
      lua_pushnil(L);
    lua_pushstring(L, kind_name(kind));
    if (lua_pcall(L, 3, 0, 0) == LUA_OK) {
      lua_settop(L, msg - 1);
      return;
    }
    fprintf(stderr, "fwx: on_error raised: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
  } else {
    lua_pop(L, 1);
  }
  if (objidx == 0) {
    lua_pushnil(L);
    objidx = lua_gettop(L);
  }
  fprintf(stderr, "fwx: error in %s notification for %s: %s\n", kind_name(kind),
          luaL_tolstring(L, objidx, NULL), lua_tostring(L, msg));
  fflush(stderr);
  lua_settop(L, msg - 1);
}

static void push_lookup_result(lua_State *L, struct addrinfo *res) {
  struct addrinfo *ai;
  int n = 0;
  lua_newtable(L);
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    lfwx_push_address(L, ai->ai_addr);
    lua_rawseti(L, -2, ++n);
  }
}

static void push_name(lua_State *L, fwx_socket_t *s, int peer) {
  struct sockaddr_storage ss;
  if (fwx_socket_name(s, peer, &ss) == 0)
    lfwx_push_address(L, (struct sockaddr *)&ss);
  else
    lua_pushnil(L);
}

/* After the handler of a socket's own receive: the socket (its box at boxidx) keeps
 * its keep slot if the handler received again, and lets it go if not. */
static void let_go_unless_receiving(lua_State *L, lfwx_service_t *sv, int svidx,
                                    int boxidx) {
  fwx_socket_t *s = ((lfwx_socket_t *)lua_touserdata(L, boxidx))->s;
  if (s != NULL && fwx_socket_mark(s) && !fwx_socket_receiving(s))
    lfwx_unkeep(L, sv, svidx, s);
}

/* The same, at the end of the round: a handler that did not receive again often
 * receives in the next packet's (an awaited echo resumes its coroutine for the
 * receive, then for the send, and only then receives), and a socket still in its slot
 * receives again with one core call. Letting the slot go after each handler and
 * taking one again cost an awaited echo about 700 of its 8 800 instructions a
 * message. Until the end of the round the slot only keeps the socket from being
 * collected a little longer. The socket is noted by its pointer: while it holds its
 * slot its box cannot be collected, and the one way out of the slot before the end of
 * the round, lfwx_unkeep, takes it off the list. */
static void let_go_later(lua_State *L, lfwx_service_t *sv, int svidx, int boxidx) {
  fwx_socket_t *s = ((lfwx_socket_t *)lua_touserdata(L, boxidx))->s;
  if (s == NULL || !fwx_socket_mark(s) || fwx_socket_receiving(s)) return;
  if (sv->let_go_n < LFWX_LET_GO_MAX)
    sv->let_go[sv->let_go_n++] = s; /* perhaps again: the end of the round checks */
  else
    lfwx_unkeep(L, sv, svidx, s); /* a nested dispatcher filled it */
}

/* The end of a round: let go the slots of the sockets noted by let_go_later that are
 * still not receiving. */
static void let_go_noted(lua_State *L, lfwx_service_t *sv, int svidx) {
  while (sv->let_go_n > 0) {
    fwx_socket_t *s = sv->let_go[--sv->let_go_n];
    if (fwx_socket_mark(s) && !fwx_socket_receiving(s)) unkeep(L, sv, svidx, s);
  }
}

/* How many arguments the function at fn can see: a Lua function without "..." drops
 * the ones past its parameters, so nothing made for them can be observed. An accept
 * pushes its two addresses only when seen: each is a getsockname or getpeername call
 * and an object that is garbage at once in a handler that does not name them (9% of
 * an idle connection's memory was collector slack from them). A C function, or one
 * with "...", sees them all. */
static int args_seen(lua_State *L, int fn) {
  lua_Debug ar;
  if (lua_type(L, fn) != LUA_TFUNCTION) return INT_MAX; /* the call will say so */
  lua_pushvalue(L, fn);
  if (!lua_getinfo(L, ">u", &ar) || ar.isvararg) return INT_MAX;
  return ar.nparams;
}

/* Deliver one packet, from deliver_round. Stack: svidx the service box, tidx its
 * anchor table, msgh the traceback handler. The handler of a socket's own receive is
 * called unprotected: if it raises, the error unwinds to lfwx_dispatch, which finds
 * the socket in its keep slot (round_failed). So is an awaited operation's (wake_io:
 * it raises only what the coroutine raised, with its traceback, and names no object).
 * Other handlers get their own pcall: the object a report names is not to be found
 * once their anchor slot is cleared. */
static void deliver(lua_State *L, lfwx_service_t *sv, int svidx, int tidx, int msgh,
                    fwx_completion_t *c) {
  int key = (int)c->key, base = ((key >> LFWX_A_WIDTH) - 1) * LFWX_A_WIDTH;
  int top = lua_gettop(L), sink = top + 1, ud = top + 2, obj = top + 3, extra = top + 4;
  int nargs, fn, i, kept = LFWX_KEY_IS_KEPT(key), awaited = 0;
  fwx_op_kind_t kind = c->kind;

  if (kept) {
    /* A socket's own receive: the socket from the keep table, sink and user data from
     * it. They stay in the socket until its next receive: a socket holds at most one
     * of each, and not clearing them is two table writes less per message. The socket
     * stays in its keep slot while the handler runs, so that a handler that receives
     * again (most do) reuses the slot; after it, the slot is let go if it did not. */
    obj = push_kept(L, svidx, c->key);                  /* keep, chunk, socket */
    lua_getiuservalue(L, obj, LFWX_SOCKET_UV_SINK);
    lua_getiuservalue(L, obj, LFWX_SOCKET_UV_UD);
    lua_pushnil(L);                        /* keep, chunk, socket, sink, ud, nil */
    /* The values are used where they lie, which is two lua_replace less. */
    sink = top + 4;
    ud = top + 5;
    extra = top + 6;
  } else {
    for (i = 0; i < LFWX_A_WIDTH; i++) {
      if (key & (1 << i))
        lua_rawgeti(L, tidx, base + i + 1);
      else
        lua_pushnil(L);
    }
    if (c->last) clear_slot(L, sv, tidx, key);
    if (LFWX_KEY_IS_AWAITED(key)) {
      lua_pushcfunction(L, lfwx_wake_io);
      lua_replace(L, sink);
      awaited = 1;
    }
  }

  fn = lua_gettop(L) + 1;
  if (lua_type(L, sink) == LUA_TFUNCTION) {
    lua_pushvalue(L, sink);
    nargs = 0;
  } else {
    lua_getfield(L, sink, method_of(kind));
    lua_pushvalue(L, sink); /* self */
    nargs = 1;
  }
  switch (kind) {
  case FWX_OP_ACCEPT:
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    lua_pushvalue(L, obj);
    if (c->accepted != NULL) {
      fwx_socket_t *a = c->accepted;
      int seen = args_seen(L, fn) - nargs;
      lfwx_push_socket(L, a, svidx); /* takes the packet's reference */
      c->accepted = NULL;
      if (seen >= 5) push_name(L, a, 1); else lua_pushnil(L);
      if (seen >= 6) push_name(L, a, 0); else lua_pushnil(L);
    } else {
      lua_pushnil(L);
      lua_pushnil(L);
      lua_pushnil(L);
    }
    lua_pushvalue(L, ud);
    nargs += 7;
    break;
  case FWX_OP_CONNECT:
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    lua_pushvalue(L, obj);
    lua_pushvalue(L, ud);
    nargs += 4;
    break;
  case FWX_OP_RECV:
  case FWX_OP_SEND:
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    if (!lua_isnil(L, extra)) {
      lua_pushvalue(L, extra); /* the caller's own buffer or string */
    } else if (c->data != NULL) {
      lfwx_push_received(L, sv, svidx, c); /* a service receive */
    } else if (c->buffer != NULL) {
      lfwx_push_buffer(L, fwx_buffer_data(c->buffer), fwx_buffer_size(c->buffer),
                       fwx_buffer_size(c->buffer), 0);
    } else {
      lua_pushnil(L);
    }
    lua_pushvalue(L, ud);
    if (c->has_address)
      lfwx_push_address(L, (struct sockaddr *)&c->address);
    else
      lua_pushnil(L);
    nargs += 5;
    break;
  case FWX_OP_READ:
  case FWX_OP_WRITE:
    /* The handle was held by the overlapped for the operation's time. */
    lua_pushnil(L);
    lua_setiuservalue(L, obj, 4);
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, (lua_Integer)c->bytes);
    lua_pushinteger(L, c->error);
    lua_pushvalue(L, obj);
    lua_pushvalue(L, ud);
    nargs += 5;
    break;
  case FWX_OP_TASK:
    lua_pushvalue(L, ud);
    nargs += 1;
    break;
  case FWX_OP_TIMER:
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    lua_pushvalue(L, ud);
    nargs += 3;
    break;
  case FWX_OP_LOOKUP:
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    if (c->result != NULL) {
      push_lookup_result(L, c->result);
    } else {
      lua_pushnil(L);
    }
    lua_pushvalue(L, ud);
    nargs += 4;
    break;
  case FWX_OP_PUMP: /* obj is socket a, extra socket b (csrc/lua/pump.c) */
    lua_pushboolean(L, c->ok);
    lua_pushinteger(L, c->error);
    lua_pushinteger(L, (lua_Integer)c->bytes);
    lua_pushinteger(L, (lua_Integer)c->bytes_back);
    lua_pushvalue(L, ud);
    nargs += 5;
    break;
  default: /* not a kind the binding starts */
    fwx_completion_release(c);
    lua_settop(L, top);
    return;
  }
  /* What the packet carried has been copied or taken: release the rest now, before
   * the handler runs (and may raise). */
  fwx_completion_release(c);
  if (kept || awaited)
    lua_call(L, nargs, 0);
  else if (lua_pcall(L, nargs, 0, msgh) != LUA_OK)
    lfwx_report(L, svidx, obj, kind);
  if (kept) let_go_later(L, sv, svidx, obj);
  lua_settop(L, top);
  if (debug_gc) lua_gc(L, LUA_GCSTEP, 0);
}

/* The message handler every handler runs under (and fwx.serve's workers' scripts). */
int lfwx_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* A posted task: its sink and user data are the ring's head entry (ring.c), called
 * unprotected under deliver_round's one lua_pcall (a pcall per task cost a tenth of a
 * chain of tasks). The stack is left as it was. */
static void deliver_task(lua_State *L, lfwx_service_t *sv) {
  int nargs = 1;
  lfwx_ring_shift(L, sv, 2);
  if (lua_type(L, -2) != LUA_TFUNCTION) {
    lua_getfield(L, -2, "CompleteTask");
    lua_insert(L, -3); /* the method, then the sink as self, then the user data */
    nargs = 2;
  }
  lua_call(L, nargs, 0);
  if (debug_gc) lua_gc(L, LUA_GCSTEP, 0);
}

/* A 0 ms timer: the ring's head entry is the timer, its sink and its user data. Always
 * under its own pcall: a report of its error needs the timer. */
static void deliver_due_timer(lua_State *L, lfwx_service_t *sv, int svidx, int msgh,
                              const fwx_completion_t *c) {
  int timer = lua_gettop(L) + 1, sink = timer + 1, nargs = 3;
  lfwx_ring_shift(L, sv, 3);                  /* timer, sink, user data */
  /* The call is pushed above them (two rotations cost as much as these copies). */
  if (lua_type(L, sink) == LUA_TFUNCTION) {
    lua_pushvalue(L, sink);
  } else {
    lua_getfield(L, sink, "CompleteTimer");
    lua_pushvalue(L, sink);                   /* self */
    nargs = 4;
  }
  lua_pushboolean(L, c->ok);
  lua_pushinteger(L, c->error);
  lua_pushvalue(L, sink + 1);                 /* the user data */
  if (lua_pcall(L, nargs, 0, msgh) != LUA_OK) lfwx_report(L, svidx, timer, FWX_OP_TIMER);
  lua_settop(L, timer - 1);
  if (debug_gc) lua_gc(L, LUA_GCSTEP, 0);
}

static int push_message_protected(lua_State *L) {
  const fwx_completion_t *c = lua_touserdata(L, 1);
  return lfwx_push_message(L, c->data, c->bytes);
}

/* A message from another worker (workers.c): its value to the task handler registered
 * under its name, as sink(value, from_worker), under its own pcall. A message from
 * worker 0 is fwx.serve asking this worker to stop. */
static void deliver_message(lua_State *L, lfwx_service_t *sv, int svidx, int msgh,
                            fwx_completion_t *c) {
  int top = lua_gettop(L), from = (int)c->key, st, sink, nargs = 2;
  if (from == 0) {
    sv->stop = 1;
    fwx_completion_release(c);
    return;
  }
  lua_pushcfunction(L, push_message_protected);
  lua_pushlightuserdata(L, c);
  st = lua_pcall(L, 1, 2, msgh);               /* name, value */
  fwx_completion_release(c);
  if (st != LUA_OK) {
    lfwx_report(L, svidx, 0, FWX_OP_MESSAGE);
    lua_settop(L, top);
    return;
  }
  lua_getiuservalue(L, svidx, LFWX_UV_OPTIONS);
  if (lua_getfield(L, -1, "tasks") == LUA_TTABLE) {
    lua_pushvalue(L, top + 1);
    lua_rawget(L, -2);
  } else {
    lua_pushnil(L);
  }
  sink = lua_gettop(L);
  if (lua_isnil(L, sink)) {
    lua_pushfstring(L, "no task handler named '%s' for a message from worker %d "
                       "(fw:SetTaskHandler)", lua_tostring(L, top + 1), from);
    lfwx_report(L, svidx, 0, FWX_OP_MESSAGE);
  } else {
    if (lua_type(L, sink) == LUA_TFUNCTION) {
      lua_pushvalue(L, sink);
    } else {
      lua_getfield(L, sink, "CompleteTask");
      lua_pushvalue(L, sink);
      nargs = 3;
    }
    lua_pushvalue(L, top + 2);
    lua_pushinteger(L, from);
    if (lua_pcall(L, nargs, 0, msgh) != LUA_OK) lfwx_report(L, svidx, 0, FWX_OP_MESSAGE);
  }
  lua_settop(L, top);
  if (debug_gc) lua_gc(L, LUA_GCSTEP, 0);
}

/* One dispatch round, as far as it has gone. */
typedef struct round {
  lfwx_service_t *sv;
  int drain;
  size_t left;             /* deliveries this round may still make */
  fwx_op_kind_t kind;      /* what deliver_round delivers, for a report if it raises */
  fwx_completion_t c;
} round_t;

static int round_goes_on(const round_t *r) {
  return r->drain || (!r->sv->stop && !r->sv->closed);
}

/* Take the next packet of the round into r->c; 0 when the round is over. A ring packet
 * must have its entry taken before any Lua runs, or a nested dispatcher (a finalizer
 * may call Close) would take that entry for another packet: its delivery comes next. */
static int next_packet(round_t *r) {
  if (r->left == 0 || !round_goes_on(r) || !fwx_port_get(r->sv->port, &r->c)) return 0;
  r->left--;
  return 1;
}

/* Deliver r->c: svidx the service box, tidx its anchor table, msgh the traceback
 * handler. */
static void deliver_packet(lua_State *L, round_t *r, int svidx, int tidx, int msgh) {
  r->kind = r->c.kind;
  if (r->c.kind == FWX_OP_MESSAGE)
    deliver_message(L, r->sv, svidx, msgh, &r->c);
  else if (r->c.key != LFWX_RING_KEY)
    deliver(L, r->sv, svidx, tidx, msgh, &r->c);
  else if (r->c.kind == FWX_OP_TASK)
    deliver_task(L, r->sv);
  else
    deliver_due_timer(L, r->sv, svidx, msgh, &r->c);
}

/* A dispatch round, run under lua_pcall by lfwx_dispatch: 1 the round, 2 the service
 * box, 3 the anchor table, 4 the traceback handler. Posted tasks and sockets' own
 * receives, the packets that come by the thousand, are called unprotected under that
 * one pcall (a pcall each was a tenth of a chain of tasks, and 2-3% of an echoed
 * message); other packets each get their own. A handler that raises unwinds to
 * lfwx_dispatch, which reports it (round_failed) and calls this again for the rest. Its
 * upvalues are the class metatables, as every function of the binding has them:
 * delivering makes objects (buffers, sockets, addresses). One closure per Lua state,
 * made when the module opens (lfwx_open_dispatch). */
static int deliver_round(lua_State *L) {
  round_t *r = lua_touserdata(L, 1);
  while (next_packet(r)) deliver_packet(L, r, 2, 3, 4);
  return 0;
}

/* deliver_round raised, with r->c the packet it was delivering (its message on top).
 * Report it as that packet's; a socket's own receive names its socket, found in the
 * keep slot its key names (a slot is let go after the handler), and has it let go of
 * that slot as deliver would have. A handler that switched to a receive into its own
 * buffer let the slot go at that call, and another socket may have taken it since: a
 * box that is not the packet's socket is not named (nor let go of its slot). */
static void round_failed(lua_State *L, round_t *r, int svidx) {
  int msg = lua_gettop(L), boxidx;
  lfwx_socket_t *box;
  if (r->c.key == LFWX_RING_KEY || !LFWX_KEY_IS_KEPT(r->c.key) || r->kind == FWX_OP_NONE ||
      r->kind == FWX_OP_MESSAGE) {
    lfwx_report(L, svidx, 0, r->kind);
    return;
  }
  boxidx = push_kept(L, svidx, r->c.key);
  box = lfwx_testudata(L, boxidx, LFWX_SOCKET);
  if (box != NULL && (box->s == NULL || (void *)box->s != r->c.object)) box = NULL;
  lua_pushvalue(L, msg);
  lfwx_report(L, svidx, box != NULL ? boxidx : 0, r->kind);
  if (box != NULL) let_go_unless_receiving(L, r->sv, svidx, boxidx);
  lua_settop(L, msg - 1);
}

/* Run the dispatcher. Normal mode returns on stop(), on Close(), when nothing is
 * pending (1), or when what is pending can only be ended by the program's own calls
 * (-1: fwx_port_stuck); drain mode (Close) goes on until nothing is pending whatever
 * stop says. Each round delivers only what was queued when it began, so a handler that keeps
 * posting cannot starve I/O. */
int lfwx_dispatch(lua_State *L, lfwx_service_t *sv, int svidx, int drain, int64_t timeout) {
  fwx_port_t *port = sv->port;
  round_t r;
  int tidx, msgh, roundf, idle = 0;
  uint64_t t0;

  /* What every delivery uses stays on the stack for the whole run: the anchor table, the
   * traceback handler, deliver_round. lfwx_dispatch runs inside a function of the
   * binding, which has the class metatables as upvalues. */
  lua_getiuservalue(L, svidx, LFWX_UV_ANCHORS);
  tidx = lua_gettop(L);
  lua_pushcfunction(L, lfwx_traceback);
  msgh = tidx + 1;
  lua_rawgeti(L, lua_upvalueindex(LFWX_SERVICE), LFWX_SERVICE_META_ROUND);
  roundf = tidx + 2;
  r.sv = sv;
  r.drain = drain;
  if (!drain && timeout >= 0) fwx_port_deadline(port, timeout);
  for (;;) {
    /* Deliver what is queued, including what handlers queue meanwhile, up to a bound:
     * polling for I/O costs a system call, so a chain of posted tasks should not pay
     * one each, but it must not starve the sockets either. */
    r.left = LFWX_DISPATCH_BATCH;
    /* The time in handlers (fw:stats): two clock reads a round that delivers
     * something, not two a notification (a vDSO clock_gettime is about 25 ns; a
     * round at 50 busy connections delivers dozens). Not in Close's drain, which may
     * run inside a handler and would count that time twice. */
    t0 = !drain && fwx_port_queued(port) > 0 ? uv_hrtime() : 0;
    /* The round under one pcall; after a handler raised, the rest of it under the
     * next. A failure that took no packet (no room to call) ends the round. */
    while (r.left > 0 && round_goes_on(&r) && fwx_port_queued(port) > 0) {
      size_t left = r.left;
      lua_pushvalue(L, roundf);
      lua_pushlightuserdata(L, &r);
      lua_pushvalue(L, svidx);
      lua_pushvalue(L, tidx);
      lua_pushvalue(L, msgh);
      r.kind = FWX_OP_NONE;
      if (lua_pcall(L, 4, 0, msgh) == LUA_OK) break;
      if (r.left == left) r.kind = FWX_OP_NONE; /* it failed before taking a packet */
      round_failed(L, &r, svidx);
      if (debug_gc) lua_gc(L, LUA_GCSTEP, 0);
      if (r.left == left) break;
    }
    let_go_noted(L, sv, svidx);
    lfwx_ring_sweep(sv); /* let what was delivered be collected */
    if (t0 != 0) {
      sv->lua_ns += uv_hrtime() - t0;
      sv->delivered += LFWX_DISPATCH_BATCH - r.left;
    }
    if (!drain && (sv->stop || sv->closed)) break;
    if (fwx_port_pending(port) == 0) {
      idle = 1;
      break;
    }
    if (!drain && fwx_port_deadline_hit(port)) break;
    /* What is pending waits for calls of the owner's (a link's receive for a send):
     * no poll can end it, so run() returns, as it would with nothing pending. */
    if (!drain && fwx_port_stuck(port)) {
      idle = -1;
      break;
    }
    fwx_port_poll(port, fwx_port_queued(port) == 0);
  }
  if (!drain && timeout >= 0 && !sv->closed) fwx_port_deadline(port, -1);
  lua_pop(L, 3);
  return idle;
}

/* Keep deliver_round, with its upvalues, in the service metatable. The class metatables
 * exist by now (fwx.c makes them all first). */
void lfwx_open_dispatch(lua_State *L) {
  int i;
  luaL_getmetatable(L, lfwx_class_names[LFWX_SERVICE]);
  for (i = 1; i <= LFWX_NCLASSES; i++) luaL_getmetatable(L, lfwx_class_names[i]);
  lua_pushcclosure(L, deliver_round, LFWX_NCLASSES);
  lua_rawseti(L, -2, LFWX_SERVICE_META_ROUND);
  lua_pop(L, 1);
}
