-- The service and its dispatcher: run/stop/Close, the drain, failing handlers,
-- aliases. These attack "exactly once" under shutdown and "a failing handler fails alone".
local fwx = require "fwx"
local H = require "spec.helper"

local E = fwx.errors

describe("service", function()
  before_each(H.before)
  after_each(H.after)

  it("run() returns true once nothing is pending, and can run again", function()
    local fw = H.new()
    assert.is_true(fw:run())
    local n = 0
    fw:PostTaskCompletion(function() n = n + 1 end)
    assert.is_true(fw:run())
    assert.equal(1, n)
    fw:PostTaskCompletion(function() n = n + 1 end)
    assert.is_true(fw:run())
    assert.equal(2, n)
  end)

  it("stop() returns after the notification in progress; the rest wait for the next run", function()
    local fw = H.new()
    local seen = {}
    for i = 1, 5 do
      fw:PostTaskCompletion(function(ud)
        seen[#seen + 1] = ud
        if ud == 2 then fw:stop() end
      end, i)
    end
    local idle, why = fw:run()
    assert.is_false(idle)
    assert.equal("stopped", why)
    assert.same({ 1, 2 }, seen)
    assert.equal(3, fw:pending())
    H.run(fw)
    assert.same({ 1, 2, 3, 4, 5 }, seen)
  end)

  it("run(ms) gives up with false, 'timeout' while something is still pending", function()
    local fw = H.new()
    local t = fw:SetTimer(60000, function() end)
    local idle, why = fw:run(30)
    assert.is_false(idle)
    assert.equal("timeout", why)
    t:Cancel()
    H.run(fw)
  end)

  it("run() from inside a handler raises, and only that handler fails", function()
    local errors = {}
    local fw = H.new{ on_error = function(msg) errors[#errors + 1] = msg end }
    local after = false
    fw:PostTaskCompletion(function() fw:run() end)
    fw:PostTaskCompletion(function() after = true end)
    H.run(fw)
    assert.equal(1, #errors)
    assert.matches("already running", errors[1])
    assert.is_true(after)
  end)

  it("a failing handler fails alone: on_error gets the message with a traceback and the object", function()
    local reports = {}
    local fw = H.new{ on_error = function(msg, obj, op) reports[#reports + 1] = { msg, obj, op } end }
    local ran = {}
    local function boom_here() error("boom") end
    for i = 1, 3 do
      fw:PostTaskCompletion(function(ud)
        ran[#ran + 1] = ud
        if ud == 2 then boom_here() end
      end, i)
    end
    local t = fw:SetTimer(0, function() error({ code = 7 }) end)
    H.run(fw)
    assert.same({ 1, 2, 3 }, ran)
    assert.equal(2, #reports)
    assert.matches("boom", reports[1][1])
    assert.matches("stack traceback", reports[1][1])
    assert.matches("boom_here", reports[1][1])
    assert.equal("task", reports[1][3])
    assert.equal(t, reports[2][2])
    assert.equal("timer", reports[2][3])
    assert.matches("error object is a table value", reports[2][1])
  end)

  it("without on_error, a failing handler is logged to stderr with its traceback and the port goes on", function()
    -- a child process, so that its stderr can be read
    local script = [[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      local fw = require("fwx").new{}
      fw:PostTaskCompletion(function() error("handler exploded") end)
      local after = false
      fw:PostTaskCompletion(function() after = true end)
      fw:run()
      io.write(after and "went on" or "stopped")
      fw:Close()
    ]]
    local f = io.open(os.tmpname(), "w")
    local tmp = os.tmpname()
    f:close()
    local sf = io.open(tmp, "w"); sf:write(script); sf:close()
    local out = H.sh(("timeout 10 env %s %s 2>&1"):format(H.lua_command(), tmp))
    os.remove(tmp)
    assert.matches("went on", out)
    assert.matches("handler exploded", out)
    assert.matches("stack traceback", out)
  end)

  it("an on_error that raises is itself reported, and the port still goes on", function()
    local fw = H.new{ on_error = function() error("on_error broke") end }
    local after = false
    fw:PostTaskCompletion(function() error("first") end)
    fw:PostTaskCompletion(function() after = true end)
    H.run(fw)
    assert.is_true(after)
  end)

  it("Close() ends hundreds of pending operations with exactly one 995 each", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local counts = { accept = 0, recv = 0, timer = 0, task = 0, connect = 0 }
    local errs = {}
    local function note(kind, err) counts[kind] = counts[kind] + 1; errs[#errs + 1] = err end
    local server_socks = {}
    local N = 100
    local accepted = 0
    local function on_accept(ok, err, l, s)
      if not ok then note("accept", err) return end
      accepted = accepted + 1
      server_socks[#server_socks + 1] = s
      s:Recv(nil, function(rok, rerr) note("recv", rerr) end)
      l:Accept(on_accept)
    end
    ls:Accept(on_accept)
    local clients = {}
    for i = 1, N do
      local c = fw:CreateNetworkSocket("tcp")
      clients[i] = c
      c:Connect("127.0.0.1", port, function(ok, err, s)
        assert.is_true(ok)
        s:Recv(nil, function(rok, rerr) note("recv", rerr) end)
      end)
    end
    H.run_until(fw, function() return accepted == N end)
    for i = 1, 200 do fw:SetTimer(60000, function(ok, err) note("timer", err) end) end
    for i = 1, 50 do fw:SetTimer(1000, function(ok, err) note("timer", err) end, nil, 1000) end
    -- queued but not yet delivered: Close delivers them (tasks carry no error)
    for i = 1, 100 do fw:PostTaskCompletion(function() counts.task = counts.task + 1 end) end
    assert.is_true(fw:pending() >= 2 * N + 1 + 250 + 100)
    fw:Close()
    assert.equal(0, fw:pending())
    assert.equal(1, counts.accept)
    assert.equal(2 * N, counts.recv)
    assert.equal(250, counts.timer)
    assert.equal(100, counts.task)
    for _, e in ipairs(errs) do assert.equal(E.ERROR_OPERATION_ABORTED, e) end
    assert.equal(0, fw:anchored())
  end)

  it("starting an operation during Close()'s drain raises; the drain completes", function()
    local fw = H.new()
    local raised, got = nil, 0
    fw:SetTimer(60000, function(ok, err)
      got = got + 1
      raised = select(2, pcall(fw.PostTaskCompletion, fw, function() got = got + 100 end))
    end)
    fw:Close()
    assert.equal(1, got)
    assert.matches("service is closed", raised)
  end)

  it("Close() from inside a handler drains everything, then run() returns", function()
    local fw = H.new()
    local got = {}
    fw:SetTimer(60000, function(ok, err) got[#got + 1] = "timer " .. err end)
    fw:PostTaskCompletion(function()
      got[#got + 1] = "first"
      fw:Close()
      got[#got + 1] = "closed"
    end)
    fw:PostTaskCompletion(function() got[#got + 1] = "second" end)
    local idle, why = fw:run(5000)
    assert.is_false(idle)
    assert.equal("stopped", why)
    assert.same({ "first", "second", "timer 995", "closed" }, got)
    assert.equal(0, fw:pending())
  end)

  it("after Close() every start raises, Close() is idempotent, and <close> closes", function()
    local fw = H.new()
    assert.is_true(fw:Close())
    assert.is_true(fw:Close())
    assert.has_error(function() fw:PostTaskCompletion(function() end) end, "service is closed")
    assert.has_error(function() fw:CreateNetworkSocket("tcp") end, "service is closed")
    assert.has_error(function() fw:SetTimer(1, function() end) end, "service is closed")
    assert.has_error(function() fw:run() end, "service is closed")
    local n = 0
    do
      local fw2 <close> = fwx.new{}
      fw2:SetTimer(60000, function(ok, err) n = err end)
    end
    assert.equal(995, n)
  end)

  it("has a snake_case alias for every SDK name", function()
    local fw = H.new()
    for _, name in ipairs{ "hook_to_completion_port", "create_overlapped", "create_network_socket",
                           "create_buffer", "create_const_buffer", "create_window_buffer",
                           "post_task_completion", "set_timer", "get_host_by_name", "close" } do
      assert.is_function(fw[name], name)
    end
    local s = fw:create_network_socket("tcp")
    for _, name in ipairs{ "bind", "listen", "shutdown", "close", "get_sock_name", "get_peer_name",
                           "set_sock_opt", "get_sock_opt" } do
      assert.is_function(s[name], name)
    end
    -- the asynchronous operations' lowercase names belong to the await style: not
    -- aliases of the callback style's; recv and send are its C functions (resume.c)
    for name, sdk in pairs{ accept = "Accept", connect = "Connect", recv = "Recv", send = "Send",
                            sendto = "SendTo" } do
      assert.is_function(s[name], name)
      assert.are_not.equal(s[sdk], s[name], name)
      local source = debug.getinfo(s[name], "S").source
      if name == "recv" or name == "send" then
        assert.equal("=[C]", source, name)
      else
        assert.is_true(source:find("await.lua", 1, true) ~= nil, name)
      end
    end
    assert.is_nil(s.send_to) -- no alias for SendTo: sendto is the await style's
    local ov = fw:create_overlapped()
    assert.is_function(ov.set_notification_interface)
    assert.is_function(ov.is_pending)
    s:close()
  end)

  it("a service dropped with operations pending is collected without calling Lua", function()
    local called = false
    do
      local fw = fwx.new{}
      local ls = fw:CreateNetworkSocket("tcp")
      assert(ls:Bind("127.0.0.1", 0)); assert(ls:Listen())
      ls:Accept(function() called = true end)
      fw:SetTimer(10, function() called = true end)
    end
    collectgarbage(); collectgarbage()
    assert.is_false(called)
  end)

  it("now() is the loop's time in ms: what timers count from; stats() counts deliveries", function()
    local fw = H.new()
    local t0 = fw:now()
    assert.equal("integer", math.type(t0))
    local at
    fw:SetTimer(30, function() at = fw:now() end)
    local before = fw:stats()
    H.run(fw)
    assert.is_true(at - t0 >= 30, ("%d ms"):format(at - t0))
    local after = fw:stats()
    assert.equal(before.notifications + 1, after.notifications)
    assert.is_true(after.lua_seconds >= before.lua_seconds)
    assert.is_true(after.polls > before.polls)
    fw:Close()
    H.raises("service is closed", fw.now, fw)
  end)
end)
