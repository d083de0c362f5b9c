--- fwx.await: the await style (DESIGN.md section 3).
--
-- Inside fw:spawn(fn), an asynchronous operation can be awaited: `s:recv()` starts
-- `s:Recv(nil, sink, ud)` and suspends the coroutine until its notification, then
-- returns `ok, err` and the notification's other values, less the object the call was
-- made on and the user data. There is one implementation: each awaited operation is
-- the callback-style one, with a sink that resumes the coroutine. So the invariants
-- hold as they do there: one notification per operation (the coroutine is resumed
-- once per awaited call), never inline, nothing collected while it waits (the
-- coroutine is the operation's user data, anchored with it), and an error raised in a
-- coroutine is reported like a handler's, to the service's on_error, and fails alone.
--
-- Timeouts: every awaited operation takes a timeout in ms as its last, optional
-- argument (default: the socket's s:settimeout(ms), else none). When it runs out, a
-- receive or an accept is cancelled (s:CancelIo(); the socket stays usable), a
-- connect, a send or a pump closes its socket (neither can be taken back halfway), a
-- handle's read or write cancels its overlapped; the call then returns
-- `false, 121` (ERROR_SEM_TIMEOUT). An operation that completed before its
-- cancellation could take effect keeps its own result.
local M = {}

local running, yield = coroutine.running, coroutine.yield
local type, select, error, unpack = type, select, error, table.unpack

local ERROR_OPERATION_ABORTED = 995
local ERROR_SEM_TIMEOUT = 121

local core = require "fwx.core"

-- What an awaited operation yields, so that any other yield is recognised as a misuse
-- (a light userdata of the C side, which checks for it too: core.wake_io).
local WAITING = core.WAITING

-- The coroutines fw:spawn made, and their service (keys weak: a finished or abandoned
-- coroutine is not kept). Awaited calls anywhere else raise.
local spawned = setmetatable({}, { __mode = "k" })
-- s:settimeout(ms): a socket's default timeout.
local timeouts = setmetatable({}, { __mode = "k" })
-- One overlapped per coroutine for handle reads and writes: a coroutine awaits one
-- operation at a time.
local overlapped_of = setmetatable({}, { __mode = "k" })

-- Resume co with the notification's values, and judge what the resume ended in: a
-- wait again, the end, an error (raised again with the coroutine's traceback, so the
-- dispatcher reports it as a handler's), or a stray yield (reported). In C:
-- csrc/lua/resume.c.
local step = core.step

-- Start an operation with f(obj, ...). A misuse it raises (a bad argument, a closed
-- socket) is raised again at the caller's line, in the awaited call's name and with
-- the caller's argument numbers (f's less the object; for a handle's offset, less the
-- overlapped too), since nothing was started.
local function misuse(name, offset_arg, err)
  if type(err) == "string" then
    err = err:gsub("^[^\n]-:%d+: ", "", 1)
    err = err:gsub("^bad argument #(%d+) to '[^']*'", function(n)
      n = tonumber(n)
      return ("bad argument #%d to '%s'"):format(n == offset_arg and n - 2 or n - 1, name)
    end, 1)
  end
  error(err, 4)
end

local function begin(name, offset_arg, f, ...)
  local ok, err = pcall(f, ...)
  if not ok then misuse(name, offset_arg, err) end
end

-- The running coroutine, which must be one of fw:spawn's. Errors name the level of
-- the user's call: 3 from a method's own body.
local function not_spawned(what, level)
  error(what .. " is the await style: call it inside fw:spawn(fn)", level or 3)
end

local function current(what, level)
  local co, main = running()
  if main or spawned[co] == nil then not_spawned(what, (level or 3) + 1) end
  return co
end

local function check_timeout(ms, argn, what, level)
  if ms ~= nil and (type(ms) ~= "number" or ms ~= ms or ms < 0) then
    error(("bad argument #%d to '%s' (timeout in ms expected, got %s)")
      :format(argn, what, type(ms) == "number" and tostring(ms) or type(ms)), level or 3)
  end
  return ms
end

-- An operation with a timeout has a state table as its user data instead of the
-- coroutine: {co, timer, fired, done, cancel, obj}.
local function on_timeout(ok, _, st)
  if not ok or st.done then return end -- cancelled (995), or the operation came first
  st.fired = true
  st.cancel(st.obj)
end

-- The coroutine to resume, and the result as the caller sees it.
local function settle(st, ok, err)
  st.done = true
  if st.fired then
    if not ok and err == ERROR_OPERATION_ABORTED then
      return st.co, false, ERROR_SEM_TIMEOUT
    end
  else
    st.timer:Cancel()
  end
  return st.co, ok, err
end

-- Start the timer of an operation that has st as its user data, then wait.
-- A timeout may be any number of 0 or more (check_timeout); SetTimer takes whole ms.
-- Rounded up, so that a fraction never shortens it, and capped at 1e15 ms (31 700
-- years), which an integer holds. resume.c rounds the core's deadlines the same way.
local MAX_TIMEOUT_MS = 1e15
local function whole_ms(ms)
  return math.ceil(ms < MAX_TIMEOUT_MS and ms or MAX_TIMEOUT_MS)
end

local function wait(fw, ms, st)
  if st ~= nil then
    -- after the operation started: this call must not raise
    st.timer = fw:SetTimer(whole_ms(ms), on_timeout, st)
  end
  return yield(WAITING)
end

-- The user data for an operation: the coroutine, or a state table with a timeout.
local function userdata(co, ms, cancel, obj)
  if ms == nil then return co, nil end
  local st = { co = co, cancel = cancel, obj = obj }
  return st, st
end

-- Sinks, one per notification shape: each resumes with ok, err and the rest, less
-- the object and the user data.
-- Recv, Send, SendTo: every message's, so without a timeout it resumes directly, and
-- with one it has a sink of its own.
local wake_io = core.wake_io -- (ok, err, buffer, co, address), in C: csrc/lua/resume.c
local deadline_prepare, deadline_send = core.deadline_prepare, core.deadline_send

local function wake_io_timed(ok, err, buffer, st, address)
  local co
  co, ok, err = settle(st, ok, err)
  return wake_io(ok, err, buffer, co, address)
end

local function wake_accept(ok, err, _, accepted, remote, loc, ud)
  if type(ud) ~= "thread" then ud, ok, err = settle(ud, ok, err) end
  return step(ud, ok, err, accepted, remote, loc)
end

local function wake_connect(ok, err, _, ud)
  if type(ud) ~= "thread" then ud, ok, err = settle(ud, ok, err) end
  return step(ud, ok, err)
end

local function wake_handle(ok, bytes, err, _, ud) -- handle Read, Write
  if type(ud) ~= "thread" then ud, ok, err = settle(ud, ok, err) end
  return step(ud, ok, err, bytes)
end

local function wake_pump(ok, err, a_to_b, b_to_a, ud)
  if type(ud) ~= "thread" then ud, ok, err = settle(ud, ok, err) end
  return step(ud, ok, err, a_to_b, b_to_a)
end

local function wake_timer(ok, err, co)
  return step(co, ok, err)
end

local function start(args)
  return step(args[1], unpack(args, 2, args.n))
end

local function cancel_io(s) s:CancelIo() end
local function close_abortive(s) s:Close(true) end
local function close_pair(p) p[1]:Close(true); p[2]:Close(true) end
local function cancel_overlapped(ov) ov:Cancel() end

local function timeout_of(s, ms)
  if ms == nil then return timeouts[s] end
  return ms
end

--- Install the await style into the method tables of the classes.
function M.install(methods)
  local service, socket, handle = methods.service, methods.socket, methods.handle

  --- fw:spawn(fn, ...) -> the coroutine. fn(...) runs in a new coroutine, started from
  -- the dispatcher (a posted task), never inside this call. An error it raises goes to
  -- on_error with its traceback, as a handler's does.
  function service:spawn(fn, ...)
    if type(fn) ~= "function" then
      error(("bad argument #1 to 'spawn' (function expected, got %s)"):format(type(fn)), 2)
    end
    local co = coroutine.create(fn)
    spawned[co] = self
    if select("#", ...) == 0 then
      self:PostTaskCompletion(step, co)
    else
      self:PostTaskCompletion(start, { co, n = select("#", ...) + 1, ... })
    end
    return co
  end

  --- fw:sleep(ms) -> ok, err: a timer, awaited (false, 995 if the service closes).
  function service:sleep(ms)
    local co = current("fw:sleep")
    if type(ms) ~= "number" then
      error(("bad argument #1 to 'sleep' (number expected, got %s)"):format(type(ms)), 2)
    end
    begin("sleep", nil, self.SetTimer, self, ms, wake_timer, co)
    return yield(WAITING)
  end

  --- fw:pump(a, b [, filter] [, ms [, idle_ms]]) -> ok, err, bytes_a_to_b, bytes_b_to_a
  -- With a filter, the filtered pump: filter(direction, buf), the callback style's
  -- filter less the user data, as an awaited call's results are the notification's
  -- less it; it returns what that one does (nil, a string or buffer, false). ms limits
  -- the whole pump (then both sockets are closed, as a pump cannot be taken back
  -- halfway); idle_ms ends it once nothing has moved either way for that long (the
  -- core's own limit, as HAProxy's "timeout tunnel"), leaving the sockets to the
  -- caller. Either way it returns false, 121 and the bytes moved.
  function service:pump(a, b, filter, ms, idle_ms)
    local co = current("fw:pump")
    local ms_arg = 4
    if type(filter) ~= "function" then
      if filter ~= nil then -- fw:pump(a, b, ms [, idle_ms])
        if type(filter) ~= "number" then
          error(("bad argument #3 to 'pump' (function or timeout in ms expected, got %s)")
            :format(type(filter)), 2)
        end
        if idle_ms ~= nil then
          error(("bad argument #5 to 'pump' (no value expected after the idle limit, got %s)")
            :format(type(idle_ms)), 2)
        end
        ms, idle_ms, ms_arg = filter, ms, 3
      end
      filter = nil
    end
    check_timeout(ms, ms_arg, "pump")
    if idle_ms ~= nil and (type(idle_ms) ~= "number" or math.tointeger(idle_ms) == nil
                           or idle_ms < 0) then
      error(("bad argument #%d to 'pump' (idle limit in whole ms expected, got %s)")
        :format(ms_arg + 1, type(idle_ms) == "number" and tostring(idle_ms) or type(idle_ms)), 2)
    end
    local ud, st = userdata(co, ms, close_pair, { a, b })
    local relay -- one Lua call more per chunk than the callback style's filter
    if filter ~= nil then relay = function(_, direction, buf) return filter(direction, buf) end end
    begin("pump", nil, self.Pump, self, a, b, wake_pump, ud, relay, idle_ms)
    return wait(self, ms, st)
  end

  --- s:settimeout(ms): the default timeout of this socket's awaited operations
  -- (nil: none).
  function socket:settimeout(ms)
    check_timeout(ms, 1, "settimeout")
    timeouts[self] = ms
    return true
  end

  --- s:accept([ms]) -> ok, err, accepted, remote, local
  function socket:accept(ms)
    local co = current("s:accept")
    ms = timeout_of(self, check_timeout(ms, 1, "accept"))
    local ud, st = userdata(co, ms, cancel_io, self)
    begin("accept", nil, self.Accept, self, wake_accept, ud)
    return wait(spawned[co], ms, st)
  end

  --- s:connect(host, port [, ms]) -> ok, err
  function socket:connect(host, port, ms)
    local co = current("s:connect")
    ms = timeout_of(self, check_timeout(ms, 3, "connect"))
    local ud, st = userdata(co, ms, close_abortive, self)
    begin("connect", nil, self.Connect, self, host, port, wake_connect, ud)
    return wait(spawned[co], ms, st)
  end

  -- s:recv([buffer [, ms]]) -> ok, err, buffer, address (UDP: the sender)
  -- s:send(buffer_or_string [, ms]) -> ok, err, buffer
  -- Every message's calls: the methods are C functions (csrc/lua/resume.c) that check
  -- what the others check here, start s:Recv or s:Send with core.wake_io and the
  -- coroutine, and yield WAITING themselves. A misuse of their arguments raises in
  -- their own names ('recv', 'send'). With a timeout (their own or the socket's
  -- s:settimeout) they give the operation a deadline in the core (deadline.c), which
  -- ends it with 121 by itself. Only where the core cannot (a closed socket, whose
  -- misuse is raised here; a second timed send while one waits on the socket) do they
  -- call timed below, which starts the operation with a timer; its misuse is raised
  -- again in the same names, at the caller's line (misuse's level 4: timed is 2, the C
  -- method 3).
  local function timed(s, sending, data, ms)
    local co = running()
    local st = userdata(co, ms, sending and close_abortive or cancel_io, s)
    local ok, err = pcall(sending and s.Send or s.Recv, s, data, wake_io_timed, st)
    if not ok then misuse(sending and "send" or "recv", nil, err) end
    return wait(spawned[co], ms, st)
  end
  socket.recv, socket.send = core.awaited_io(spawned, timeouts, timed)

  --- s:sendto(buffer_or_string, host, port [, ms]) -> ok, err, buffer
  function socket:sendto(data, host, port, ms)
    local co = current("s:sendto")
    ms = timeout_of(self, check_timeout(ms, 4, "sendto"))
    if ms ~= nil and deadline_prepare(self) then
      -- a deadline in the core, as s:send's (csrc/core/deadline.c): no timer
      begin("sendto", nil, self.SendTo, self, data, host, port, wake_io, co)
      deadline_send(self, ms)
      return yield(WAITING)
    end
    local ud, st = userdata(co, ms, close_abortive, self)
    begin("sendto", nil, self.SendTo, self, data, host, port, st and wake_io_timed or wake_io, ud)
    return wait(spawned[co], ms, st)
  end

  -- A link's (the sockets between data filters, lua/fwx/link.lua): as a socket's
  -- with a timer, since the core has no deadlines for links.
  local link = methods.link
  --- e:recv([buffer] [, ms]) -> ok, err, buffer
  function link:recv(buffer, ms)
    local co = current("e:recv")
    if ms == nil and type(buffer) == "number" then buffer, ms = nil, buffer end
    check_timeout(ms, 2, "recv")
    local ud, st = userdata(co, ms, cancel_io, self)
    begin("recv", nil, self.Recv, self, buffer, st and wake_io_timed or wake_io, ud)
    return wait(spawned[co], ms, st)
  end
  --- e:send(buffer_or_string [, ms]) -> ok, err, buffer
  function link:send(data, ms)
    local co = current("e:send")
    check_timeout(ms, 2, "send")
    local ud, st = userdata(co, ms, close_abortive, self)
    begin("send", nil, self.Send, self, data, st and wake_io_timed or wake_io, ud)
    return wait(spawned[co], ms, st)
  end

  -- A handle's operations go through the coroutine's overlapped.
  local function handle_op(h, op, name, buffer, offset, ms)
    local what = "h:" .. name
    local co = current(what, 3) -- called as a tail call: the user's is the next level
    check_timeout(ms, 3, name, 3)
    local fw = spawned[co]
    local ov = overlapped_of[co]
    if ov == nil then
      ov = fw:CreateOverlapped()
      overlapped_of[co] = ov
    end
    local ud, st = userdata(co, ms, cancel_overlapped, ov)
    ov:SetNotificationInterface(wake_handle, ud)
    if offset == nil then
      begin(name, 4, h[op], h, buffer, ov)
    else
      begin(name, 4, h[op], h, buffer, ov, offset)
    end
    return wait(fw, ms, st)
  end

  --- h:read(buffer [, offset [, ms]]) -> ok, err, bytes
  function handle:read(buffer, offset, ms)
    return handle_op(self, "Read", "read", buffer, offset, ms)
  end

  --- h:write(buffer_or_string [, offset [, ms]]) -> ok, err, bytes
  function handle:write(data, offset, ms)
    return handle_op(self, "Write", "write", data, offset, ms)
  end
end

return M
