-- The host (fwx.host, `fwx run FILTER.lua`): a filtering TCP proxy whose filters are
-- Lua tables. Real sockets on 127.0.0.1 (a real upstream in the same service, nc and
-- the command line in child processes); each case tries to break a promise: the bytes
-- and their order through the pump and through Lua, what a filter may do to them
-- (modify, drop, inject, close, refuse), a raising filter failing its connection
-- alone (closed, or open), limits, bounded memory under a slow reader, and bad
-- configuration refused with a clear error.
local fwx = require "fwx"
local host = require "fwx.host"
local H = require "spec.helper"

local E = fwx.errors

local HH = require "spec.host_helper"
local upstream, client, service, start, proxy, finish =
  HH.upstream, HH.client, HH.service, HH.start, HH.proxy, HH.finish

describe("the host", function()
  before_each(H.before)
  after_each(H.after)

  for _, case in ipairs({ { "no data filter (the core pump)", nil },
                          { "an identity Lua data filter", function() end } }) do
    it("carries the bytes both ways, in order, with " .. case[1], function()
      local server, logs, ust = proxy({ on_data = case[2] })
      local st = client(server.fw, server.port, { "one ", "two ", "three" })
      H.run_until(server.fw, function() return st.done end)
      assert.equal("one two three", st.reply)
      assert.equal("one two three", table.concat(ust.received))
      finish(server, ust)
      assert.equal(1, #logs.access)
      assert.truthy(logs.access[1]:find("request=13 response=13 end=eof", 1, true), logs.access[1])
      assert.same({}, logs.errors)
      assert.equal(0, server.connections)
    end)
  end

  it("gives on_data each chunk and direction, and forwards what it returns", function()
    local seen = {}
    local server, _, ust = proxy({
      on_data = function(conn, direction, buf)
        seen[#seen + 1] = direction .. ":" .. tostring(buf)
        if direction == "request" then return tostring(buf):upper() end
        if tostring(buf):find("DROP", 1, true) then return false end
      end,
    })
    local st = client(server.fw, server.port, { "hello" })
    H.run_until(server.fw, function() return st.done end)
    assert.equal("HELLO", st.reply)
    assert.same({ "request:hello", "response:HELLO" }, seen)
    finish(server, ust)
  end)

  it("drops a chunk on false, injects with conn:send, closes with conn:close", function()
    local server, logs, ust = proxy({
      on_data = function(conn, direction, buf)
        local s = tostring(buf)
        if s == "drop" then return false end
        if s == "inject" then conn:send("response", "injected;"); return false end
        if s == "close" then conn:close() end
      end,
    })
    -- one client per verb, so that each chunk arrives alone
    local drop = client(server.fw, server.port, { "drop" })
    local inject = client(server.fw, server.port, { "inject" })
    H.run_until(server.fw, function() return drop.done and inject.done end)
    local close = client(server.fw, server.port, { "close" })
    H.run_until(server.fw, function() return close.done end)
    assert.equal("", drop.reply)
    assert.equal("injected;", inject.reply)
    assert.is_true(close.reply == "" or close.err ~= nil)
    assert.same({}, ust.received)
    finish(server, ust)
    local ends, closed_line = {}, nil
    for _, l in ipairs(logs.access) do
      ends[#ends + 1] = l:match("end=(.*)$")
      if l:find("end=closed by the filter", 1, true) then closed_line = l end
    end
    table.sort(ends)
    assert.same({ "closed by the filter", "eof", "eof" }, ends)
    -- Logged once the pump's counts came: the 5 bytes on_data saw before closing.
    assert.matches(" request=5 response=0 ", closed_line)
  end)

  it("conn:pause holds a direction from on_accept until conn:resume (an answer awaited first); without on_data it raises", function()
    local seen, checked = {}, false
    local server, logs, ust
    server, logs, ust = proxy({
      on_accept = function(conn)
        assert.is_true(conn:pause("request")) -- before the pump has started
        server.fw:SetTimer(50, function() -- as if a check elsewhere answered
          checked = true
          conn:send("response", "checked;")
          conn:resume("request")
        end)
      end,
      on_data = function(conn, direction, buf)
        assert.is_true(checked or direction == "response", "a request chunk before the resume")
        seen[#seen + 1] = direction
      end,
    })
    local st = client(server.fw, server.port, { "after the check" })
    H.run_until(server.fw, function() return st.done end)
    assert.equal("checked;after the check", st.reply)
    assert.same({ "request", "response" }, seen)
    finish(server, ust)
    assert.same({}, logs.errors)

    local raised
    server, logs, ust = proxy({ on_accept = function(conn)
      raised = select(2, pcall(conn.pause, conn, "request"))
    end })
    st = client(server.fw, server.port, { "core" })
    H.run_until(server.fw, function() return st.done end)
    finish(server, ust)
    assert.truthy(tostring(raised):find("conn:pause needs on_data", 1, true), tostring(raised))
  end)

  it("forwards a buffer or a string on_data returns, and fails a connection on anything else", function()
    local server, logs, ust
    server, logs, ust = proxy({
      on_data = function(conn, direction, buf)
        if direction == "response" then return nil end
        local s = tostring(buf)
        if s == "buffer" then
          local b = server.fw:CreateBuffer(16)
          b:Append("<as a buffer>")
          return b
        end
        if s == "empty" then return "" end
        if s == "table" then return {} end
      end,
    })
    local as_buffer = client(server.fw, server.port, { "buffer" })
    local empty = client(server.fw, server.port, { "empty" })
    local bad = client(server.fw, server.port, { "table" })
    H.run_until(server.fw, function() return as_buffer.done and empty.done and bad.done end)
    assert.equal("<as a buffer>", as_buffer.reply)
    assert.equal("", empty.reply)
    assert.is_true(bad.reply == "" or bad.err ~= nil)
    finish(server, ust)
    assert.equal(1, #logs.errors)
    assert.truthy(logs.errors[1]:find("on_data raised: Pump filter returned a table for a request chunk", 1, true), logs.errors[1])
  end)

  it("refuses a connection on_accept answers false, without contacting the upstream", function()
    local server, logs, ust = proxy({
      on_accept = function(conn) return conn.id % 2 == 0 end, -- refuse the odd ones
    })
    local first = client(server.fw, server.port, { "x" })
    H.run_until(server.fw, function() return first.done end)
    local second = client(server.fw, server.port, { "y" })
    H.run_until(server.fw, function() return second.done end)
    assert.is_true(first.reply == "" or first.err ~= nil)
    assert.equal("y", second.reply)
    assert.equal(1, ust.connections)
    finish(server, ust)
    assert.truthy(logs.access[1]:find("end=refused by the filter", 1, true), logs.access[1])
  end)

  it("a raising on_data fails its own connection closed; the others go on", function()
    local server, logs, ust = proxy({
      on_data = function(conn, direction, buf)
        if tostring(buf) == "boom" then error("the filter broke") end
      end,
    })
    local bad = client(server.fw, server.port, { "boom" })
    local good = client(server.fw, server.port, { "fine" })
    H.run_until(server.fw, function() return bad.done and good.done end)
    assert.is_true(bad.reply == "" or bad.err ~= nil)
    assert.equal("fine", good.reply)
    finish(server, ust)
    assert.equal(1, #logs.errors)
    assert.truthy(logs.errors[1]:find("on_data raised: .*the filter broke"), logs.errors[1])
    local ends = {}
    for _, l in ipairs(logs.access) do ends[#ends + 1] = l:match("end=(.*)$") end
    table.sort(ends)
    assert.same({ "eof", "filter error" }, ends)
  end)

  it("with failure = \"open\", a raising on_data lets the bytes through", function()
    local server, logs, ust = proxy({
      failure = "open",
      on_data = function() error("the filter broke") end,
    })
    local st = client(server.fw, server.port, { "through" })
    H.run_until(server.fw, function() return st.done end)
    assert.equal("through", st.reply)
    finish(server, ust)
    assert.equal(2, #logs.errors) -- once per direction's chunk
  end)

  it("a refused upstream closes the client and reports 1225", function()
    local fw = service()
    local ls, port = H.listener(fw)
    ls:Close()
    local closes = {}
    local server, logs = start(fw, {
      upstream = ("127.0.0.1:%d"):format(port),
      on_close = function(conn, result) closes[#closes + 1] = result end,
    })
    local st = client(server.fw, server.port, { "x" })
    H.run_until(server.fw, function() return st.done end)
    finish(server)
    assert.equal(1, #closes)
    assert.equal("upstream", closes[1].reason)
    assert.equal(E.ERROR_CONNECTION_REFUSED, closes[1].error)
    assert.truthy(logs.access[1]:find("end=upstream error=1225", 1, true), logs.access[1])
  end)

  -- A client that sends hello, collects the reply and never ends its side (st.socket
  -- is its socket): client() without the shutdown.
  local function lingering_client(fw, port, hello)
    return client(fw, port, { hello }, true)
  end

  for _, case in ipairs({ { "the core pump", nil }, { "an identity Lua data filter", function() end } }) do
    it("ends a connection idle for idle_timeout_ms with " .. case[1] .. ": the client sees the end, the log says why", function()
      local closes = {}
      local server, logs, ust = proxy({ on_data = case[2], idle_timeout_ms = 150,
        on_close = function(_, result) closes[#closes + 1] = result end })
      local fw = server.fw
      local st = lingering_client(fw, server.port, "hi")
      H.run_until(fw, function() return #st.got > 0 end)
      -- Connected and pumping: the connect's timer is gone; a data filter's pump
      -- holds its idle limit's timer, the core pump holds none of Lua's.
      assert.equal(case[2] and 1 or nil, fw:pending(true).timer)
      H.run_until(fw, function() return st.done end)
      assert.equal("hi", st.reply)
      assert.is_nil(st.err) -- an orderly end, not a reset
      finish(server, ust)
      assert.equal(1, #closes)
      assert.same({ "idle timeout", E.ERROR_SEM_TIMEOUT, 2, 2 },
        { closes[1].reason, closes[1].error, closes[1].request_bytes, closes[1].response_bytes })
      assert.truthy(logs.access[1]:find("request=2 response=2 end=idle timeout error=121", 1, true),
        logs.access[1])
    end)
  end

  it("ends a connection at total_timeout_ms however busy it is", function()
    local server, logs, ust = proxy({ total_timeout_ms = 200 })
    local fw = server.fw
    local st = lingering_client(fw, server.port, "x")
    -- A byte every 10 ms: never idle, but not allowed to go on.
    local ticker = fw:SetTimer(10, function(ok)
      if ok and st.socket and not st.done then st.socket:Send("x") end
    end, nil, 10)
    H.run_until(fw, function() return st.done end)
    ticker:Cancel()
    finish(server, ust)
    assert.truthy(#st.reply > 1, "the connection was cut before bytes flowed")
    assert.truthy(logs.access[1]:find("end=total timeout error=121", 1, true), logs.access[1])
  end)

  it("ends a connection whose upstream does not answer within connect_timeout_ms", function()
    local fw = service()
    -- An upstream whose accept queue is full: the kernel drops further SYNs, so a
    -- connect to it waits. Fillers connect until one of them waits too.
    local ls, port = H.listener(fw, 1)
    local fillers, waiting = {}, false
    repeat
      local f = fw:CreateNetworkSocket("tcp")
      local connected = false
      f:Connect("127.0.0.1", port, function(ok) connected = ok end)
      fillers[#fillers + 1] = f
      local ok = pcall(H.run_until, fw, function() return connected end, 300)
      waiting = not ok
    until waiting or #fillers == 64
    assert.is_true(waiting, "the upstream's queue never filled")
    local closes = {}
    local server, logs = start(fw, { upstream = ("127.0.0.1:%d"):format(port), connect_timeout_ms = 100,
      on_close = function(_, result) closes[#closes + 1] = result end })
    local st = client(fw, server.port, { "x" })
    H.run_until(fw, function() return st.done end)
    for _, f in ipairs(fillers) do f:Close(true) end
    ls:Close()
    finish(server)
    assert.same({ "connect timeout", E.ERROR_SEM_TIMEOUT }, { closes[1].reason, closes[1].error })
    assert.truthy(logs.access[1]:find("end=connect timeout error=121", 1, true), logs.access[1])
  end)

  -- Parse Prometheus text: { ["name{labels}"] = value }, and the sum of each name.
  local function parse_metrics(text)
    local series, sums = {}, {}
    for line in text:gmatch("[^\n]+") do
      if not line:find("^#") then
        local name, labels, value = line:match("^([%w_]+){(.-)} (%S+)$")
        assert.truthy(name, "not a series line: " .. line)
        series[name .. "{" .. labels .. "}"] = tonumber(value)
        sums[name] = (sums[name] or 0) + tonumber(value)
      end
    end
    return series, sums
  end

  -- A shell command in the background; returns a function giving its output once it
  -- has ended (nil before). LD_PRELOAD is cleared: curl hangs under `make asan`'s.
  local function background(cmd)
    local out = os.tmpname()
    os.execute(("(LD_PRELOAD= %s > %s.tmp 2>&1; mv %s.tmp %s.done) &"):format(cmd, out, out, out))
    return function()
      local f = io.open(out .. ".done")
      if not f then return nil end
      local text = f:read("a")
      f:close()
      os.remove(out .. ".done")
      os.remove(out)
      return text
    end
  end

  -- A client of server's metrics endpoint that connects and sends nothing; its state
  -- says how it ended (st.ok, st.err) once st.done.
  local function silent_scraper(server)
    local st = {}
    local c = server.fw:CreateNetworkSocket("tcp")
    c:Connect("127.0.0.1", server.metrics_port, function(ok, err, s)
      assert(ok, err)
      st.connected = true
      s:Recv(nil, function(rok, rerr)
        st.done, st.ok, st.err = true, rok, rerr
        s:Close()
      end)
    end)
    return st
  end

  it("the metrics endpoint resets a client past max_scrapes, and the scrapes in progress when the server closes", function()
    local hm = require "fwx.host_metrics"
    local saved = hm.max_scrapes
    hm.max_scrapes = 2
    local fine, err = pcall(function()
      local server, _, ust = proxy({ metrics_listen = "127.0.0.1:0" })
      local fw = server.fw
      local a, b = silent_scraper(server), silent_scraper(server)
      H.run_until(fw, function() return a.connected and b.connected end)
      -- accepted after a and b (the kernel queues them in order), with both open
      local c = silent_scraper(server)
      H.run_until(fw, function() return c.done end)
      assert.same({ false, E.ERROR_NETNAME_DELETED }, { c.ok, c.err })
      assert.is_nil(a.done)
      server.close()
      H.run_until(fw, function() return a.done and b.done end)
      assert.same({ false, E.ERROR_NETNAME_DELETED }, { a.ok, a.err })
      finish(server, ust)
    end)
    hm.max_scrapes = saved
    assert(fine, err)
  end)

  it("the metrics endpoint resets a client whose request does not come in time, and goes on serving", function()
    local hm = require "fwx.host_metrics"
    local saved = hm.request_timeout_ms
    hm.request_timeout_ms = 100
    local fine, err = pcall(function()
      local server, _, ust = proxy({ metrics_listen = "127.0.0.1:0" })
      local fw = server.fw
      local quiet = silent_scraper(server)
      H.run_until(fw, function() return quiet.done end)
      assert.same({ false, E.ERROR_NETNAME_DELETED }, { quiet.ok, quiet.err })
      local done = background(("curl -s --max-time 5 %s"):format(server.metrics_url))
      local text
      H.run_until(fw, function() text = done(); return text ~= nil end, 10000)
      assert.truthy(text:find("fwx_connections_open", 1, true), text)
      finish(server, ust)
    end)
    hm.request_timeout_ms = saved
    assert(fine, err)
  end)

  it("counts connections, bytes, ends by reason and time in Lua, and serves them to curl as Prometheus text", function()
    local server, logs, ust = proxy({ metrics_listen = "127.0.0.1:0", max_connections = 2,
      on_accept = function(conn) return conn.id ~= 1 end }, { hold = true })
    local fw = server.fw
    assert.truthy(server.metrics_url:match("^http://127%.0%.0%.1:%d+/metrics$"), server.metrics_url)
    -- the first refused by on_accept, two open (the upstream holds them), a fourth
    -- reset at max_connections
    local refused = client(fw, server.port, { "no" })
    H.run_until(fw, function() return refused.done end)
    local held = {}
    for i = 1, 2 do held[i] = lingering_client(fw, server.port, tostring(i):rep(10 * i)) end
    H.run_until(fw, function() return #ust.received == 2 end)
    local past = fw:CreateNetworkSocket("tcp")
    past:Connect("127.0.0.1", server.port, function() end)
    H.run_until(fw, function() return server.accepted == 4 and #logs.access == 2 end)
    local m = server.metrics()
    assert.same({ 2, 4, 1, 1 }, { m.open, m.accepted, m.refused, m.ended["refused by the filter"] })
    -- the two held ones end: their clients close
    for i = 1, 2 do held[i].socket:Close() end
    H.run_until(fw, function() return server.connections == 0 end)
    local done = background(("curl -s --max-time 5 %s"):format(server.metrics_url))
    local text
    H.run_until(fw, function() text = done(); return text ~= nil end, 10000)
    past:Close()
    finish(server, ust)
    local series, sums = parse_metrics(text)
    assert.equal(0, series['fwx_connections_open{worker="1"}'])
    assert.equal(4, series['fwx_connections_accepted_total{worker="1"}'])
    assert.equal(1, series['fwx_connections_refused_total{worker="1"}'])
    assert.equal(1, series['fwx_connections_ended_total{worker="1",reason="refused by the filter"}'])
    assert.equal(3, sums.fwx_connections_ended_total)
    assert.equal(30, series['fwx_bytes_total{worker="1",direction="request"}'])
    assert.is_true(series['fwx_lua_seconds_total{worker="1"}'] > 0)
    assert.is_true(series['fwx_notifications_total{worker="1"}'] > 0)
    assert.truthy(text:find("# TYPE fwx_connections_open gauge\n", 1, true), text)
  end)

  it("refuses connections past max_connections", function()
    local server, logs, ust = proxy({ max_connections = 2 }, { hold = true })
    local socks = {}
    for i = 1, 3 do
      local c = server.fw:CreateNetworkSocket("tcp")
      socks[i] = c
      c:Connect("127.0.0.1", server.port, function(ok) assert(ok) end)
      H.run_until(server.fw, function() return server.accepted == i end)
    end
    H.run_until(server.fw, function() return #logs.access == 1 end)
    assert.equal(2, server.connections)
    assert.truthy(logs.access[1]:find("end=refused (max_connections 2)", 1, true), logs.access[1])
    for _, c in ipairs(socks) do c:Close() end
    finish(server, ust)
    assert.equal(0, server.connections)
  end)

  it("pushes back on a client when the upstream does not read: memory stays bounded", function()
    local server, _, ust = proxy({ on_data = function() end }, { deaf = true })
    local c = server.fw:CreateNetworkSocket("tcp")
    local chunk = ("z"):rep(64 * 1024)
    local sent, stalled = 0, false
    c:Connect("127.0.0.1", server.port, function(ok)
      assert(ok)
      -- Sends with a sink: each completes once the kernel took it, so the sends stop
      -- completing once the host stops reading.
      local function more(sok)
        if not sok then return end
        sent = sent + #chunk
        if sent < 64 * 1024 * 1024 then c:Send(chunk, more) end
      end
      c:Send(chunk, more)
    end)
    local before = sent
    for _ = 1, 20 do
      H.run_for(server.fw, 25)
      if sent == before and sent > 0 then stalled = true break end
      before = sent
    end
    assert.is_true(stalled, "the client's sends never stalled")
    assert.is_true(sent < 32 * 1024 * 1024, ("%d bytes went in before the stall"):format(sent))
    c:Close(true)
    finish(server, ust)
  end)

  it("server.shutdown stops accepting, lets open connections finish, ends the rest at the deadline", function()
    local server, logs, ust = proxy({ on_data = function() end })
    local fw = server.fw
    -- one connection that finishes by itself, one that stays open
    local held = fw:CreateNetworkSocket("tcp")
    held:Connect("127.0.0.1", server.port, function(ok) assert(ok) end)
    H.run_until(fw, function() return server.connections == 1 end)
    local finishing = fw:CreateNetworkSocket("tcp")
    local replies = {}
    finishing:Connect("127.0.0.1", server.port, function(ok) assert(ok) end)
    H.run_until(fw, function() return server.connections == 2 end)
    local drained = 0
    server.shutdown(300, function() drained = drained + 1 end)
    assert.equal(0, drained) -- two connections are still open
    -- after the shutdown: the open connection still carries bytes both ways
    finishing:Send("last words")
    finishing:Recv(nil, function(rok, _, buf)
      replies[#replies + 1] = rok and tostring(buf)
      finishing:Close()
    end)
    local late = client(fw, server.port, { "too late" })
    H.run_until(fw, function() return late.done and #replies == 1 end)
    assert.same({ "last words" }, replies)
    assert.is_true(late.err ~= nil) -- refused: nobody listens any more
    H.run_until(fw, function() return server.connections == 0 end, 5000)
    assert.equal(1, drained) -- told once, when the last one ended
    held:Close()
    ust.close()
    H.run(fw)
    local ends = {}
    for _, l in ipairs(logs.access) do ends[#ends + 1] = l:match("end=(%a+)") end
    table.sort(ends)
    assert.same({ "eof", "shutdown" }, ends)
  end)

  it("refuses a bad filter with a clear error", function()
    for _, case in ipairs({
      { "a filter is a table", 42 },
      { "upstream must be \"host:port\", got nil", {} },
      { "listen must be \"host:port\", got \"nowhere\"", { listen = "nowhere", upstream = "127.0.0.1:1" } },
      { "on_data must be a function, got string", { upstream = "127.0.0.1:1", on_data = "x" } },
      { "failure must be \"closed\" or \"open\", got ajar", { upstream = "127.0.0.1:1", failure = "ajar" } },
      { "max_connections must be a positive integer", { upstream = "127.0.0.1:1", max_connections = 0 } },
      { "port 70000 is out of range", { upstream = "127.0.0.1:70000" } },
      { "shutdown_timeout_ms must be an integer of 0 or more",
        { upstream = "127.0.0.1:1", shutdown_timeout_ms = -1 } },
      { "idle_timeout_ms must be an integer of 0 or more (ms; 0: no limit), got -1",
        { upstream = "127.0.0.1:1", idle_timeout_ms = -1 } },
      { "connect_timeout_ms must be an integer of 0 or more (ms; 0: no limit), got 1.5",
        { upstream = "127.0.0.1:1", connect_timeout_ms = 1.5 } },
      { "total_timeout_ms must be an integer of 0 or more (ms; 0: no limit), got soon",
        { upstream = "127.0.0.1:1", total_timeout_ms = "soon" } },
      { "access_log must be true, false or a function", { upstream = "127.0.0.1:1", access_log = 1 } },
      { "metrics_listen must be \"host:port\", got \"9100\"", { upstream = "127.0.0.1:1", metrics_listen = "9100" } },
    }) do
      H.raises(case[1], host.start, case[2])
    end
    H.raises("the service must come from host.service()", host.start,
      { upstream = "127.0.0.1:1" }, H.new())
  end)

  describe("fwx run", function()
    local function wait_for(path, pattern)
      for _ = 1, 100 do
        local f = io.open(path); local text = f and f:read("a") or ""; if f then f:close() end
        local m = text:match(pattern)
        if m then return m, text end
        os.execute("sleep 0.05")
      end
      local f = io.open(path); local text = f and f:read("a") or ""; if f then f:close() end
      error(("%q never appeared in: %s"):format(pattern, text))
    end

    -- The upstream: examples/echo.lua in a child process. Returns its output file
    -- (its pid is in FILE.pid) and its port.
    local function echo_process()
      local out = os.tmpname()
      os.execute(("timeout 20 env %s examples/echo.lua 0 > %s 2>&1 & echo $! > %s.pid")
        :format(H.lua_command(), out, out))
      return out, wait_for(out, "127%.0%.0%.1:(%d+)")
    end

    -- `fwx run FILTER ARGS --listen 127.0.0.1:0` in a child process, its output (and
    -- then "exit=N") in a file. Returns the file, the port it listens on and its pid.
    local function host_process(filter, args)
      local out = os.tmpname()
      os.execute(("(timeout 30 env %s bin/fwx run %s %s --listen 127.0.0.1:0; echo exit=$?) > %s 2>&1 &")
        :format(H.lua_command(), filter, args, out))
      local port = wait_for(out, "listening on 127%.0%.0%.1:(%d+)")
      local pid = H.sh(("ss -ltnpH 'sport = :%s' | grep -o 'pid=[0-9]*' | head -1"):format(port))
        :match("pid=(%d+)")
      assert.truthy(pid, "no pid for the host")
      return out, port, pid
    end

    -- FILTER served by `fwx run` in front of examples/echo.lua, input sent with nc;
    -- returns the reply and the host's log once it shows end_pattern.
    local function through_nc(filter, input, end_pattern)
      local up_out, up_port = echo_process()
      local host_out, port, pid = host_process(filter, "--upstream 127.0.0.1:" .. up_port)
      local got = H.sh(("printf '%s' | timeout 5 nc -N 127.0.0.1 %s"):format(input, port))
      local _, log = wait_for(host_out, end_pattern)
      os.execute("kill " .. pid)
      os.execute(("kill $(cat %s.pid) 2>/dev/null"):format(up_out))
      for _, p in ipairs({ up_out, up_out .. ".pid", host_out }) do os.remove(p) end
      return got, log
    end

    it("serves a filter file to nc, with --listen and --upstream", function()
      local got, log = through_nc("examples/filters/uppercase.lua", "through the host", "end=eof")
      assert.equal("THROUGH THE HOST", got)
      assert.truthy(log:find("request=16 response=16 end=eof", 1, true), log)
    end)

    it("serves a filter file in the SDK's shape to nc: a chain of two data filters", function()
      local got, log = through_nc("examples/filters/sdk_chain.lua", "hello, chain", "end=closed")
      assert.equal("HELLO, CHAIN", got)
      assert.truthy(log:find("tally: connection 1 from 127.0.0.1:%d+: 12 bytes up, 12 down"), log)
      assert.truthy(log:find("request=12 response=12 end=closed", 1, true), log)
    end)

    -- `fwx run FILE` over UDP in front of examples/udp_echo.lua, and nc -u sending
    -- payload as one datagram; returns what nc got and the host's log once it has
    -- drained at SIGTERM.
    local function through_nc_udp(file, payload)
      local up_out = os.tmpname()
      os.execute(("timeout 20 env %s examples/udp_echo.lua 0 > %s 2>&1 & echo $! > %s.pid")
        :format(H.lua_command(), up_out, up_out))
      local up_port = wait_for(up_out, "udp echo on 127%.0%.0%.1:(%d+)")
      local host_out = os.tmpname()
      os.execute(("(timeout 30 env %s bin/fwx run %s --listen 127.0.0.1:0 --upstream 127.0.0.1:%s; echo exit=$?) > %s 2>&1 &")
        :format(H.lua_command(), file, up_port, host_out))
      local port = wait_for(host_out, "listening on 127%.0%.0%.1:(%d+) %(udp%)")
      local got = H.sh(("printf '%s' | timeout 5 nc -u -w1 127.0.0.1 %s"):format(payload, port))
      local pid = H.sh(("ss -lunpH 'sport = :%s' | grep -o 'pid=[0-9]*' | head -1"):format(port)):match("pid=(%d+)")
      os.execute("kill -TERM " .. pid) -- drains: the session ends at once (no deadline reached)
      local _, log = wait_for(host_out, "exit=%d+")
      os.execute(("kill $(cat %s.pid) 2>/dev/null"):format(up_out))
      for _, p in ipairs({ up_out, up_out .. ".pid", host_out }) do os.remove(p) end
      assert.truthy(log:find("fwx: stopped\nexit=0", 1, true), log)
      return got, log
    end

    it("serves a UDP filter file to nc -u, a session per client, logged when it ends", function()
      local got, log = through_nc_udp("examples/filters/udp_uppercase.lua", "through udp")
      assert.equal("THROUGH UDP", got)
      assert.truthy(log:find("request=11 response=11 end=shutdown", 1, true), log)
    end)

    it("serves a UDP filter in the SDK's shape to nc -u: its data filter passes the answer", function()
      local got, log = through_nc_udp("examples/filters/sdk_udp_guard.lua", "through the guard")
      assert.equal("through the guard", got)
      assert.truthy(log:find("guard: session 1: 1 answers passed, 0 dropped", 1, true), log)
      assert.truthy(log:find("request=17 response=17 end=shutdown", 1, true), log)
    end)

    it("drains on SIGTERM: no new connections, the open one finishes, then it exits 0", function()
      local up_out, up_port = echo_process()
      local host_out, port, pid = host_process("examples/filters/default.lua", "--upstream 127.0.0.1:" .. up_port)
      -- a connection that stays open across the signal: its client writes after it
      local nc_out = os.tmpname()
      os.execute(("((printf 'before '; sleep 1; printf 'after') | timeout 10 nc -N 127.0.0.1 %s > %s) &")
        :format(port, nc_out))
      wait_for(host_out, "connection 1 from")
      os.execute("kill -TERM " .. pid)
      wait_for(host_out, "SIGTERM: no new connections; draining 1")
      local late = H.sh(("printf 'late' | timeout 3 nc -N 127.0.0.1 %s; echo rc=$?"):format(port))
      local _, log = wait_for(host_out, "exit=%d+")
      local f = io.open(nc_out); local echoed = f:read("a"); f:close()
      os.execute(("kill $(cat %s.pid) 2>/dev/null"):format(up_out))
      for _, p in ipairs({ up_out, up_out .. ".pid", host_out, nc_out }) do os.remove(p) end
      assert.equal("before after", echoed)
      assert.truthy(late:find("rc=1", 1, true), late) -- refused
      assert.truthy(log:find("end=eof", 1, true), log)
      assert.truthy(log:find("fwx: stopped\nexit=0", 1, true), log)
    end)

    it("with --threads 2 and --metrics, one endpoint serves both workers' figures", function()
      local up_out, up_port = echo_process()
      local host_out, port, pid = host_process("examples/filters/uppercase.lua",
        "--threads 2 --metrics 127.0.0.1:0 --upstream 127.0.0.1:" .. up_port)
      local url = wait_for(host_out, "metrics on (http://127%.0%.0%.1:%d+/metrics)")
      H.sh(("for i in $(seq 1 20); do printf x | timeout 5 nc -N 127.0.0.1 %s; done"):format(port))
      wait_for(host_out, ("end=eof"):rep(20, ".-"))
      -- Worker 2 publishes its figures once a second: read until all 20 are there.
      local series, sums, text
      for _ = 1, 60 do
        text = H.sh(("LD_PRELOAD= curl -s --max-time 5 %s"):format(url))
        series, sums = parse_metrics(text)
        if sums.fwx_connections_ended_total == 20 then break end
        os.execute("sleep 0.1")
      end
      os.execute("kill -TERM " .. pid)
      local _, log = wait_for(host_out, "exit=%d+")
      os.execute(("kill $(cat %s.pid) 2>/dev/null"):format(up_out))
      for _, p in ipairs({ up_out, up_out .. ".pid", host_out }) do os.remove(p) end
      assert.equal(20, sums.fwx_connections_ended_total, text)
      assert.equal(20, sums.fwx_connections_accepted_total, text)
      assert.equal(20, sums.fwx_bytes_total / 2, text) -- 1 byte each way each
      assert.is_not_nil(series['fwx_notifications_total{worker="1"}'], text)
      assert.is_not_nil(series['fwx_notifications_total{worker="2"}'], text)
      assert.truthy(log:find("fwx: stopped\nexit=0", 1, true), log)
    end)

    it("serves with --threads 2: both workers on one port, and SIGTERM drains them all", function()
      local up_out, up_port = echo_process()
      local host_out, port, pid = host_process("examples/filters/uppercase.lua",
        "--threads 2 --upstream 127.0.0.1:" .. up_port)
      wait_for(host_out, "listening on [^\n]*, 2 worker threads")
      -- Both listening sockets are the host's: SO_REUSEPORT, one per worker.
      local listeners = H.sh(("ss -ltnpH 'sport = :%s' | grep -c 'pid=%s'"):format(port, pid))
      local replies = H.sh(("for i in $(seq 1 20); do printf \"client $i\" | timeout 5 nc -N 127.0.0.1 %s; echo; done")
        :format(port))
      wait_for(host_out, ("end=eof"):rep(20, ".-"))
      os.execute("kill -TERM " .. pid)
      local _, log = wait_for(host_out, "exit=%d+")
      os.execute(("kill $(cat %s.pid) 2>/dev/null"):format(up_out))
      for _, p in ipairs({ up_out, up_out .. ".pid", host_out }) do os.remove(p) end
      assert.equal("2", listeners:match("%d+"))
      for i = 1, 20 do assert.truthy(replies:find("CLIENT " .. i .. "\n", 1, true), replies) end
      local ids = {}
      for id in log:gmatch("fwx: conn=(%d+) ") do
        assert.is_nil(ids[id], "connection id " .. id .. " twice")
        ids[id] = true
      end
      assert.truthy(log:find("worker 1: SIGTERM", 1, true), log)
      assert.truthy(log:find("worker 2: SIGTERM", 1, true), log)
      assert.truthy(log:find("fwx: stopped\nexit=0", 1, true), log)
    end)

    it("explains its usage and refuses a broken filter file", function()
      local out = H.sh(("env %s bin/fwx 2>&1; echo status=$?"):format(H.lua_command()))
      assert.truthy(out:find("usage: fwx run FILTER.lua", 1, true), out)
      assert.truthy(out:find("status=2", 1, true), out)
      local bad = os.tmpname()
      local f = io.open(bad, "w"); f:write("return { upstream = 'nowhere' }"); f:close()
      out = H.sh(("env %s bin/fwx run %s 2>&1; echo status=$?"):format(H.lua_command(), bad))
      os.remove(bad)
      assert.truthy(out:find("upstream must be \"host:port\", got \"nowhere\"", 1, true), out)
      assert.truthy(out:find("status=1", 1, true), out)
    end)
  end)
end)

describe("the host over UDP (protocol = \"udp\")", function()
  before_each(H.before)
  after_each(H.after)

  local udp_upstream, udp_client = HH.udp_upstream, HH.udp_client

  local function udp_proxy(filter, delay_ms)
    local fw = H.track(host.service())
    local up, ust = udp_upstream(fw, delay_ms)
    filter.upstream, filter.protocol, filter.listen = up, "udp", "127.0.0.1:0"
    local logs = {}
    filter.access_log = function(line) logs[#logs + 1] = line end
    filter.error_log = filter.error_log or function(line) logs[#logs + 1] = "ERROR " .. line end
    return host.start(filter, fw), logs, ust
  end

  it("carries datagrams both ways in a session per client, through on_data, and ends idle sessions", function()
    local closes, seen = {}, {}
    local server, logs, ust = udp_proxy({
      idle_timeout_ms = 150,
      on_data = function(conn, direction, buf)
        seen[#seen + 1] = ("%d %s %q"):format(conn.id, direction, tostring(buf))
        if direction == "request" then return tostring(buf):upper() end
      end,
      on_close = function(conn, result) closes[#closes + 1] = { conn.id, result.reason, result.error,
                                                                result.request_bytes, result.response_bytes } end,
    })
    local fw = server.fw
    local a = udp_client(fw, server.port, { "one", "" })  -- an empty datagram is a datagram
    H.run_until(fw, function() return #a.got == 2 end)
    local b = udp_client(fw, server.port, { "two" })
    H.run_until(fw, function() return #b.got == 1 end)
    assert.same({ "ONE", "" }, a.got)
    assert.same({ "TWO" }, b.got)
    assert.equal(2, server.connections) -- one session per client address
    H.run_until(fw, function() return server.connections == 0 end) -- idle: 150 ms
    a.socket:Close(); b.socket:Close()
    server.close(); ust.close()
    H.run(fw)
    table.sort(closes, function(x, y) return x[1] < y[1] end)
    assert.same({ { 1, "idle timeout", E.ERROR_SEM_TIMEOUT, 3, 3 }, { 2, "idle timeout", E.ERROR_SEM_TIMEOUT, 3, 3 } },
      closes)
    assert.equal(2, #logs)
    assert.truthy(logs[1]:find("request=3 response=3 end=idle timeout error=121", 1, true), logs[1])
    table.sort(seen) -- the order within a direction is kept (checked above); across, it races
    assert.same({ '1 request ""', '1 request "one"', '1 response ""', '1 response "ONE"',
                  '2 request "two"', '2 response "TWO"' }, seen)
    assert.same({ "ONE", "", "TWO" }, ust.received)
  end)

  it("drops on false, injects with conn:send, ends with conn:close; refuses past max_connections", function()
    local server, logs, ust = udp_proxy({
      max_connections = 1, idle_timeout_ms = 60000,
      on_data = function(conn, direction, buf)
        if direction ~= "request" then return end
        local text = tostring(buf)
        if text == "drop" then return false end
        if text == "inject" then conn:send("response", "injected") return false end
        if text == "close" then conn:close() end
      end,
    })
    local fw = server.fw
    local a = udp_client(fw, server.port, { "drop", "inject", "kept" })
    H.run_until(fw, function() return #a.got == 2 end)
    assert.same({ "injected", "kept" }, a.got)
    local b = udp_client(fw, server.port, { "refused" }) -- a second client address
    H.run_until(fw, function() return #logs == 1 end)
    assert.truthy(logs[1]:find("end=refused (max_connections 1)", 1, true), logs[1])
    a.socket:SendTo("close", "127.0.0.1", server.port)
    H.run_until(fw, function() return server.connections == 0 end)
    assert.truthy(logs[2]:find("end=closed by the filter", 1, true), logs[2])
    assert.same({ "kept" }, ust.received)
    local m = server.metrics()
    assert.same({ 2, 1, 1 }, { m.accepted, m.refused, m.ended["closed by the filter"] })
    a.socket:Close(); b.socket:Close()
    server.close(); ust.close()
    H.run(fw)
  end)

  it("a raising on_data ends its session (failure closed), or lets the datagram through (open)", function()
    for _, failure in ipairs({ "closed", "open" }) do
      local errors = {}
      local server, logs, ust = udp_proxy({
        failure = failure, idle_timeout_ms = 60000,
        on_data = function(_, direction, buf)
          if direction == "request" and tostring(buf) == "boom" then error("filter broke") end
        end,
        error_log = function(line) errors[#errors + 1] = line end,
      })
      local fw = server.fw
      local a = udp_client(fw, server.port, { "boom" })
      if failure == "closed" then
        H.run_until(fw, function() return server.connections == 0 and #logs == 1 end)
        assert.truthy(logs[1]:find("end=filter error", 1, true), logs[1])
        assert.same({}, ust.received)
      else
        H.run_until(fw, function() return #a.got == 1 end)
        assert.same({ "boom" }, a.got)
        server.shutdown(0)
        assert.truthy(logs[1]:find("end=shutdown", 1, true), logs[1])
      end
      assert.equal(1, #errors)
      assert.truthy(errors[1]:find("filter broke", 1, true), errors[1])
      a.socket:Close()
      server.close(); ust.close()
      H.run(fw)
    end
  end)

  it("server.close() ends the open sessions, whose answers could no longer go out; nothing raises", function()
    local errors = {}
    local server, logs, ust = udp_proxy({ idle_timeout_ms = 60000,
      error_log = function(line) errors[#errors + 1] = line end }, 50)
    local fw = server.fw
    local a = udp_client(fw, server.port, { "late" })
    H.run_until(fw, function() return #ust.received == 1 end)
    server.close() -- the upstream answers 50 ms later, to a session that is gone
    assert.equal(0, server.connections)
    assert.truthy(logs[1]:find("end=shutdown", 1, true), logs[1])
    H.run_for(fw, 150)
    assert.same({}, a.got)
    assert.same({}, errors)
    a.socket:Close(); ust.close()
    H.run(fw)
  end)

  it("a session whose handler raises fails alone; the others go on", function()
    local server, logs, ust = udp_proxy({ idle_timeout_ms = 60000, error_log = function() end,
      on_data = function(conn, direction)
        if direction == "response" and conn.id == 1 then error("only the first") end
      end })
    local fw = server.fw
    local a = udp_client(fw, server.port, { "a" })
    H.run_until(fw, function() return #logs == 1 end)
    assert.truthy(logs[1]:find("conn=1 .* end=filter error"), logs[1])
    local b = udp_client(fw, server.port, { "b1", "b2" })
    H.run_until(fw, function() return #b.got == 2 end)
    assert.same({}, a.got)
    assert.same({ "b1", "b2" }, b.got)
    assert.equal(1, server.connections)
    server.shutdown(0)
    a.socket:Close(); b.socket:Close(); ust.close()
    H.run(fw)
  end)

  it("refuses a protocol it does not know", function()
    H.raises('protocol must be "tcp" or "udp", got sctp', host.start,
      { upstream = "127.0.0.1:1", protocol = "sctp" })
  end)
end)
