-- TCP sockets: Bind/Listen/Accept/Connect/Recv/Send/Shutdown/Close, names and options,
-- with the exactly-once and ordering promises attacked through real sockets.
local fwx = require "fwx"
local H = require "spec.helper"

local E = fwx.errors

-- A connected pair on 127.0.0.1: server-side accepted socket and client socket.
local function pair(fw, cb)
  local ls, port = H.listener(fw)
  local server, client
  ls:Accept(function(ok, err, listening, accepted)
    assert(ok, err)
    server = accepted
    listening:Close()
    if client then cb(server, client) end
  end)
  local c = fw:CreateNetworkSocket("tcp")
  c:Connect("127.0.0.1", port, function(ok, err, s)
    assert(ok, err)
    client = s
    if server then cb(server, client) end
  end)
end

-- After ms, receive on server until the peer's FIN (or until each(bytes) returns
-- true), then close both: the sends meanwhile queue behind a full socket buffer.
local function drain_later(fw, server, client, ms, each)
  fw:SetTimer(ms, function()
    local function on_recv(ok, err, b)
      assert(ok, err)
      if #b == 0 or each(b) then server:Close(); client:Close(); return end
      server:Recv(nil, on_recv)
    end
    server:Recv(nil, on_recv)
  end)
end

describe("tcp sockets", function()
  before_each(H.before)
  after_each(H.after)

  it("accepts, receives and echoes; a graceful close is a 0-byte receive", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local accepts, got = {}, {}
    ls:Accept(function(ok, err, listening, accepted, remote, localaddr, ud)
      accepts[#accepts + 1] = { ok = ok, err = err, listening = listening, remote = remote,
                                localaddr = localaddr, ud = ud }
      local function on_recv(rok, rerr, buf, u, addr)
        got[#got + 1] = { ok = rok, err = rerr, data = tostring(buf), ud = u, addr = addr }
        if #buf == 0 then accepted:Close() return end
        accepted:Send(buf)
        accepted:Recv(nil, on_recv, u)
      end
      accepted:Recv(nil, on_recv, "conn")
      listening:Close()
    end, "listener-ud")
    local c = fw:CreateNetworkSocket("tcp")
    local echoed = {}
    c:Connect("127.0.0.1", port, function(ok, err, s, ud)
      assert.is_true(ok); assert.equal(0, err); assert.equal(c, s); assert.equal("cud", ud)
      s:Send("hello", function(sok, serr, payload, sud)
        assert.is_true(sok); assert.equal(0, serr); assert.equal("hello", payload); assert.equal("sud", sud)
        s:Recv(nil, function(rok, rerr, buf)
          assert.is_true(rok)
          echoed[#echoed + 1] = tostring(buf)
          s:Close()
        end)
      end, "sud")
    end, "cud")
    H.run(fw)
    assert.equal(1, #accepts)
    assert.is_true(accepts[1].ok)
    assert.equal(0, accepts[1].err)
    assert.equal(ls, accepts[1].listening)
    assert.equal("listener-ud", accepts[1].ud)
    assert.equal("127.0.0.1", accepts[1].remote.ip)
    assert.equal("inet", accepts[1].remote.family)
    assert.equal(port, accepts[1].localaddr.port)
    assert.equal("127.0.0.1:" .. port, tostring(accepts[1].localaddr))
    assert.same({ "hello" }, echoed)
    assert.equal(2, #got)
    assert.equal("hello", got[1].data)
    assert.equal("conn", got[1].ud)
    assert.is_nil(got[1].addr) -- tcp: no address
    assert.is_true(got[2].ok)    -- the peer's close: success with 0 bytes
    assert.equal(0, got[2].err)
    assert.equal("", got[2].data)
  end)

  it("hands an accept's addresses to every sink that can see them, and makes none for one that cannot", function()
    -- One connection accepted by a sink of the given shape; returns what it saw.
    local function accept_with(make_sink)
      local fw = H.new()
      local ls, port = H.listener(fw)
      local seen, accepted
      ls:Accept(make_sink(function(...) seen = table.pack(...) end), "lud")
      local c = fw:CreateNetworkSocket("tcp")
      c:Connect("127.0.0.1", port, function(ok, err) assert(ok, err) end)
      H.run_until(fw, function() return seen ~= nil end)
      for i = 1, seen.n do
        if type(seen[i]) == "userdata" and seen[i].GetPeerName then accepted = seen[i] end
      end
      accepted:Close(); c:Close(); ls:Close()
      H.run(fw)
      return seen, port
    end
    local function addresses_ok(seen, port, at)
      assert.equal("127.0.0.1", seen[at].ip)
      assert.equal(port, seen[at + 1].port)
    end
    -- Named parameters: remote and local, and the user data after them.
    local seen, port = accept_with(function(rec)
      return function(ok, err, l, a, remote, loc, ud) rec(ok, err, l, a, remote, loc, ud) end
    end)
    addresses_ok(seen, port, 5); assert.equal("lud", seen[7])
    -- Only remote named: local is not made.
    seen = accept_with(function(rec)
      return function(ok, err, l, a, remote) rec(ok, err, l, a, remote) end
    end)
    assert.equal("127.0.0.1", seen[5].ip); assert.is_nil(seen[6])
    -- "...": all seven.
    seen, port = accept_with(function(rec) return function(...) rec(...) end end)
    assert.equal(7, seen.n); addresses_ok(seen, port, 5); assert.equal("lud", seen[7])
    -- A C function (coroutine.wrap's) sees everything.
    seen, port = accept_with(function(rec) return coroutine.wrap(function(...) rec(...) end) end)
    assert.equal(7, seen.n); addresses_ok(seen, port, 5); assert.equal("lud", seen[7])
    -- An object's method: self comes first.
    seen, port = accept_with(function(rec)
      return { CompleteAsyncAccept = function(self, ok, err, l, a, remote, loc, ud)
        rec(self, ok, err, l, a, remote, loc, ud) end }
    end)
    addresses_ok(seen, port, 6); assert.equal("lud", seen[8])
    seen = accept_with(function(rec)
      return { CompleteAsyncAccept = function(self, ok, err, l, a) rec(ok, err, l, a) end }
    end)
    assert.is_true(seen[1]); assert.equal(4, seen.n)

    -- The memory: a sink that names the addresses allocates two address objects per
    -- accept more than one that does not (with the collector stopped, so this counts
    -- allocations; the debug-GC pass steps the collector on every notification).
    if os.getenv("FWX_DEBUG_GC") == "1" then return end
    local function kb_per_accept(sink_of, n)
      local fw = H.new()
      local ls, port = H.listener(fw, n)
      local accepted = {}
      local function on_accept(ok, err, l, a)
        assert(ok, err)
        accepted[#accepted + 1] = a
        if #accepted < n then l:Accept(sink_of(on_accept)) end
      end
      local clients = {}
      collectgarbage(); collectgarbage("stop")
      local before = collectgarbage("count")
      ls:Accept(sink_of(on_accept))
      for i = 1, n do
        clients[i] = fw:CreateNetworkSocket("tcp")
        clients[i]:Connect("127.0.0.1", port, function(ok, err) assert(ok, err) end)
      end
      H.run_until(fw, function() return #accepted == n end)
      local grown = collectgarbage("count") - before
      collectgarbage("restart")
      for i = 1, n do accepted[i]:Close(); clients[i]:Close() end
      ls:Close()
      H.run(fw)
      return grown * 1024 / n
    end
    local n = 32
    local unseen = kb_per_accept(function(f) return function(ok, err, l, a) f(ok, err, l, a) end end, n)
    local named = kb_per_accept(function(f)
      return function(ok, err, l, a, r, lo) f(ok, err, l, a, r, lo) end
    end, n)
    assert(named - unseen >= 100,
      ("addresses unseen: %.0f B per accept, named: %.0f B"):format(unseen, named))
  end)

  it("never delivers inline: sinks run after the starting call returns", function()
    local fw = H.new()
    local ran = 0
    pair(fw, function(server, client)
      client:Send("x", function() ran = ran + 1 end)
      assert.equal(0, ran) -- the send completed at once (try_write) but is not delivered yet
      server:Recv(nil, function() ran = ran + 1; server:Close(); client:Close() end)
      assert.equal(0, ran)
    end)
    H.run(fw)
    assert.equal(2, ran)
  end)

  it("connect to a closed port fails with ERROR_CONNECTION_REFUSED (1225) as a notification", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    ls:Close() -- now nothing listens there
    local s = fw:CreateNetworkSocket("tcp")
    local sink, calls = H.recorder()
    s:Connect("127.0.0.1", port, sink, "ud")
    assert.equal(0, #calls)
    H.run(fw)
    assert.equal(1, #calls)
    assert.is_false(calls[1][1])
    assert.equal(E.ERROR_CONNECTION_REFUSED, calls[1][2])
    assert.equal(s, calls[1][3])
    assert.equal("ud", calls[1][4])
    s:Close()
  end)

  it("Recv into a caller buffer never takes more than the buffer holds, and loses nothing", function()
    local fw = H.new()
    local payload = ("0123456789"):rep(100)
    local received = {}
    pair(fw, function(server, client)
      client:Send(payload)
      client:Shutdown()
      local buf = fw:CreateBuffer(7)
      local function on_recv(ok, err, b, ud)
        assert.is_true(ok)
        assert.equal(buf, b)
        assert.is_true(#b <= 7)
        if #b == 0 then server:Close(); client:Close(); return end
        received[#received + 1] = tostring(b)
        server:Recv(buf, on_recv, ud)
      end
      server:Recv(buf, on_recv)
    end)
    H.run(fw)
    assert.equal(payload, table.concat(received))
    assert.equal(math.ceil(#payload / 7), #received)
  end)

  it("completes sends in the order they were issued, each exactly once", function()
    local fw = H.new()
    local order, total = {}, 0
    local chunk = ("x"):rep(64 * 1024)
    local n = 200 -- 12.8 MB: many sends queue behind a slow reader
    pair(fw, function(server, client)
      for i = 1, n do
        client:Send(chunk, function(ok, err, payload, ud)
          assert.is_true(ok, tostring(err))
          order[#order + 1] = ud
        end, i)
      end
      drain_later(fw, server, client, 50, function(b)
        total = total + #b
        return total >= n * #chunk
      end)
    end)
    H.run(fw, 20000)
    assert.equal(n * #chunk, total)
    assert.equal(n, #order)
    for i = 1, n do assert.equal(i, order[i]) end
  end)

  -- A sink-less Send that the kernel takes whole at once makes no record at all; one
  -- issued while writes are queued must still go out behind them.
  it("keeps the byte order when sink-less sends go straight out and others queue", function()
    local fw = H.new()
    local expected, got, notified = {}, {}, {}
    pair(fw, function(server, client)
      local before = fw:pending()
      client:Send("first|")
      assert.equal(before, fw:pending()) -- written at once, nothing to tell: no record
      expected[1] = "first|"
      for i = 1, 300 do
        local piece
        if i % 10 == 0 then
          piece = ("<%d:%s>"):format(i, ("y"):rep(200 * 1024)) -- fills the socket buffer
        else
          piece = ("<%d>"):format(i)
        end
        expected[#expected + 1] = piece
        if i % 3 == 0 then
          client:Send(piece, function(ok, err, _, ud) assert(ok, err); notified[#notified + 1] = ud end, i)
        else
          client:Send(piece)
        end
      end
      client:Shutdown()
      drain_later(fw, server, client, 30, function(b) got[#got + 1] = tostring(b) end)
    end)
    H.run(fw, 20000)
    local want, have = table.concat(expected), table.concat(got)
    assert.equal(#want, #have)
    assert.is_true(want == have, "the bytes arrived out of order")
    assert.equal(100, #notified)
    for k = 1, 100 do assert.equal(3 * k, notified[k]) end
  end)

  it("Close with operations pending ends each with exactly one 995", function()
    local fw = H.new()
    local recv_calls, accept_calls, send_calls = {}, {}, {}
    local ls = H.listener(fw)
    ls:Accept(function(...) accept_calls[#accept_calls + 1] = table.pack(...) end, "acc")
    pair(fw, function(server, client)
      server:Recv(nil, function(...) recv_calls[#recv_calls + 1] = table.pack(...) end, "r")
      -- the client never reads: the server's sends stay pending
      local big = ("y"):rep(1024 * 1024)
      for i = 1, 8 do
        server:Send(big, function(...) send_calls[#send_calls + 1] = table.pack(...) end, i)
      end
      fw:PostTaskCompletion(function()
        server:Close(true) -- abortive: the queued sends are cancelled
        client:Close()
        ls:Close()
        server:Close() -- idempotent
      end)
    end)
    H.run(fw)
    assert.equal(1, #recv_calls)
    assert.is_false(recv_calls[1][1])
    assert.equal(E.ERROR_OPERATION_ABORTED, recv_calls[1][2])
    assert.equal("r", recv_calls[1][4])
    assert.equal(1, #accept_calls)
    assert.is_false(accept_calls[1][1])
    assert.equal(995, accept_calls[1][2])
    assert.is_nil(accept_calls[1][4])
    assert.equal("acc", accept_calls[1][7])
    assert.equal(8, #send_calls)
    local aborted = 0
    for i, c in ipairs(send_calls) do
      assert.equal(i, c[4]) -- in order
      if not c[1] then aborted = aborted + 1; assert.equal(995, c[2]) end
    end
    assert.is_true(aborted >= 1)
  end)

  it("a peer reset fails the pending Recv with ERROR_NETNAME_DELETED (64)", function()
    local fw = H.new()
    local calls = {}
    pair(fw, function(server, client)
      server:Recv(nil, function(...) calls[#calls + 1] = table.pack(...); server:Close() end)
      client:Close(true) -- RST
    end)
    H.run(fw)
    assert.equal(1, #calls)
    assert.is_false(calls[1][1])
    assert.equal(E.ERROR_NETNAME_DELETED, calls[1][2])
  end)

  it("a peer reset mid-send ends every pending Send once, with a failure", function()
    local fw = H.new()
    local results = {}
    pair(fw, function(server, client)
      local big = ("z"):rep(256 * 1024)
      for i = 1, 40 do
        client:Send(big, function(ok, err) results[#results + 1] = { ok, err } end)
      end
      fw:SetTimer(20, function() server:Close(true) end)
      fw:SetTimer(200, function() client:Close() end)
    end)
    H.run(fw, 10000)
    assert.equal(40, #results)
    local failed = 0
    for _, r in ipairs(results) do
      if not r[1] then
        failed = failed + 1
        assert.is_true(r[2] == E.ERROR_NETNAME_DELETED or r[2] == E.ERROR_OPERATION_ABORTED,
          "unexpected error " .. tostring(r[2]))
      end
    end
    assert.is_true(failed >= 1)
  end)

  it("a peer reset ends every queued Send without the sender having to close", function()
    local fw = H.new()
    local results = {}
    local client
    pair(fw, function(server, c)
      client = c
      local big = ("w"):rep(256 * 1024)
      for i = 1, 40 do
        c:Send(big, function(ok, err, payload, ud) results[#results + 1] = { ok, err, ud } end, i)
      end
      fw:SetTimer(20, function() server:Close(true) end)
    end)
    H.run(fw, 10000) -- returns only if all 40 notifications came
    assert.equal(40, #results)
    local failed = 0
    for i, r in ipairs(results) do
      assert.equal(i, r[3])
      if not r[1] then failed = failed + 1 end
    end
    assert.is_true(failed >= 1)
    -- the socket is still the caller's to close; a Recv now reports the reset
    local got
    client:Recv(nil, function(ok, err) got = err end)
    H.run(fw)
    assert.is_true(got == fwx.errors.ERROR_NETNAME_DELETED or got == fwx.errors.ERROR_OPERATION_ABORTED)
    client:Close()
  end)

  it("Send after Shutdown fails with WSAESHUTDOWN (10058) as a notification, not a raise", function()
    local fw = H.new()
    local calls, eof = {}, nil
    pair(fw, function(server, client)
      assert.is_true(client:Shutdown())
      client:Send("late", function(...) calls[#calls + 1] = table.pack(...) end)
      server:Recv(nil, function(ok, err, b)
        eof = #b
        server:Close(); client:Close()
      end)
    end)
    H.run(fw)
    assert.equal(1, #calls)
    assert.is_false(calls[1][1])
    assert.equal(E.WSAESHUTDOWN, calls[1][2])
    assert.equal(0, eof) -- the peer saw the FIN, not the late bytes
  end)

  it("a second Recv while one is pending raises and adds no notification", function()
    local fw = H.new()
    local n = 0
    pair(fw, function(server, client)
      server:Recv(nil, function() n = n + 1 end)
      assert.has_error(function() server:Recv(nil, function() n = n + 100 end) end,
        "socket: an operation is already pending")
      server:Close(); client:Close()
    end)
    H.run(fw)
    assert.equal(1, n)
  end)

  it("holds data that arrives before Recv and delivers it to the next Recv", function()
    local fw = H.new()
    local got
    pair(fw, function(server, client)
      client:Send("early bird")
      fw:SetTimer(30, function()
        server:Recv(nil, function(ok, err, b) got = tostring(b); server:Close(); client:Close() end)
      end)
    end)
    H.run(fw)
    assert.equal("early bird", got)
  end)

  it("holds bytes that find no receive pending and stops reading until a receive claims them", function()
    -- Such a read is put off one poll (the handler may receive again by then), then
    -- held with reading paused. Paused, the socket is not reported again: the loop
    -- sleeps until the timer instead of polling over and over.
    local core = require "fwx.core"
    local fw = H.new()
    local got, polls_before, polls = {}, nil, nil
    pair(fw, function(server, client)
      server:Recv(nil, function(ok, err, b)
        assert(ok, err)
        got[#got + 1] = tostring(b)
        client:Send("second") -- arrives with no receive pending
        polls_before = core._polls(fw)
        fw:SetTimer(200, function()
          polls = core._polls(fw) - polls_before
          server:Recv(nil, function(rok, rerr, b2)
            assert(rok, rerr)
            got[#got + 1] = tostring(b2)
            server:Close()
            client:Close()
          end)
        end)
      end)
      client:Send("first")
    end)
    H.run(fw)
    assert.same({ "first", "second" }, got)
    assert.is_true(polls < 20, polls .. " polls while the bytes waited")
  end)

  it("Accept must be re-armed: one connection per call, none lost", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local accepted = {}
    local N = 20
    local function on_accept(ok, err, listening, s)
      assert.is_true(ok)
      accepted[#accepted + 1] = s
      if #accepted < N then listening:Accept(on_accept) else listening:Close() end
    end
    ls:Accept(on_accept)
    local clients = {}
    for i = 1, N do
      local c = fw:CreateNetworkSocket("tcp")
      clients[i] = c
      c:Connect("127.0.0.1", port, function(ok) assert.is_true(ok) end)
    end
    H.run(fw)
    assert.equal(N, #accepted)
    for _, s in ipairs(accepted) do s:Close() end
    for _, c in ipairs(clients) do c:Close() end
  end)

  it("works over IPv6 (::1) when the machine has it", function()
    local fw = H.new()
    local ls = fw:CreateNetworkSocket("tcp")
    local ok = ls:Bind("::1", 0)
    if not ok then ls:Close(); return end -- no IPv6 loopback here
    assert(ls:Listen())
    local addr = ls:GetSockName()
    assert.equal("inet6", addr.family)
    assert.equal("::1", addr.ip)
    assert.equal("[::1]:" .. addr.port, tostring(addr))
    local remote
    ls:Accept(function(aok, err, l, s, r) remote = r; s:Close(); l:Close() end)
    local c = fw:CreateNetworkSocket("tcp")
    c:Connect("::1", addr.port, function(cok) assert.is_true(cok); c:Close() end)
    H.run(fw)
    assert.equal("inet6", remote.family)
  end)

  it("reports names and takes options", function()
    local fw = H.new()
    pair(fw, function(server, client)
      assert.equal(server:GetSockName(), client:GetPeerName())
      assert.equal(client:GetSockName(), server:GetPeerName())
      assert.is_true(client:SetSockOpt("nodelay", true))
      assert.is_true(client:GetSockOpt("nodelay"))
      assert.is_true(client:set_sock_opt("keepalive", true))
      assert.is_true(client:GetSockOpt("SO_KEEPALIVE"))
      assert.is_true(client:SetSockOpt("rcvbuf", 65536))
      assert.is_true(client:GetSockOpt("rcvbuf") >= 65536)
      assert.is_true(client:SetSockOpt("sndbuf", 65536))
      assert.is_true(client:get_sock_opt("sndbuf") >= 65536)
      assert.is_true(server:GetSockOpt("reuseaddr") ~= nil)
      assert.has_error(function() client:SetSockOpt("bogus", 1) end)
      assert.has_error(function() client:SetSockOpt("rcvbuf", -1) end)
      server:Close(); client:Close()
    end)
    H.run(fw)
  end)

  it("Bind on a port in use returns nil, message, WSAEADDRINUSE", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local s = fw:CreateNetworkSocket("tcp")
    local ok, msg, code = s:Bind("127.0.0.1", port)
    if ok then ok, msg, code = s:Listen() end -- libuv reports it at Listen
    assert.is_nil(ok)
    assert.is_string(msg)
    assert.equal(E.WSAEADDRINUSE, code)
    s:Close(); ls:Close()
  end)

  it("talks to a real client: nc", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    ls:Accept(function(ok, err, l, s)
      local function on_recv(rok, rerr, b)
        if #b == 0 then s:Close() return end
        s:Send(tostring(b):upper())
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
      l:Close()
    end)
    local out = os.tmpname()
    -- nc runs in the background, bounded by timeout; it sends, half-closes and prints the echo
    os.execute(("(printf 'ping pong' | timeout 5 nc -N 127.0.0.1 %d > %s) &"):format(port, out))
    H.run(fw, 6000)
    -- nc may still be writing its output file: wait for it, bounded
    local data = ""
    for _ = 1, 50 do
      local f = io.open(out); data = f:read("*a"); f:close()
      if data ~= "" then break end
      os.execute("sleep 0.05")
    end
    os.remove(out)
    assert.equal("PING PONG", data)
  end)

  it("a sink-less Send of a buffer sends the bytes as they were at the call", function()
    -- The buffer is not lent: it is writable at once, and what the core could not
    -- write at once it copied, so changing the buffer cannot change what is sent.
    local fw = H.new()
    local size = 4 * 1024 * 1024 -- far more than the socket buffers take at once
    local received = {}
    pair(fw, function(server, client)
      local buf = fw:CreateBuffer(size)
      buf:Append(("a"):rep(size))
      client:Send(buf)
      assert.is_false(buf:IsLent())
      buf:SetDataSize(0)
      buf:Append(("b"):rep(size)) -- would corrupt the stream if the core kept the buffer
      client:Shutdown()
      local function on_recv(ok, err, b)
        assert(ok, err)
        if #b == 0 then server:Close(); client:Close() return end
        received[#received + 1] = tostring(b)
        server:Recv(nil, on_recv)
      end
      server:Recv(nil, on_recv)
    end)
    H.run(fw, 10000)
    local all = table.concat(received)
    assert.equal(size, #all)
    assert.is_nil(all:find("b", 1, true))
  end)

  it("a sink-less Send is flushed even when the socket is dropped and collected", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local total = 0
    local size = 4 * 1024 * 1024
    ls:Accept(function(ok, err, l, s)
      l:Close()
      s:Send(("q"):rep(size)) -- no sink; much more than the socket buffer
      s = nil
      collectgarbage(); collectgarbage()
    end)
    local c = fw:CreateNetworkSocket("tcp")
    c:Connect("127.0.0.1", port, function(ok, err, s)
      local function on_recv(rok, rerr, b)
        if #b == 0 then s:Close() return end
        total = total + #b
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
    end)
    H.run(fw, 10000)
    assert.equal(size, total)
  end)

  -- Recv(nil) keeps its sink and user data in the socket itself and the socket in the
  -- service's keep table: attack both ends of that.
  it("a socket waiting in Recv(nil), its sink and its user data survive collection with only the service holding them", function()
    local fw = H.new()
    local weak = setmetatable({}, { __mode = "v" })
    local got
    pair(fw, function(server, client)
      local ud = { tag = "mine" }
      weak.ud, weak.server = ud, server
      local function sink(ok, err, b, u)
        got = { ok = ok, data = tostring(b), tag = u.tag, same = (u == weak.ud) }
        weak.server:Close()
        client:Close()
      end
      weak.sink = sink
      server:Recv(nil, sink, ud)
      server, ud, sink = nil, nil, nil
      fw:SetTimer(20, function()
        collectgarbage(); collectgarbage()
        client:Send("still there")
      end)
    end)
    H.run(fw)
    assert.same({ ok = true, data = "still there", tag = "mine", same = true }, got)
  end)

  it("a socket dropped after its Recv(nil) completed is collected and closed", function()
    local fw = H.new()
    local weak = setmetatable({}, { __mode = "k" })
    local peer_saw
    pair(fw, function(server, client)
      -- the user data is the socket itself: the socket keeps it after the delivery
      server:Recv(nil, function(ok, err, b, s)
        weak[s] = true
      end, server)
      client:Send("x")
      client:Recv(nil, function(ok, err, b)
        peer_saw = ok and #b -- 0: the server side was closed by its collector
        client:Close()
      end)
      fw:SetTimer(30, function() collectgarbage(); collectgarbage() end)
      server = nil
    end)
    H.run(fw)
    assert.equal(0, peer_saw)
    assert.is_nil(next(weak))
  end)

  describe("CancelIo", function()
    it("ends a pending Recv with 995 once; the socket stays open and the next Recv gets the bytes", function()
      local fw = H.new()
      local servers, clients = H.pairs(fw, 1)
      local s, c = servers[1], clients[1]
      local sink, calls = H.recorder()
      s:Recv(nil, sink, "first")
      assert.is_true(s:CancelIo())
      assert.is_false(s:CancelIo()) -- nothing pending any more
      assert.equal(0, #calls)       -- never inline
      c:Send("after the cancel")
      H.run_for(fw, 20)
      assert.equal(1, #calls)
      assert.same({ false, E.ERROR_OPERATION_ABORTED, nil, "first", nil, n = 5 }, calls[1])
      assert.is_false(s:IsClosed())
      s:Recv(nil, sink, "second")
      H.run_until(fw, function() return #calls == 2 end)
      assert.same({ true, 0, "after the cancel", "second" },
        { calls[2][1], calls[2][2], tostring(calls[2][3]), calls[2][4] })
      s:Close(); c:Close()
      H.run(fw)
      assert.equal(2, #calls)
    end)

    it("gives the caller's buffer back, writable", function()
      local fw = H.new()
      local servers, clients = H.pairs(fw, 1)
      local buf = fw:CreateBuffer(16)
      local sink, calls = H.recorder()
      servers[1]:Recv(buf, sink)
      assert.is_true(buf:IsLent())
      assert.is_true(servers[1]:CancelIo())
      H.run_for(fw, 10)
      assert.equal(1, #calls)
      assert.same({ false, E.ERROR_OPERATION_ABORTED }, { calls[1][1], calls[1][2] })
      assert.is_false(buf:IsLent())
      buf:Append("mine again")
      servers[1]:Close(); clients[1]:Close()
      H.run(fw)
    end)

    it("ends a pending Accept with 995; a later connection waits for the next Accept", function()
      local fw = H.new()
      local ls, port = H.listener(fw)
      local sink, calls = H.recorder()
      ls:Accept(sink, "first")
      assert.is_true(ls:CancelIo())
      H.run_for(fw, 10)
      assert.equal(1, #calls)
      assert.same({ false, E.ERROR_OPERATION_ABORTED }, { calls[1][1], calls[1][2] })
      local c = fw:CreateNetworkSocket("tcp")
      c:Connect("127.0.0.1", port, function(ok) assert(ok) end)
      H.run_for(fw, 20)
      assert.equal(1, #calls)
      ls:Accept(sink, "second")
      H.run_until(fw, function() return #calls == 2 end)
      assert.is_true(calls[2][1])
      assert.equal("second", calls[2][7])
      calls[2][4]:Close(); c:Close(); ls:Close()
      H.run(fw)
    end)

    it("leaves a send alone and answers false on a closed socket", function()
      local fw = H.new()
      local servers, clients = H.pairs(fw, 1)
      local sink, calls = H.recorder()
      clients[1]:Send("x", sink)
      assert.is_false(clients[1]:CancelIo())
      H.run(fw)
      assert.same({ true, 0 }, { calls[1][1], calls[1][2] })
      servers[1]:Close(); clients[1]:Close()
      assert.is_false(clients[1]:CancelIo())
      H.run(fw)
    end)
  end)
end)
