--- fwx.link: the sockets between two data filters of one connection (DESIGN.md
-- section 5: "data filters form a chain ordered by priority class").
--
-- In the SDK, the internal and external sockets a data filter is given by SetSockets
-- "may be another data filter in the chain, not a real socket": filter k's external
-- socket and filter k+1's internal socket are the two ends of a link. An end has the
-- socket's methods (Recv, Send, Shutdown, Close, CancelIo, GetSockName, GetPeerName,
-- and the await style's recv and send), and behaves as a connected TCP socket would:
--
-- * Send queues the buffer for the other end; its notification comes once the other
--   end's Recv has taken all of it ("a send completion only means the next filter took
--   the buffer", ISA-SDK.md 3.1), so a filter that waits for it is pushed back on.
--   The bytes are copied at the call, so the caller may reuse its buffer at once.
-- * Recv takes what is queued, in order: the sender's buffer itself with no buffer
--   of its own (read-only, as the SDK's service-supplied buffers are), or as much as
--   fits into the one given. After Shutdown or a graceful Close of the other end, and
--   once the queue is empty, Recv succeeds with 0 bytes (the end of the stream);
--   after an abortive Close it fails with 64 (ERROR_NETNAME_DELETED), as a reset does.
-- * Close ends this end's receive with 995 and fails, with 64, the sends queued
--   towards it that it did not take; what it sent itself stays to be taken by the
--   other end, unless the close is abortive (then they end with 995). A Send after
--   Shutdown, or towards an end that is closed, fails with 64 (EPIPE's code on the
--   core's sockets).
--
-- The invariants hold as for the core's sockets. Every notification is a timer's
-- (fw:SetTimer), so it never runs inside the call that started the operation and the
-- port counts it: an operation that completes at once gets a 0 ms timer, and one that
-- must wait holds a timer set for ever, cancelled when the operation completes (the
-- timer's notification then carries the operation's result instead of its own 995).
-- So fw:Close() ends a waiting operation with 995 like any other, and the timer
-- anchors the sink, the user data and the buffer until the notification is delivered.
local await = require "fwx.await"

local M = {}

local ERROR_NETNAME_DELETED = 64
local ERROR_OPERATION_ABORTED = 995
local FOREVER_MS = math.tointeger(1e15) -- 31 700 years: only a Cancel ends it

local type, error, tostring = type, error, tostring

local End = {}
End.__index = End

-- The notification of a link operation: rec = { sink, ud, ok, err, buf } and, while
-- waiting, .timer. Without a result (the service closed with the operation waiting),
-- it ends with 995.
local function notify(_, _, rec)
  local sink, ok, err, buf = rec.sink, rec.ok, rec.err, rec.buf
  if ok == nil then ok, err = false, ERROR_OPERATION_ABORTED end
  if type(sink) == "function" then return sink(ok, err, buf, rec.ud) end
  return sink:CompleteAsyncIO(ok, err, buf, rec.ud)
end

-- Give rec its result and have it delivered: false if it cannot be (its waiting timer
-- was already ended by the service's close, so its 995 is on the way).
local function complete(e, rec, ok, err, buf)
  local timer = rec.timer
  if timer ~= nil and not timer:Cancel() then return false end
  rec.ok, rec.err, rec.buf = ok, err, buf
  if timer == nil then rec.timer = e._fw:SetTimer(0, notify, rec) end
  if e._on_timer then e._on_timer(rec.timer) end
  return true
end

-- An operation that waits: a timer the port counts, for the close's 995.
local function wait(e, rec)
  rec.timer = e._fw:SetTimer(FOREVER_MS, notify, rec)
  if e._on_timer then e._on_timer(rec.timer) end
end

local function check_open(e, what)
  if e._closed then error(what .. ": socket is closed", 3) end
end

local function check_sink(sink, argn, what, optional)
  local t = type(sink)
  if t == "function" then return end
  if (t == "table" or t == "userdata") and type(sink.CompleteAsyncIO) == "function" then return end
  if optional and sink == nil then return end
  error(("bad argument #%d to '%s' (function or object with CompleteAsyncIO expected%s, got %s)")
    :format(argn, what, optional and " or nil" or "", t), 3)
end

-- The bytes of a Send, as a buffer the caller no longer holds.
local function payload(e, data, what)
  local t = type(data)
  if t == "string" then return e._fw:CreateConstBuffer(data) end
  if t == "userdata" and type(data.GetBufferAndSize) == "function" then
    local n = #data
    if n == 0 then return data end
    local copy = e._fw:CreateBuffer(n)
    data:SendToBuffer(copy, 0, n)
    return copy
  end
  error(("bad argument #1 to '%s' (buffer or string expected, got %s)"):format(what, t), 3)
end

-- Complete this end's waiting Recv from its queue, or with the end of the stream or
-- the reset, if it can.
local function take(e)
  local rec = e._recv
  local q = e._queue
  local head = q.first
  if head <= q.last then
    local src = q[head]
    local sbuf, off = src.buf, src.off
    local size = #sbuf
    local own, out, n = rec.own, nil, 0
    if own ~= nil then
      n = size - off
      local room = own:GetBufferSizes()
      if n > room then n = room end
      own:SetDataSize(0)
      sbuf:SendToBuffer(own, off, n)
      out = own
    elseif off == 0 then
      out, n = sbuf, size
    else
      n = size - off
      out = e._fw:CreateWindowBuffer(sbuf, off, n)
    end
    e._recv = nil
    -- A receive the service's close already ended takes nothing: its 995 is on the way.
    if not complete(e, rec, true, 0, out) then return end
    if off + n < size then
      src.off = off + n
    else
      q[head] = nil
      q.first = head + 1
      if src.sink ~= nil then complete(e, src, true, 0, sbuf) end
    end
  elseif e._reset then
    e._recv = nil
    complete(e, rec, false, ERROR_NETNAME_DELETED, rec.own)
  elseif e._eof then
    local out = rec.own
    if out ~= nil then out:SetDataSize(0) else out = e._fw:CreateConstBuffer("") end
    e._recv = nil
    complete(e, rec, true, 0, out)
  end
end

--- e:Recv(buffer_or_nil, sink, userdata): sink(ok, err, buffer, userdata), or
-- sink:CompleteAsyncIO(...).
function End:Recv(buf, sink, ud)
  check_open(self, "Recv")
  if buf ~= nil and (type(buf) ~= "userdata" or type(buf.GetBufferSizes) ~= "function") then
    error(("bad argument #1 to 'Recv' (buffer or nil expected, got %s)"):format(type(buf)), 2)
  end
  check_sink(sink, 2, "Recv")
  if buf ~= nil then
    local room, size = buf:GetBufferSizes()
    if room == 0 then error("bad argument #1 to 'Recv' (buffer has no room)", 2) end
    if buf:IsLent() then error("bad argument #1 to 'Recv' (buffer is lent to a pending operation)", 2) end
    if not pcall(buf.SetDataSize, buf, size) then
      error("bad argument #1 to 'Recv' (buffer is constant)", 2)
    end
  end
  if self._recv ~= nil then error("Recv: a receive is already pending on this socket", 2) end
  local rec = { sink = sink, ud = ud, own = buf }
  self._recv = rec
  take(self)
  if self._recv == rec then wait(self, rec) end
  return true
end

--- e:Send(buffer_or_string [, sink, userdata]): notified once the other end has
-- taken every byte.
function End:Send(data, sink, ud)
  check_open(self, "Send")
  local buf = payload(self, data, "Send")
  check_sink(sink, 2, "Send", true)
  local peer = self._peer
  if #buf == 0 then -- nothing to take: done at once, as a socket's empty send
    if sink ~= nil then complete(self, { sink = sink, ud = ud }, true, 0, buf) end
    return true
  end
  if self._shut or peer._closed then
    if sink ~= nil then complete(self, { sink = sink, ud = ud }, false, ERROR_NETNAME_DELETED, buf) end
    return true
  end
  local rec = { sink = sink, ud = ud, buf = buf, off = 0 }
  local q = peer._queue
  q.last = q.last + 1
  q[q.last] = rec
  if peer._recv ~= nil then take(peer) end
  if sink ~= nil and rec.timer == nil then wait(self, rec) end -- not all taken yet
  return true
end

--- e:Shutdown([abortive]): no more sends; the other end reads the end of the stream
-- once it has taken what was sent. Abortive: e:Close(true).
function End:Shutdown(abortive)
  if abortive then return self:Close(true) end
  check_open(self, "Shutdown")
  if not self._shut then
    self._shut = true
    local peer = self._peer
    peer._eof = true
    if peer._recv ~= nil then take(peer) end
  end
  return true
end

--- e:CancelIo() -> whether it ended a pending Recv (which then notifies 995).
function End:CancelIo()
  local rec = self._recv
  if rec == nil then return false end
  self._recv = nil
  return complete(self, rec, false, ERROR_OPERATION_ABORTED, rec.own)
end

-- End every send still queued in q with err.
local function fail_queued(e, q, err)
  for i = q.first, q.last do
    local rec = q[i]
    q[i] = nil
    if rec.sink ~= nil then complete(e, rec, false, err, rec.buf) end
  end
  q.first, q.last = 1, 0
end

--- e:Close([abortive]): idempotent.
function End:Close(abortive)
  if self._closed then return true end
  self._closed = true
  self:CancelIo()
  -- What the other end sent and this one will not take now.
  fail_queued(self, self._queue, ERROR_NETNAME_DELETED)
  local peer = self._peer
  if abortive then
    -- What this end sent and the other did not take goes too: a reset.
    fail_queued(self, peer._queue, ERROR_OPERATION_ABORTED)
    peer._reset = true
  end
  peer._eof = true
  if peer._recv ~= nil then take(peer) end
  if self._on_close then self._on_close(self) end
  return true
end
End.__close = function(e) e:Close() end
End.__gc = nil

function End:GetSockName() return self._sockname end
function End:GetPeerName() return self._peername end
function End:closed() return self._closed end

local function no_options()
  error("a link between data filters has no socket options", 3)
end
function End:SetSockOpt() no_options() end
function End:GetSockOpt() no_options() end

-- The await style: e:recv([buffer] [, ms]) -> ok, err, buffer and e:send(data [, ms])
-- -> ok, err, buffer, inside fw:spawn, as a socket's.
local function cancel_recv(e) e:CancelIo() end
local function close_abortive(e) e:Close(true) end
function End:recv(buf, ms)
  if type(buf) == "number" and ms == nil then buf, ms = nil, buf end
  return await.io(self, "Recv", "recv", buf, ms, cancel_recv)
end
function End:send(data, ms)
  return await.io(self, "Send", "send", data, ms, close_abortive)
end

End.__tostring = function(e) return ("fwx.link %s"):format(e._name or "") end

--- link.pair(fw, opts) -> a, b: the two ends of a new link. opts (all optional):
-- a_name, b_name (GetSockName of each; GetPeerName is the other's), name (for
-- tostring), on_close(end) (called once as each end closes), on_timer(timer) (each
-- notification's timer, for telling which connection a raising sink belongs to).
function M.pair(fw, opts)
  opts = opts or {}
  local function new(sock, peer)
    return setmetatable({
      _fw = fw, _queue = { first = 1, last = 0 }, _closed = false,
      _sockname = sock, _peername = peer, _name = opts.name,
      _on_close = opts.on_close, _on_timer = opts.on_timer,
    }, End)
  end
  local a, b = new(opts.a_name, opts.b_name), new(opts.b_name, opts.a_name)
  a._peer, b._peer = b, a
  return a, b
end

M.End = End
return M
