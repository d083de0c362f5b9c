-- A socket's counters (s:counters() -> sent, received, operations): what the host reads
-- for SDK data filters' byte counts and idle limit. Real sockets on 127.0.0.1. Each
-- case tries to break a count: a send written at once and one queued, a receive into
-- the service's buffer and into the caller's, a datagram, a pump's bytes, a closed
-- socket, and a socket nobody counted.
local fwx = require "fwx"
local H = require "spec.helper"

-- Everything the peer sends, until its end of stream; st.bytes, st.done.
local function drain(s)
  local st = { bytes = 0 }
  local function on_recv(ok, _, buf)
    if not ok or #buf == 0 then st.done = true; return end
    st.bytes = st.bytes + #buf
    s:Recv(nil, on_recv)
  end
  s:Recv(nil, on_recv)
  return st
end

local function counts(s) return { s:counters() } end

describe("s:counters()", function()
  before_each(H.before)
  after_each(H.after)

  it("counts from its first call: the bytes each Send took, each Recv delivered, and the calls", function()
    local fw = H.new()
    local servers, clients = H.pairs(fw, 1)
    local a, b = clients[1], servers[1]
    a:Send("before the count") -- not counted: counting starts at the first call
    assert.same({ 0, 0, 0 }, counts(a))
    assert.same({ 0, 0, 0 }, counts(b))
    a:Send("0123456789")                           -- all written at once, no record
    local sent = false
    a:Send(fw:CreateConstBuffer(string.rep("x", 300000)), function(ok) sent = ok end)
    local got, calls, into = 0, 1, fw:CreateBuffer(100)
    local function on_recv(ok, _, buf)
      assert.is_true(ok)
      got = got + #buf
      if got < 16 + 10 + 300000 then
        calls = calls + 1
        if got > 1000 then b:Recv(nil, on_recv) else b:Recv(into, on_recv) end
      end
    end
    b:Recv(into, on_recv) -- the caller's buffer first, then the service's
    H.run_until(fw, function() return sent and got == 16 + 10 + 300000 end, 20000)
    assert.same({ 10 + 300000, 0, 2 }, counts(a))
    -- b counted from before its first byte came: all of them, and every Recv
    assert.same({ 0, got, calls }, counts(b))
    assert.is_true(calls > 3)
    a:Close()
    b:Close()
  end)

  it("keeps the counts of a closed socket; one never counted stays at zero, and is not started by the call", function()
    local fw = H.new()
    local servers, clients = H.pairs(fw, 2)
    local counted, uncounted = clients[1], clients[2]
    counted:counters()
    counted:Send("abc")
    uncounted:Send("abc")
    local d1, d2 = drain(servers[1]), drain(servers[2])
    counted:Close()
    uncounted:Close()
    H.run_until(fw, function() return d1.done and d2.done end)
    assert.same({ 3, 0, 1 }, counts(counted))
    assert.same({ 0, 0, 0 }, counts(uncounted))
    assert.same({ 0, 0, 0 }, counts(uncounted))
    servers[1]:Close()
    servers[2]:Close()
  end)

  it("counts datagrams: SendTo's bytes and Recv's", function()
    local fw = H.new()
    local a, b = fw:CreateNetworkSocket("udp"), fw:CreateNetworkSocket("udp")
    assert(a:Bind("127.0.0.1", 0))
    assert(b:Bind("127.0.0.1", 0))
    a:counters()
    b:counters()
    local port, n = b:GetSockName().port, 0
    local function on_recv(ok, _, buf)
      assert.is_true(ok)
      n = n + 1
      if n < 3 then b:Recv(nil, on_recv) end
    end
    b:Recv(nil, on_recv)
    for i = 1, 3 do a:SendTo(string.rep("d", i * 100), "127.0.0.1", port) end
    H.run_until(fw, function() return n == 3 end)
    assert.same({ 600, 0, 3 }, counts(a))
    assert.same({ 0, 600, 3 }, counts(b))
    a:Close()
    b:Close()
  end)

  it("counts a pump's bytes as sent and received on its sockets, and no calls", function()
    local fw = H.new()
    -- client -> a (pumped to) b -> upstream, and back
    local servers, clients = H.pairs(fw, 2)
    local client, a = clients[1], servers[1]
    local b, upstream = clients[2], servers[2]
    a:counters()
    b:counters()
    local ended
    fw:Pump(a, b, function(ok, err, ab, ba) ended = { ok, err, ab, ba } end)
    local echoed = 0
    local function echo(ok, _, buf)
      if not ok or #buf == 0 then upstream:Close(); return end
      echoed = echoed + #buf
      upstream:Send(buf)
      upstream:Recv(nil, echo)
    end
    upstream:Recv(nil, echo)
    client:Send(string.rep("p", 70000))
    client:Shutdown()
    local back = drain(client)
    H.run_until(fw, function() return ended ~= nil and back.done end, 20000)
    assert.equal(70000, echoed)
    assert.same({ true, 0, 70000, 70000 }, ended)
    assert.same({ 70000, 70000, 0 }, counts(a)) -- received from the client, sent back to it
    assert.same({ 70000, 70000, 0 }, counts(b))
    client:Close()
    a:Close()
    b:Close()
  end)

  it("raises for what is not a socket", function()
    local fw = H.new()
    local s = fw:CreateNetworkSocket("tcp")
    H.raises("fwx.socket expected", s.counters, {})
    H.raises("fwx.socket expected", s.counters, fw:CreateBuffer(4))
    s:Close()
  end)
end)
