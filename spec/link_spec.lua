-- Links (fwx.link): the sockets between two data filters of the host's chain. Each
-- case tries to break a promise of DESIGN.md section 2 for them as for a real socket:
-- exactly one notification per operation (also under Close, CancelIo and the
-- service's Close), never inside the call, nothing collected while waiting, order,
-- no byte lost or duplicated, and misuse raised at the call with nothing started.
local fwx = require "fwx"
local link = require "fwx.link"
local H = require "spec.helper"

local E = fwx.errors

-- A sink that records (tag, ok, err, bytes, ud) per notification.
local function log_sink(log, tag)
  return function(ok, err, buf, ud)
    log[#log + 1] = { tag = tag, ok = ok, err = err, data = buf and tostring(buf), ud = ud }
  end
end

-- A checked service, a link on it and a log for log_sink.
local function setup()
  local fw = H.new()
  local a, b = link.pair(fw)
  return fw, a, b, {}
end

-- Receive on e until the end of the stream or an error: the list of what came.
local function read_all(e)
  local got = {}
  local function on_recv(ok, err, buf)
    got[#got + 1] = ok and tostring(buf) or ("error " .. err)
    if ok and #buf > 0 then e:Recv(nil, on_recv) end
  end
  e:Recv(nil, on_recv)
  return got
end

-- The log's entries by tag.
local function by_tag(log)
  local by = {}
  for _, l in ipairs(log) do by[l.tag] = l end
  return by
end

describe("a link between data filters", function()
  before_each(H.before)
  after_each(H.after)

  it("delivers sends to the other end in order, each notified once it is taken, never inline", function()
    local fw, a, b, log = setup()
    local inside = true
    a:Send("one", function(ok, err, _, ud)
      assert.is_false(inside)
      log[#log + 1] = ("sent %s %s %s"):format(ud, ok, err)
    end, "1")
    a:Send(fw:CreateConstBuffer("two"), log_sink(log, "sent 2"), "2")
    local got = {}
    local function on_recv(ok, err, buf)
      assert.is_false(inside)
      assert.is_true(ok, err)
      got[#got + 1] = tostring(buf)
      if #got < 2 then b:Recv(nil, on_recv) end
    end
    b:Recv(nil, on_recv)
    inside = false
    assert.same({}, log)
    H.run(fw)
    assert.same({ "one", "two" }, got)
    assert.equal("sent 1 true 0", log[1])
    assert.equal("sent 2", log[2].tag)
    assert.is_true(log[2].ok)
    assert.equal(2, #log)
  end)

  it("a send is notified only when the other end has taken all of it", function()
    local fw, a, b, log = setup()
    a:Send("abcdef", log_sink(log, "sent"))
    H.run_for(fw, 20)
    assert.same({}, log) -- nobody received: the send waits (pending, not lost)
    assert.equal(1, fw:pending())
    local own = fw:CreateBuffer(4)
    local parts = {}
    local function on_recv(ok, err, buf)
      assert.is_true(ok, err)
      assert.equal(own, buf)
      parts[#parts + 1] = tostring(buf)
      if #parts == 1 then
        assert.same({}, log) -- two bytes are still to be taken
        b:Recv(own, on_recv)
      end
    end
    b:Recv(own, on_recv)
    H.run(fw)
    assert.same({ "abcd", "ef" }, parts)
    assert.equal(1, #log)
    assert.is_true(log[1].ok)
  end)

  it("ends the stream after Shutdown once the queue is taken, and fails sends after it", function()
    local fw, a, b, log = setup()
    a:Send("last")
    a:Shutdown()
    a:Send("too late", log_sink(log, "late"))
    local got = read_all(b)
    -- the other direction still works after a's Shutdown
    b:Send("back")
    a:Recv(nil, log_sink(log, "back"))
    H.run(fw)
    assert.same({ "last", "" }, got)
    assert.equal(2, #log)
    local by = by_tag(log)
    assert.is_false(by.late.ok)
    assert.equal(E.WSAESHUTDOWN, by.late.err)
    assert.equal("back", by.back.data)
    -- the end of the stream stays: a receive after it ends at once, with 0 bytes
    b:Recv(nil, log_sink(log, "again"))
    H.run(fw)
    assert.is_true(log[3].ok)
    assert.equal("", log[3].data)
    a:Close(); b:Close()
  end)

  it("Close ends its own receive with 995, fails the sends it did not take, and the other end reads the end", function()
    local fw, a, b = setup()
    local c, d = link.pair(fw)
    local log = {}
    b:Send("never taken", log_sink(log, "b send"))
    a:Send("taken after the close")
    a:Close()
    a:Close() -- idempotent
    c:Recv(nil, log_sink(log, "a recv")) -- waits: nothing was sent to c
    c:Close()
    local got = read_all(b)
    H.run(fw)
    local by = by_tag(log)
    assert.equal(2, #log)
    assert.equal(E.ERROR_OPERATION_ABORTED, by["a recv"].err)
    assert.equal(E.ERROR_NETNAME_DELETED, by["b send"].err)
    assert.same({ "taken after the close", "" }, got)
    H.raises("Recv: socket is closed", a.Recv, a, nil, function() end)
    b:Close(); d:Close()
  end)

  it("an abortive Close is a reset: the other end's receive fails with 64, its queued sends end with 995", function()
    local fw, a, b, log = setup()
    a:Send("dropped", log_sink(log, "a send"))
    a:Close(true)
    b:Recv(nil, log_sink(log, "b recv"))
    H.run(fw)
    local by = by_tag(log)
    assert.equal(E.ERROR_OPERATION_ABORTED, by["a send"].err)
    assert.is_false(by["b recv"].ok)
    assert.equal(E.ERROR_NETNAME_DELETED, by["b recv"].err)
    b:Close()
  end)

  it("CancelIo ends a waiting receive with 995 once; the end stays usable", function()
    local fw, a, b, log = setup()
    b:Recv(nil, log_sink(log, "first"))
    assert.is_true(b:CancelIo())
    assert.is_false(b:CancelIo())
    b:Recv(nil, log_sink(log, "second")) -- at once: the cancelled one is over
    H.raises("a receive is already pending", b.Recv, b, nil, function() end)
    a:Send("after")
    H.run(fw)
    assert.equal(2, #log)
    assert.equal(E.ERROR_OPERATION_ABORTED, log[1].err)
    assert.equal("after", log[2].data)
    a:Close(); b:Close()
  end)

  it("the service's Close ends every waiting operation with 995, exactly once", function()
    local fw = fwx.new{}
    local a, b = link.pair(fw)
    local log = {}
    b:Recv(nil, log_sink(log, "recv"))
    a:Recv(nil, log_sink(log, "recv 2"))
    b:Send("waits", log_sink(log, "send"))
    b:Send("waits too", log_sink(log, "send 2"))
    fw:Close()
    table.sort(log, function(x, y) return x.tag < y.tag end)
    -- b's first send was taken by a's waiting receive before the close (a link hands
    -- over at once), so only what still waited ends with 995
    assert.same({ "recv", "recv 2", "send", "send 2" },
      { log[1].tag, log[2].tag, log[3].tag, log[4].tag })
    assert.same({ false, E.ERROR_OPERATION_ABORTED }, { log[1].ok, log[1].err })
    assert.same({ true, 0, "waits" }, { log[2].ok, log[2].err, log[2].data })
    assert.same({ true, 0 }, { log[3].ok, log[3].err })
    assert.same({ false, E.ERROR_OPERATION_ABORTED }, { log[4].ok, log[4].err })
    assert.equal(0, fw:pending())
  end)

  it("a service dropped with links whose notifications are still queued is collected cleanly", function()
    for _ = 1, 3 do
      do
        local fw = fwx.new{}
        local a, b = link.pair(fw)
        b:Recv(nil, function() end)
        a:Recv(fw:CreateBuffer(8), function() end)
        a:Send("queued") -- b's receive completes: its packet waits in the port, undelivered
        b:Send("and this")
      end
      collectgarbage()
      collectgarbage()
    end
  end)

  it("keeps a waiting operation's sink, user data and buffer through full collections", function()
    local fw, a, b = setup()
    local got
    do
      local ud = { "user data" }
      b:Recv(fw:CreateBuffer(64), setmetatable({}, { __index = {
        CompleteAsyncIO = function(_, ok, err, buf, u) got = { ok, err, tostring(buf), u[1] } end,
      } }), ud)
    end
    for _ = 1, 3 do collectgarbage() end
    a:Send(string.rep("x", 10))
    H.run(fw)
    assert.same({ true, 0, string.rep("x", 10), "user data" }, got)
    a:Close(); b:Close()
  end)

  it("copies what is sent: the sender may reuse its buffer at once", function()
    local fw, a, b = setup()
    local buf = fw:CreateBuffer(8)
    buf:Append("first")
    a:Send(buf)
    buf:SetDataSize(0)
    buf:Append("changed")
    local got
    b:Recv(nil, function(ok, _, r) got = tostring(r) end)
    H.run(fw)
    assert.equal("first", got)
    a:Close(); b:Close()
  end)

  it("refuses misuse with a clear error and starts nothing", function()
    local fw, a, b = setup()
    H.raises("sink must be a function or an object with a CompleteAsyncIO method", a.Recv, a, nil, 42)
    H.raises("fwx.buffer expected, got string", a.Recv, a, "x", function() end)
    H.raises("buffer is constant", a.Recv, a, fw:CreateConstBuffer("x"), function() end)
    H.raises("buffer has no room", a.Recv, a, fw:CreateBuffer(1):sub(1, 0) and fw:CreateWindowBuffer(fw:CreateBuffer(1), 0, 0), function() end)
    H.raises("fwx.buffer or string expected, got number", a.Send, a, 5)
    H.raises("sink must be a function or an object with a CompleteAsyncIO method, or nil", a.Send, a, "x", 7)
    a:Recv(nil, function() end)
    H.raises("a receive is already pending", a.Recv, a, nil, function() end)
    H.raises("no socket options", a.SetSockOpt, a, "nodelay", true)
    a:CancelIo()
    H.run(fw)
    assert.equal(0, fw:pending())
    a:Close(); b:Close()
    H.raises("Send: socket is closed", a.Send, a, "x")
  end)

  it("an empty send is done at once and is not an end of stream", function()
    local fw, a, b, log = setup()
    a:Send("", log_sink(log, "empty"))
    a:Send("data")
    b:Recv(nil, log_sink(log, "recv"))
    H.run(fw)
    assert.equal(2, #log)
    local by = by_tag(log)
    assert.is_true(by.empty.ok)
    assert.equal("data", by.recv.data)
    a:Close(); b:Close()
  end)

  it("can be awaited: recv and send inside fw:spawn, with a timeout", function()
    local fw, a, b = setup()
    local result = {}
    fw:spawn(function()
      local ok, err = b:recv(20)
      result.timeout = { ok, err }
      local ok2, err2, buf = b:recv()
      result.data = { ok2, err2, tostring(buf) }
      ok, err = a:send("ack")
      result.sent = { ok, err }
    end)
    fw:spawn(function()
      fw:sleep(60)
      a:send("late")
      local ok, err, buf = b:recv()
      result.ack = { ok, err, tostring(buf) }
    end)
    H.run(fw)
    assert.same({ false, E.ERROR_SEM_TIMEOUT }, result.timeout)
    assert.same({ true, 0, "late" }, result.data)
    assert.same({ true, 0 }, result.sent)
    assert.same({ true, 0, "ack" }, result.ack)
    H.raises("await style", b.recv, b)
    a:Close(); b:Close()
  end)

  it("moves a megabyte through a chain of links, byte for byte", function()
    local fw = H.new()
    -- src -> [a1 b1] -> relay -> [a2 b2] -> sink, each hop a Recv/Send loop
    local a1, b1 = link.pair(fw)
    local a2, b2 = link.pair(fw)
    local function relay(from, to)
      local function on_recv(ok, err, buf)
        assert.is_true(ok, err)
        if #buf == 0 then to:Shutdown(); return end
        to:Send(buf)
        from:Recv(nil, on_recv)
      end
      from:Recv(nil, on_recv)
    end
    relay(b1, a2)
    local total, sent = 1024 * 1024, 0
    local function send_more(ok)
      assert.is_true(ok)
      if sent >= total then a1:Shutdown(); return end
      local n = math.min(65536, total - sent)
      a1:Send(H.pattern(1, sent, n), send_more)
      sent = sent + n
    end
    send_more(true)
    local parts, received = {}, 0
    local function on_recv(ok, err, buf)
      assert.is_true(ok, err)
      if #buf == 0 then return end
      parts[#parts + 1] = tostring(buf)
      received = received + #buf
      b2:Recv(fw:CreateBuffer(1000), on_recv) -- smaller pieces than were sent
    end
    b2:Recv(fw:CreateBuffer(1000), on_recv)
    H.run(fw, 20000)
    assert.equal(total, received)
    assert.is_true(table.concat(parts) == H.pattern(1, 0, total))
    for _, e in ipairs({ a1, b1, a2, b2 }) do e:Close() end
  end)

  it("fw:run() returns when what waits can only be ended by the program's own calls", function()
    -- In a child process under timeout: a dispatcher that polled on would never return.
    local script = [[
      local fwx = require "fwx"
      local link = require "fwx.link"
      local fw = fwx.new{}
      local a, b = link.pair(fw)
      local got
      b:Recv(nil, function(ok, err, buf) got = tostring(buf) end)
      local idle, why = fw:run()            -- nothing libuv watches can end the receive
      assert(idle == false and why == "waiting", tostring(why))
      assert(fw:pending() == 1 and got == nil)
      a:Send("now")
      fw:run()
      assert(fw:pending() == 0 and got == "now")
      print("returned")
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local out = H.sh(("timeout 10 env %s %s 2>&1; echo rc=$?"):format(H.lua_command(), path))
    os.remove(path)
    assert.equal("returned\nrc=0\n", out)
  end)
end)
