-- The core pump (fw:Pump): bytes moved both ways between two connected TCP sockets by
-- the C core alone, the SDK's "kernel mode" pumping. Real sockets on 127.0.0.1, a real
-- upstream (an echo or an HTTP server in the same service), and real clients (nc,
-- curl) where they are natural; every case tries to break one promise: the bytes and
-- their order, half close, one notification whatever ends the pump, misuse raising,
-- and bounded memory under a slow reader.
local fwx = require "fwx"
local core = require "fwx.core"
local H = require "spec.helper"

local E = fwx.errors
local LONG_MS = 120000 -- a bound against hangs for the big transfers, not a timing test

-- ------------------------------------------------------------------ upstreams

-- A listener; rcvbuf (set before Bind) is inherited by the sockets it accepts, so
-- their TCP window is small from the handshake on.
local function listener(fw, rcvbuf)
  local ls = fw:CreateNetworkSocket("tcp")
  if rcvbuf then assert(ls:SetSockOpt("rcvbuf", rcvbuf)) end
  assert(ls:Bind("127.0.0.1", 0))
  assert(ls:Listen(16))
  return ls, ls:GetSockName().port
end

-- An echo server for one connection: echoes, and closes (after the echo is flushed) at
-- the peer's end of stream. opts.hold: do not read until release() is called.
local function echo_server(fw, opts)
  opts = opts or {}
  local ls, port = listener(fw, opts.rcvbuf)
  local st = { received = 0, held = opts.hold }
  local function on_recv(ok, _, buf, s)
    if not ok or #buf == 0 then
      st.ended = ok and "eof" or "error"
      s:Close()
      return
    end
    st.received = st.received + #buf
    if opts.on_data then opts.on_data(s, buf, st) end
    if s:IsClosed() then return end
    s:Send(buf)
    s:Recv(nil, on_recv, s)
  end
  function st.release()
    st.held = false
    if st.conn then st.conn:Recv(nil, on_recv, st.conn) end
  end
  ls:Accept(function(ok, err, l, s)
    assert(ok, err)
    l:Close()
    st.conn = s
    if not st.held then s:Recv(nil, on_recv, s) end
  end)
  return port, st
end

-- A server for one connection that reads and never answers: st.received counts.
local function sink_server(fw)
  local ls, port = listener(fw)
  local st = { received = 0 }
  local function on_recv(ok, _, buf, s)
    if not ok or #buf == 0 then s:Close() return end
    st.received = st.received + #buf
    s:Recv(nil, on_recv, s)
  end
  ls:Accept(function(ok, err, l, s)
    assert(ok, err)
    l:Close()
    st.conn = s
    s:Recv(nil, on_recv, s)
  end)
  return port, st
end

-- ------------------------------------------------------------------ the proxy

-- The pump under test: the core pump (FILTER nil) or the filtered pump, whose filter
-- here lets every chunk through as it came. Set per describe block below.
local FILTER = nil
local function identity() end

-- Accepts one client, connects to the upstream and pumps the two. The sink records
-- every notification and closes both sockets (unless opts.keep). opts.before(a, b)
-- runs just before Pump, opts.started(a, b) just after, opts.done(...) in the sink.
local function pump_proxy(fw, up_port, opts)
  opts = opts or {}
  local filter = opts.filter or FILTER
  local ls, port = listener(fw, opts.rcvbuf)
  local st = { calls = {} }
  local function sink(...)
    st.calls[#st.calls + 1] = table.pack(...)
    if not opts.keep then
      st.a:Close()
      st.b:Close()
    end
    if opts.done then opts.done(...) end
  end
  local function pump(a, b)
    st.a, st.b = a, b
    if opts.before then opts.before(a, b) end
    st.pump = fw:Pump(a, b, opts.object_sink and { CompletePump = function(_, ...) sink(...) end } or sink,
                      "pump-ud", filter, opts.idle_ms)
    st.started = true
    if opts.started then opts.started(a, b) end
  end
  ls:Accept(function(ok, err, l, a)
    assert(ok, err)
    l:Close()
    if opts.accepted then opts.accepted(a, pump) return end
    local b = fw:CreateNetworkSocket("tcp")
    if opts.upstream_sndbuf then assert(b:SetSockOpt("sndbuf", opts.upstream_sndbuf)) end
    b:Connect("127.0.0.1", up_port, function(cok, cerr)
      assert(cok, cerr)
      if opts.connected then opts.connected(a, b, pump) else pump(a, b) end
    end)
  end)
  return port, st
end

-- One notification, and what it said.
local function the_call(st)
  assert.equal(1, #st.calls, "the pump notified " .. #st.calls .. " times")
  return table.unpack(st.calls[1], 1, st.calls[1].n)
end

-- ------------------------------------------------------------------ clients

-- A client socket in the service; on_connect(s) once connected.
local function client(fw, port, on_connect, opts)
  local c = fw:CreateNetworkSocket("tcp")
  if opts and opts.sndbuf then assert(c:SetSockOpt("sndbuf", opts.sndbuf)) end
  c:Connect("127.0.0.1", port, function(ok, err, s)
    assert(ok, err)
    on_connect(s)
  end)
  return c
end

-- Receive on s until the end of stream or an error; on_end(data, ok, err).
local function read_all(s, on_end)
  local parts = {}
  local function on_recv(ok, err, buf)
    if not ok or #buf == 0 then return on_end(table.concat(parts), ok, err) end
    parts[#parts + 1] = tostring(buf)
    s:Recv(nil, on_recv)
  end
  s:Recv(nil, on_recv)
end

-- A client that sends request, shuts its side down and reads to the end; runs fw
-- (H.run, ms) and returns what it read.
local function ask(fw, port, request, ms)
  local got
  client(fw, port, function(c)
    c:Send(request)
    c:Shutdown()
    read_all(c, function(data) got = data; c:Close() end)
  end)
  H.run(fw, ms)
  return got
end

-- A shell command in the background; returns a function giving its exit status once
-- it has ended (nil before). LD_PRELOAD is cleared: `make asan` preloads the sanitizer
-- runtime for lua5.4, and curl hangs under it.
local function background(cmd)
  local flag = os.tmpname()
  os.remove(flag)
  os.execute(("(LD_PRELOAD= %s; echo $? > %s.tmp; mv %s.tmp %s) >/dev/null 2>&1 &"):format(cmd, flag, flag, flag))
  return function()
    local f = io.open(flag)
    if not f then return nil end
    local status = tonumber(f:read("*l"))
    f:close()
    os.remove(flag)
    return status
  end
end

local function random_file(bytes)
  local path = os.tmpname()
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(bytes, path)))
  return path
end

-- Run until pred() holds, also while nothing is pending (an outside process may still
-- be finishing); bounded by ms against hangs.
local function wait_for(fw, pred, ms)
  local deadline = os.time() + math.ceil((ms or H.TIMEOUT_MS) / 1000) + 1
  while not pred() do
    if fw:run(10) then os.execute("sleep 0.02") end
    assert(os.time() <= deadline, "timed out waiting for a condition")
  end
end

local function same_files(x, y) return os.execute(("cmp -s %s %s"):format(x, y)) == true end

local function rss_kb()
  local f = io.open("/proc/self/status")
  local kb = tonumber(f:read("*a"):match("VmRSS:%s*(%d+)"))
  f:close()
  return kb
end

-- Runs the specs once with splice and once on the read/write path (what a kernel that
-- refuses splice gets), where it matters.
local function both_paths(name, fn)
  if FILTER then return it(name, fn) end
  for _, path in ipairs{ "splice", "read/write" } do
    it(name .. " (" .. path .. ")", function()
      core._pump_use_splice(path == "splice")
      local ok, err = pcall(fn)
      core._pump_use_splice(true)
      if not ok then error(err, 0) end
    end)
  end
end

-- What a running pump has pending: the core pump's one Pump operation, or the
-- filtered pump's two receives (among the test's other ones).
local function assert_pumping(fw)
  local pending = fw:pending(true)
  if FILTER then
    assert.is_true(pending.Recv >= 2)
    assert.is_nil(pending.Pump)
  else
    assert.equal(1, pending.Pump)
  end
end

-- The cases every pump must pass, run for the core pump and for the filtered one.
local function pump_cases()

  it("moves bytes both ways and notifies once: ok, 0, bytes each way, user data", function()
    local fw = H.new()
    local up_port, up = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, {
      started = function() assert_pumping(fw) end,
    })
    local got
    client(fw, port, function(c)
      c:Send("hello, pump")
      c:Shutdown()
      read_all(c, function(data, ok) got = { data, ok }; c:Close() end)
    end)
    H.run(fw)
    assert.same({ "hello, pump", true }, got)
    assert.equal("eof", up.ended)
    local ok, err, ab, ba, ud = the_call(st)
    assert.is_true(ok)
    assert.equal(0, err)
    assert.equal(11, ab)
    assert.equal(11, ba)
    assert.equal("pump-ud", ud)
  end)

  it("calls an object sink's CompletePump", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, { object_sink = true })
    client(fw, port, function(c)
      c:Send("x")
      c:Shutdown()
      read_all(c, function() c:Close() end)
    end)
    H.run(fw)
    local ok, err, ab, ba, ud = the_call(st)
    assert.same({ true, 0, 1, 1, "pump-ud" }, { ok, err, ab, ba, ud })
  end)

  both_paths("carries 64 MiB each way, byte for byte, from nc through the pump to an echo", function()
    local fw = H.new()
    local size = 64 * 1024 * 1024
    local up_port = echo_server(fw)
    local port, st = pump_proxy(fw, up_port)
    local input, output = random_file(size), os.tmpname()
    local finished = background(("timeout 100 nc -N 127.0.0.1 %d < %s > %s"):format(port, input, output))
    local status
    wait_for(fw, function()
      status = status or finished()
      assert(status == nil or status == 0, "the client failed")
      return status ~= nil and #st.calls == 1
    end, LONG_MS)
    local same = same_files(input, output)
    os.remove(input); os.remove(output)
    assert.equal(0, status)
    assert.is_true(same, "the bytes that came back differ from those sent")
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(size, ab)
    assert.equal(size, ba)
  end)

  it("serves curl: an HTTP exchange with a 1 MiB body through the pump", function()
    local fw = H.new()
    local body = string.rep("0123456789abcdef", 65536)
    local head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #body ..
                 "\r\nConnection: close\r\n\r\n"
    local ls, up_port = H.listener(fw)
    local request = {}
    ls:Accept(function(ok, err, l, s)
      assert(ok, err)
      l:Close()
      local function on_recv(rok, _, buf)
        if not rok or #buf == 0 then return s:Close() end
        request[#request + 1] = tostring(buf)
        if table.concat(request):find("\r\n\r\n", 1, true) then
          s:Send(head)
          s:Send(body)
          return s:Close() -- graceful: the FIN goes after the body
        end
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
    end)
    local port, st = pump_proxy(fw, up_port)
    local out = os.tmpname()
    local finished = background(("timeout 30 curl -s -o %s http://127.0.0.1:%d/through/the/pump"):format(out, port))
    local status
    wait_for(fw, function()
      status = status or finished()
      assert(status == nil or status == 0, "the client failed")
      return status ~= nil and #st.calls == 1
    end, LONG_MS)
    local f = io.open(out, "rb"); local got = f:read("*a"); f:close(); os.remove(out)
    assert.equal(0, status)
    assert.equal(#body, #got)
    assert.is_true(got == body)
    assert.matches("^GET /through/the/pump HTTP/1.1\r\n", table.concat(request))
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(#table.concat(request), ab)
    assert.equal(#head + #body, ba)
  end)

  both_paths("half close from the client: its FIN reaches the upstream, which still answers", function()
    local fw = H.new()
    local ls, up_port = H.listener(fw)
    local upstream_got = {}
    ls:Accept(function(ok, err, l, s)
      assert(ok, err)
      l:Close()
      local function on_recv(rok, _, buf)
        assert(rok)
        if #buf == 0 then
          -- The client is done sending; the answer comes after its FIN.
          s:Send("late answer to " .. table.concat(upstream_got))
          return s:Close()
        end
        upstream_got[#upstream_got + 1] = tostring(buf)
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
    end)
    local port, st = pump_proxy(fw, up_port)
    local got
    client(fw, port, function(c)
      c:Send("question")
      c:Shutdown()
      read_all(c, function(data, ok) got = { data, ok }; c:Close() end)
    end)
    H.run(fw)
    assert.same({ "late answer to question", true }, got)
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(8, ab)
    assert.equal(#"late answer to question", ba)
  end)

  both_paths("half close from the upstream: the client gets EOF and can still send", function()
    local fw = H.new()
    local ls, up_port = H.listener(fw)
    local upstream_got = {}
    ls:Accept(function(ok, err, l, s)
      assert(ok, err)
      l:Close()
      s:Send("banner then FIN")
      s:Shutdown()
      read_all(s, function(data, rok) upstream_got = { data, rok }; s:Close() end)
    end)
    local port, st = pump_proxy(fw, up_port)
    local got
    client(fw, port, function(c)
      read_all(c, function(data, ok)
        got = { data, ok }
        -- The upstream's side has ended; ours has not.
        c:Send("sent after the EOF", function(sok, serr)
          assert(sok, serr)
          c:Shutdown()
          c:Close()
        end)
      end)
    end)
    H.run(fw)
    assert.same({ "banner then FIN", true }, got)
    assert.same({ "sent after the EOF", true }, upstream_got)
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(#"sent after the EOF", ab)
    assert.equal(#"banner then FIN", ba)
  end)

  for _, who in ipairs{ "client", "upstream" } do
    it("a reset by the " .. who .. " mid-stream ends the pump once with 64; the sockets stay open", function()
      local fw = H.new()
      local reset_by_upstream = who == "upstream"
      local echoed = 0
      local up_port = echo_server(fw, {
        on_data = function(s, _, up)
          if reset_by_upstream and up.received >= 3 * 65536 then s:Close(true) end
        end,
      })
      local open_at_end, port, st
      port, st = pump_proxy(fw, up_port, {
        keep = true,
        done = function()
          open_at_end = not st.a:IsClosed() and not st.b:IsClosed()
          st.a:Close(); st.b:Close()
        end,
      })
      local chunk = string.rep("r", 65536)
      client(fw, port, function(c)
        local function send_more()
          if c:IsClosed() then return end
          c:Send(chunk, function(ok) if ok then send_more() end end)
        end
        send_more()
        local function on_recv(ok, _, buf)
          if not ok or #buf == 0 then return c:Close() end
          echoed = echoed + #buf
          if not reset_by_upstream and echoed >= 3 * 65536 then return c:Close(true) end
          c:Recv(nil, on_recv)
        end
        c:Recv(nil, on_recv)
      end)
      H.run(fw)
      local ok, err, ab, ba, ud = the_call(st)
      assert.is_false(ok)
      assert.equal(E.ERROR_NETNAME_DELETED, err)
      assert.is_true(ab >= 3 * 65536)
      assert.is_true(ba >= 0)
      assert.equal("pump-ud", ud)
      assert.is_true(open_at_end, "the pump closed a socket it does not own")
    end)
  end

  for _, which in ipairs{ "a", "b" } do
    it("Close of socket " .. which .. " while pumping ends the pump with exactly one 995", function()
      local fw = H.new()
      local st
      local up_port = echo_server(fw, {
        on_data = function(s)
          -- The pump has carried the first bytes: close one of its sockets now.
          if not st.closed then
            st.closed = true
            st[which]:Close()
          end
          assert.is_not_nil(s)
        end,
      })
      local port
      port, st = pump_proxy(fw, up_port, { keep = true, done = function()
        -- The other socket is still open and its owner's.
        assert.is_false(st[which == "a" and "b" or "a"]:IsClosed())
        st.a:Close(); st.b:Close()
      end })
      client(fw, port, function(c)
        c:Send("ping")
        read_all(c, function() c:Close() end)
      end)
      H.run(fw)
      local ok, err, ab = the_call(st)
      assert.is_false(ok)
      assert.equal(E.ERROR_OPERATION_ABORTED, err)
      assert.equal(4, ab)
    end)
  end

  it("an idle limit ends a pump where nothing moves, once, with 121 and the counts; the sockets stay open", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local port, st
    port, st = pump_proxy(fw, up_port, { idle_ms = 100, keep = true, done = function()
      assert.is_false(st.a:IsClosed())
      assert.is_false(st.b:IsClosed())
      st.a:Close(); st.b:Close()
    end })
    local got
    client(fw, port, function(c)
      c:Send("ping") -- then nothing, either way
      read_all(c, function(data) got = data; c:Close() end)
    end)
    H.run(fw)
    assert.same({ false, E.ERROR_SEM_TIMEOUT, 4, 4, "pump-ud" }, { the_call(st) })
    assert.equal("ping", got)
  end)

  it("bytes moving one way keep the whole pump alive past its idle limit; silence then ends it", function()
    -- The client sends a byte every 20 ms for 25 times to an upstream that never
    -- answers: the response direction is silent all along, for more than three idle
    -- limits, and must not end the pump (a connection is idle, not a direction).
    local fw = H.new()
    local up_port, up = sink_server(fw)
    local port, st = pump_proxy(fw, up_port, { idle_ms = 150 })
    local sent, ticker = 0, nil
    client(fw, port, function(c)
      ticker = fw:SetTimer(20, function(ok)
        if not ok then return end
        if #st.calls > 0 then ticker:Cancel() return end
        sent = sent + 1
        c:Send("x")
        if sent == 25 then ticker:Cancel() end
      end, nil, 20)
      read_all(c, function() c:Close() end)
    end)
    H.run(fw, math.max(H.TIMEOUT_MS, 10000))
    local ok, err, ab, ba = the_call(st)
    assert.same({ false, E.ERROR_SEM_TIMEOUT, 25, 0 }, { ok, err, ab, ba })
    assert.equal(25, up.received)
  end)

  it("a pump with an idle limit whose socket or service closes ends once with 995 and leaves no timer", function()
    for _, how in ipairs{ "socket", "service" } do
      local fw = H.new()
      local st
      local up_port = echo_server(fw, { on_data = function()
        -- The pump has carried the first bytes: end it now.
        if how == "socket" then st.a:Close() else fw:Close() end
      end })
      local port
      port, st = pump_proxy(fw, up_port, { idle_ms = 60000 })
      client(fw, port, function(c)
        c:Send("ping")
        read_all(c, function() c:Close() end)
      end)
      -- An idle timer left behind would keep run() from returning for a minute.
      local idle, why = fw:run(math.max(H.TIMEOUT_MS, 10000))
      assert.same(how == "socket" and { true } or { false, "stopped" }, { idle, why })
      local ok, err = the_call(st)
      assert.same({ false, E.ERROR_OPERATION_ABORTED }, { ok, err })
      assert.equal(0, fw:pending())
    end
  end)

  it("refuses an idle limit that is not whole milliseconds of 0 or more, and starts nothing", function()
    local fw = H.new()
    local servers, clients = H.pairs(fw, 1)
    local a, c = servers[1], clients[1]
    local anchored = fw:anchored()
    local sink = function() end
    H.raises("idle milliseconds must be 0 or more", fw.Pump, fw, a, c, sink, nil, FILTER, -1)
    H.raises("number has no integer representation", fw.Pump, fw, a, c, sink, nil, FILTER, 1.5)
    H.raises("number expected", fw.Pump, fw, a, c, sink, nil, FILTER, "soon")
    assert.equal(anchored, fw:anchored())
    assert.is_nil(fw:pending(true).Pump)
    -- 0 is no limit: the pump runs as without one.
    local result
    fw:Pump(a, c, function(...) result = { ... } end, nil, FILTER, 0)
    a:Close(); c:Close()
    H.run(fw)
    assert.same({ false, E.ERROR_OPERATION_ABORTED }, { result[1], result[2] })
  end)

  it("fw:Close() while pumping ends the pump with exactly one 995", function()
    local fw = H.new()
    local st
    local up_port = echo_server(fw, { on_data = function() fw:Close() end })
    local port
    port, st = pump_proxy(fw, up_port)
    local client_end
    client(fw, port, function(c)
      c:Send("ping")
      c:Recv(nil, function(ok, err) client_end = { ok, err } end)
    end)
    local idle, why = fw:run(H.TIMEOUT_MS)
    assert.same({ false, "stopped" }, { idle, why })
    local ok, err = the_call(st)
    assert.is_false(ok)
    assert.equal(E.ERROR_OPERATION_ABORTED, err)
    assert.same({ false, E.ERROR_OPERATION_ABORTED }, client_end)
  end)

  it("raises for what cannot be pumped: listening, unconnected, connecting, udp, closed, the same socket twice, another service's", function()
    local fw = H.new()
    local fw2 = H.new()
    local ls, port = H.listener(fw)
    local a, connected
    ls:Accept(function(ok, err, _, s) assert(ok, err); a = s end)
    local c = client(fw, port, function() connected = true end)
    H.run_until(fw, function() return a ~= nil and connected end)
    local anchored = fw:anchored()
    local sink = function() end
    H.raises("connected tcp", fw.Pump, fw, ls, a, sink, nil, FILTER)              -- listening
    local fresh = fw:CreateNetworkSocket("tcp")
    H.raises("connected tcp", fw.Pump, fw, a, fresh, sink, nil, FILTER)           -- never connected
    local bound = fw:CreateNetworkSocket("tcp")
    assert(bound:Bind("127.0.0.1", 0))
    H.raises("connected tcp", fw.Pump, fw, bound, a, sink, nil, FILTER)           -- bound, not connected
    local connecting = fw:CreateNetworkSocket("tcp")
    local connect_result
    connecting:Connect("127.0.0.1", port, function(ok) connect_result = ok end)
    H.raises("connected tcp", fw.Pump, fw, a, connecting, sink, nil, FILTER)      -- connect pending
    local udp = fw:CreateNetworkSocket("udp")
    assert(udp:Bind("127.0.0.1", 0))
    H.raises("connected tcp", fw.Pump, fw, udp, a, sink, nil, FILTER)
    H.raises("to itself", fw.Pump, fw, a, a, sink, nil, FILTER)
    local other = fw2:CreateNetworkSocket("tcp")
    H.raises("another service", fw.Pump, fw, a, other, sink, nil, FILTER)
    H.raises("fwx.socket", fw.Pump, fw, a, "b", sink, nil, FILTER)
    H.raises("sink must be", fw.Pump, fw, a, c, 42, nil, FILTER)
    a:Recv(nil, function() end)
    H.raises("Recv is pending", fw.Pump, fw, a, c, sink, nil, FILTER)
    fresh:Close()
    H.raises("closed", fw.Pump, fw, fresh, c, sink, nil, FILTER)
    assert.equal(anchored + 2, fw:anchored()) -- the Recv and the Connect, nothing of Pump
    for _, s in ipairs{ a, c, ls, bound, connecting, udp, other } do s:Close() end
    H.run(fw)
    assert.is_not_nil(connect_result)
    fw2:Close()
    H.raises("service is closed", fw2.Pump, fw2, a, c, sink, nil, FILTER)
  end)

  it("sends a chunk the socket already held before anything it reads later", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local upstream_data = {}
    local port, st = pump_proxy(fw, up_port, {
      accepted = function(a, pump)
        -- A one-byte receive: libuv reads the byte into it, goes on reading, and the
        -- rest of the segment becomes the chunk the socket holds unclaimed.
        a:Recv(fw:CreateBuffer(1), function(ok, err, buf)
          assert(ok, err)
          assert.equal("A", tostring(buf))
          local b = fw:CreateNetworkSocket("tcp")
          b:Connect("127.0.0.1", up_port, function(cok, cerr)
            assert(cok, cerr)
            pump(a, b)
          end)
        end)
      end,
    })
    local got
    client(fw, port, function(c)
      c:Send("A" .. "held bytes|")
      c:Recv(nil, function(ok, err, buf)
        -- The held bytes came back first: only now send the rest.
        assert(ok, err)
        upstream_data[#upstream_data + 1] = tostring(buf)
        c:Send("later bytes")
        c:Shutdown()
        read_all(c, function(data) got = table.concat(upstream_data) .. data; c:Close() end)
      end)
    end)
    H.run(fw)
    assert.equal("held bytes|later bytes", got)
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(#"held bytes|later bytes", ab)
    assert.equal(#"held bytes|later bytes", ba)
  end)

  it("sends what was queued on either socket before the pump began first", function()
    local fw = H.new()
    local preamble = string.rep("p", 1024 * 1024 - 1) .. "|"
    local up_port, up = echo_server(fw, { hold = true, rcvbuf = 16384 })
    -- The upstream holds its reads until the pump has begun, so the preamble is still
    -- queued in libuv (the upstream socket's send buffer is small) when it does.
    local preamble_sent, banner_sent
    local port, st = pump_proxy(fw, up_port, {
      upstream_sndbuf = 16384,
      before = function(a, b)
        b:Send(preamble, function(ok, err) preamble_sent = { ok, err } end)
        a:Send("banner|")
        banner_sent = true
      end,
      started = function() up.release() end,
    })
    local got = ask(fw, port, "from the client", LONG_MS)
    assert.is_true(banner_sent)
    assert.same({ true, 0 }, preamble_sent)
    -- The echo returns what the upstream got, in its order, after the banner.
    assert.equal(#"banner|" + #preamble + #"from the client", #got)
    assert.is_true(got == "banner|" .. preamble .. "from the client", "bytes out of order")
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(#"from the client", ab)
    assert.equal(#preamble + #"from the client", ba)
  end)

  it("a slow reader holds the sender back: bounded bytes in flight and memory, nothing lost", function()
    local fw = H.new()
    local total, chunk = 32 * 1024 * 1024, string.rep("s", 65536)
    -- The upstream reads nothing until released; small socket buffers everywhere, so
    -- that what the kernel holds is small next to what an unbounded pump would take.
    local ls, up_port = listener(fw, 65536)
    local up_sock
    ls:Accept(function(ok, err, l, s) assert(ok, err); l:Close(); up_sock = s end)
    local port, st = pump_proxy(fw, up_port, { rcvbuf = 65536, upstream_sndbuf = 65536 })
    local sent = 0
    client(fw, port, function(c)
      local function more(ok, err)
        assert(ok, err)
        if sent >= total then return c:Shutdown() end
        sent = sent + #chunk
        c:Send(chunk, more)
      end
      more(true, 0)
      read_all(c, function() c:Close() end)
    end, { sndbuf = 65536 })
    H.run_until(fw, function() return st.started and up_sock ~= nil end)
    local rss_before = rss_kb()
    -- Run until the sender has made no progress for three rounds: a stall, which an
    -- unbounded pump would only reach once all 32 MiB were sent. (A slow machine
    -- stalls earlier or later; only the bytes are compared.)
    local last, still = -1, 0
    while still < 3 and sent < total do
      fw:run(100)
      still = sent == last and still + 1 or 0
      last = sent
    end
    local stalled_at, rss_growth_kb = sent, rss_kb() - rss_before
    assert.is_true(stalled_at < 8 * 1024 * 1024,
      ("the sender pushed %d bytes at a reader that reads nothing"):format(stalled_at))
    if not H.SANITIZED then
      assert.is_true(rss_growth_kb < 8 * 1024, ("RSS grew by %d KiB while stalled"):format(rss_growth_kb))
    end
    -- Now the reader reads: every byte arrives, and the pump ends normally.
    local sunk = 0
    local function on_recv(ok, _, buf)
      if not ok or #buf == 0 then return up_sock:Close() end
      sunk = sunk + #buf
      up_sock:Recv(nil, on_recv)
    end
    up_sock:Recv(nil, on_recv)
    H.run(fw, LONG_MS)
    assert.equal(total, sunk)
    local ok, err, ab, ba = the_call(st)
    assert.is_true(ok, err)
    assert.equal(total, ab)
    assert.equal(0, ba)
  end)

  it("an end of stream that came before the pump is passed on at once", function()
    local fw = H.new()
    local up_port, up = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, {
      connected = function(a, b, pump)
        a:Recv(nil, function(ok, err, buf)
          assert(ok, err)
          assert.equal("early", tostring(buf))
          a:Recv(nil, function(eok, eerr, ebuf)
            assert(eok, eerr)
            assert.equal(0, #ebuf) -- the client's FIN, seen before the pump
            pump(a, b)
          end)
        end)
      end,
    })
    local got
    client(fw, port, function(c)
      c:Send("early")
      c:Shutdown()
      read_all(c, function(data, ok) got = { data, ok }; c:Close() end)
    end)
    H.run(fw)
    assert.same({ "", true }, got)
    assert.equal("eof", up.ended)
    local ok, err, ab, ba = the_call(st)
    assert.same({ true, 0, 0, 0 }, { ok, err, ab, ba })
  end)

  it("after the pump the sockets are the owner's again: end of stream sticks, Send says 10058", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local after = {}
    local port, st
    port, st = pump_proxy(fw, up_port, { keep = true, done = function(ok)
      assert(ok)
      local a = st.a
      a:Recv(nil, function(rok, rerr, buf)
        after.recv = { rok, rerr, #buf }
        a:Send("too late", function(sok, serr)
          after.send = { sok, serr }
          a:Close(); st.b:Close()
        end)
      end)
    end })
    client(fw, port, function(c)
      c:Send("abc")
      c:Shutdown()
      read_all(c, function() c:Close() end)
    end)
    H.run(fw)
    assert.same({ true, 0, 0 }, after.recv)
    assert.same({ false, E.WSAESHUTDOWN }, after.send)
    assert.is_true((the_call(st)))
  end)

  it("after a cancel the other socket works as before: Recv gets what comes next", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local port, st, csock
    local later
    port, st = pump_proxy(fw, up_port, { keep = true, started = function(_, b)
      b:Close() -- cancel at once
    end, done = function(ok, err)
      assert.is_false(ok)
      assert.equal(995, err)
      -- The client sends only now, so nothing of it went into the pump.
      csock:Send("after the cancel")
      st.a:Recv(nil, function(rok, _, buf)
        later = { rok, tostring(buf) }
        st.a:Close()
      end)
    end })
    client(fw, port, function(c)
      csock = c
      read_all(c, function() c:Close() end)
    end)
    H.run(fw)
    assert.same({ true, "after the cancel" }, later)
    assert.equal(995, select(2, the_call(st)))
  end)

  for _, idle_ms in ipairs{ false, 60000 } do
  it("a service dropped while pumping" .. (idle_ms and " with an idle limit" or "") .. " is collected with its pump: nothing leaks", function()
    -- Not H.new: nobody closes this service; the collector does (the after-test
    -- check counts the descriptors, dups and pipes included).
    local fw = fwx.new{}
    local up_port = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, { idle_ms = idle_ms or nil })
    local c = client(fw, port, function(s) s:Send("x") end)
    for _ = 1, 200 do
      fw:run(10)
      if st.started then break end
    end
    assert.is_true(st.started)
    assert_pumping(fw)
    fw, st, c = nil, nil, nil
    collectgarbage()
    collectgarbage()
  end)
  end

  it("a connection reset before the pump begins is its notification (64), not a raise", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, {
      connected = function(a, b, pump)
        -- Wait until the client's RST has arrived: its Recv of a reports it.
        a:Recv(nil, function(ok, err)
          assert.is_false(ok)
          assert.equal(E.ERROR_NETNAME_DELETED, err)
          pump(a, b)
        end)
      end,
    })
    client(fw, port, function(c) c:Close(true) end)
    H.run(fw)
    local ok, err, ab, ba = the_call(st)
    assert.same({ false, E.ERROR_NETNAME_DELETED, 0, 0 }, { ok, err, ab, ba })
  end)
end

describe("fw:Pump", function()
  before_each(function() FILTER = nil; H.before() end)
  after_each(H.after)
  FILTER = nil
  pump_cases()

  it("raises on Recv, Send, Shutdown and a second Pump of a pumped socket", function()
    local fw = H.new()
    local up_port = echo_server(fw)
    local other_a, other_b
    local port, st = pump_proxy(fw, up_port, {
      started = function(a, b)
        local anchored = fw:anchored()
        H.raises("socket is being pumped", a.Recv, a, nil, function() end)
        H.raises("socket is being pumped", b.Recv, b, fw:CreateBuffer(16), function() end)
        H.raises("socket is being pumped", a.Send, a, "x")
        H.raises("socket is being pumped", b.Send, b, "x", function() end)
        H.raises("socket is being pumped", a.Shutdown, a)
        H.raises("already being pumped", fw.Pump, fw, a, b, function() end)
        H.raises("already being pumped", fw.Pump, fw, b, a, function() end)
        H.raises("already being pumped", fw.Pump, fw, other_a, b, function() end)
        assert.equal(anchored, fw:anchored())
        assert.equal(1, fw:pending(true).Pump)
      end,
    })
    -- A second connected pair for the cross-pump attempt, made first.
    local ls2, port2 = H.listener(fw)
    ls2:Accept(function(ok, err, l, s) assert(ok, err); l:Close(); other_a = s end)
    client(fw, port2, function(s) other_b = s end)
    H.run_until(fw, function() return other_a ~= nil and other_b ~= nil end)
    client(fw, port, function(c)
      c:Send("x")
      c:Shutdown()
      read_all(c, function() c:Close() end)
    end)
    H.run_until(fw, function() return #st.calls == 1 end)
    other_a:Close(); other_b:Close()
    H.run(fw)
    assert.is_true((the_call(st)))
  end)

end)

describe("fw:Pump with a filter (every chunk through it, here as it came)", function()
  before_each(function() FILTER = identity; H.before() end)
  after_each(function() FILTER = nil; H.after() end)
  FILTER = identity
  pump_cases()
  FILTER = nil
end)

describe("fw:Pump's filter", function()
  before_each(H.before)
  after_each(H.after)

  -- A proxy of one client through fw:Pump(a, b, sink, ud, filter) to an echo server.
  -- Returns the proxy's port and its state (st.calls: the sink's notifications).
  local function filtered_proxy(fw, filter, opts)
    opts = opts or {}
    opts.filter = filter
    local up_port, up = echo_server(fw)
    local port, st = pump_proxy(fw, up_port, opts)
    return port, st, up
  end

  -- Paused from its own chunk's filter call, the direction does not receive again;
  -- paused from the other direction's, its receive is armed and the chunk it brings
  -- is held.
  for _, from in ipairs({ "request", "response" }) do
  it("Pause holds a direction back (paused from the " .. from .. " filter): no chunk of it reaches the filter until Resume, which hands it on from the dispatcher", function()
    local fw = H.new()
    local seen, resuming, paused_at = {}, false, nil
    local port, st
    port, st = filtered_proxy(fw, function(_, direction, buf)
      assert.is_false(resuming, "a held chunk reached the filter inside Resume")
      seen[#seen + 1] = direction .. ":" .. tostring(buf)
      if tostring(buf) == "pause|" and direction == from then
        assert.is_true(st.pump:Pause("request"))
        paused_at = #seen
        fw:SetTimer(100, function()
          -- what the client sent meanwhile did not reach the filter (from the request
          -- filter: the echo of "pause|" came since)
          assert.equal(paused_at + (from == "request" and 1 or 0), #seen)
          resuming = true
          assert.is_true(st.pump:Resume("request"))
          resuming = false
        end)
      end
    end)
    local got
    client(fw, port, function(c)
      c:Send("pause|")
      c:Recv(nil, function(ok, err, buf) -- the echo: the pause is in place now
        assert(ok, err)
        assert.equal("pause|", tostring(buf))
        c:Send("held|")
        c:Send("later|")
        c:Shutdown()
        read_all(c, function(data) got = data; c:Close() end)
      end)
    end)
    H.run(fw)
    assert.equal("held|later|", got)
    local requests = {}
    for _, v in ipairs(seen) do
      if v:find("^request:") then requests[#requests + 1] = v:sub(9) end
    end
    assert.equal("pause|held|later|", table.concat(requests))
    assert.is_true((the_call(st)))
    -- ended: both say so, and a bad direction is refused
    assert.is_false(st.pump:Pause("request"))
    assert.is_false(st.pump:Resume("response"))
    H.raises("invalid option 'both'", st.pump.Pause, st.pump, "both")
  end)
  end

  it("is called with the user data, the direction and the chunk; its result is what goes on", function()
    local fw = H.new()
    local seen, in_pump = {}, false
    local port, st = filtered_proxy(fw, function(ud, direction, buf)
      assert.is_false(in_pump, "the filter ran inside Pump")
      assert.equal("pump-ud", ud)
      local text = tostring(buf)
      seen[#seen + 1] = direction .. ":" .. text
      if direction == "request" then
        if text == "drop me|" then return false end
        if text == "as a buffer|" then
          local b = fw:CreateBuffer(32)
          b:Append("<buffer>|")
          return b
        end
        if text == "cut|here" then
          buf:SetDataSize(4) -- shortened in place, then passed on: "cut|"
          return nil
        end
        return text:upper()
      end
      return nil -- the response as it came
    end, {
      before = function() in_pump = true end,
      started = function() in_pump = false end,
    })
    local got = {}
    client(fw, port, function(c)
      -- One message at a time, each after the echo of the one before, so that every
      -- message is a chunk of its own.
      local messages, i = { "hello|", "drop me|", "as a buffer|", "cut|here", "bye|" }, 0
      local function next_message()
        i = i + 1
        if messages[i] == nil then return c:Shutdown() end
        c:Send(messages[i])
        if messages[i] == "drop me|" then return next_message() end
      end
      local function on_recv(ok, _, buf)
        if not ok or #buf == 0 then return c:Close() end
        got[#got + 1] = tostring(buf)
        next_message()
        c:Recv(nil, on_recv)
      end
      c:Recv(nil, on_recv)
      next_message()
    end)
    H.run(fw)
    assert.same({ "HELLO|", "<buffer>|", "cut|", "BYE|" }, got)
    assert.same({ "request:hello|", "response:HELLO|", "request:drop me|", "request:as a buffer|",
                  "response:<buffer>|", "request:cut|here", "response:cut|", "request:bye|",
                  "response:BYE|" }, seen)
    local ok, err, ab, ba, ud = the_call(st)
    -- The counts are the bytes the filter was given from each side.
    assert.same({ true, 0, #"hello|drop me|as a buffer|cut|herebye|", #"HELLO|<buffer>|cut|BYE|",
                  "pump-ud" }, { ok, err, ab, ba, ud })
  end)

  it("a filter that raises fails its own pump with 1236, reported once; another pump goes on", function()
    local reports = {}
    local fw = H.new{ on_error = function(msg, object, operation)
      reports[#reports + 1] = { msg = tostring(msg), object = object, operation = operation }
    end }
    local port1, bad = filtered_proxy(fw, function(_, _, buf)
      if tostring(buf):find("boom", 1, true) then error("the filter broke on boom") end
    end)
    local port2, good = filtered_proxy(fw, function() end)
    local replies = {}
    for i, port in ipairs{ port1, port2 } do
      client(fw, port, function(c)
        c:Send("ping boom")
        read_all(c, function(data) replies[i] = data; c:Close() end)
        if i == 2 then c:Shutdown() end
      end)
    end
    H.run(fw)
    assert.equal(1, #reports)
    assert.matches("the filter broke on boom", reports[1].msg)
    assert.matches("stack traceback", reports[1].msg)
    assert.equal(bad.a, reports[1].object) -- the socket the chunk came from
    assert.equal("Pump", reports[1].operation)
    local ok, err, ab, ba = the_call(bad)
    assert.same({ false, 1236, 9, 0 }, { ok, err, ab, ba })
    assert.equal("", replies[1])
    assert.equal("ping boom", replies[2])
    assert.same({ true, 0, 9, 9, "pump-ud" }, { the_call(good) })
  end)

  for _, case in ipairs{ { true, "boolean" }, { {}, "table" }, { 42, "number" } } do
    it("a filter that returns a " .. case[2] .. " fails its pump with 1236 and a message naming it", function()
      local reports = {}
      local fw = H.new{ on_error = function(msg) reports[#reports + 1] = tostring(msg) end }
      local port, st = filtered_proxy(fw, function() return case[1] end)
      client(fw, port, function(c)
        c:Send("x")
        read_all(c, function() c:Close() end)
      end)
      H.run(fw)
      assert.equal(1, #reports)
      assert.matches("Pump filter returned a " .. case[2] .. " for a request chunk", reports[1], 1, true)
      assert.same({ false, 1236, 1, 0, "pump-ud" }, { the_call(st) })
    end)
  end

  for _, which in ipairs{ "a", "b" } do
    it("closing socket " .. which .. " inside the filter ends the pump once with 995, and sends nothing more", function()
      local fw = H.new()
      local st
      local up_port, up = echo_server(fw)
      local port
      port, st = pump_proxy(fw, up_port, { keep = true, done = function()
        st.a:Close(); st.b:Close()
      end, filter = function(_, _, buf)
        if tostring(buf) == "close now" then st[which]:Close() end
      end })
      client(fw, port, function(c)
        c:Send("close now")
        read_all(c, function() c:Close() end)
      end)
      H.run(fw)
      assert.same({ false, 995, 9, 0, "pump-ud" }, { the_call(st) })
      assert.equal(0, up.received) -- the chunk the filter saw was not sent on
    end)
  end

  it("fw:Close() inside the filter ends the pump once with 995", function()
    local fw = H.new()
    local port, st = filtered_proxy(fw, function() fw:Close() end)
    client(fw, port, function(c)
      c:Send("x")
      c:Recv(nil, function() end)
    end)
    local idle, why = fw:run(H.TIMEOUT_MS)
    assert.same({ false, "stopped" }, { idle, why })
    assert.same({ false, 995, 1, 0, "pump-ud" }, { the_call(st) })
  end)

  it("may inject with Send on either socket; Recv and another Pump of them raise", function()
    local fw = H.new()
    local checked = false
    local st
    local port
    port, st = filtered_proxy(fw, function(_, direction, buf)
      if direction == "request" then
        -- Bytes to the client first: they go out before the echo of this chunk.
        st.a:Send("<injected>")
        local anchored = fw:anchored()
        H.raises("socket is being pumped", st.a.Recv, st.a, nil, function() end)
        H.raises("socket is being pumped", st.b.Recv, st.b, fw:CreateBuffer(8), function() end)
        H.raises("already being pumped", fw.Pump, fw, st.a, st.b, function() end)
        H.raises("already being pumped", fw.Pump, fw, st.b, st.a, function() end, nil, function() end)
        assert.equal(anchored, fw:anchored())
        checked = true
        return tostring(buf) .. "+"
      end
    end)
    local got = ask(fw, port, "ask")
    assert.is_true(checked)
    assert.equal("<injected>ask+", got)
    assert.same({ true, 0, 3, 4, "pump-ud" }, { the_call(st) })
  end)

  it("refuses a filter that is not a function, and starts nothing", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local a, c
    ls:Accept(function(ok, err, _, s) assert(ok, err); a = s end)
    client(fw, port, function(s) c = s end)
    H.run_until(fw, function() return a ~= nil and c ~= nil end)
    local anchored, pending = fw:anchored(), fw:pending()
    H.raises("filter must be a function or nil", fw.Pump, fw, a, c, function() end, nil, "upper")
    H.raises("filter must be a function or nil", fw.Pump, fw, a, c, function() end, nil, {})
    assert.equal(anchored, fw:anchored())
    assert.equal(pending, fw:pending())
    -- Nothing of the refused pumps is left on the sockets: they receive as before.
    c:Send("still mine")
    local got
    a:Recv(nil, function(ok, _, buf) got = ok and tostring(buf) end)
    H.run_until(fw, function() return got ~= nil end)
    assert.equal("still mine", got)
    for _, s in ipairs{ a, c, ls } do s:Close() end
    H.run(fw)
  end)
end)

describe("fw:Pump's filter, its sink", function()
  before_each(H.before)
  after_each(H.after)

  it("a sink that raises is reported once, as Pump's, and the service goes on", function()
    local reports = {}
    local fw = H.new{ on_error = function(msg, object, operation)
      reports[#reports + 1] = { tostring(msg), object, operation }
    end }
    local up_port = echo_server(fw)
    local st
    local port
    port, st = pump_proxy(fw, up_port, { filter = function() end, done = function()
      error("the sink broke")
    end })
    local got = ask(fw, port, "x")
    assert.equal("x", got)
    assert.equal(1, #st.calls)
    assert.equal(1, #reports)
    assert.matches("the sink broke", reports[1][1])
    assert.equal(st.a, reports[1][2])
    assert.equal("Pump", reports[1][3])
    -- The service still serves: a posted task runs.
    local ran = false
    fw:PostTaskCompletion(function() ran = true end)
    H.run(fw)
    assert.is_true(ran)
  end)
end)
