-- The await style (fw:spawn, s:recv(), ...): the callback style's operations, awaited
-- in a coroutine. Each case tries to break a promise of DESIGN.md: the coroutine is
-- resumed exactly once per awaited call (also under close, cancel, shutdown and a
-- timeout), never inside the call that started the work, nothing it waits with is
-- collected, an error in one coroutine fails alone, misuse raises and starts nothing,
-- and a timeout loses no bytes. Real sockets on 127.0.0.1, real pipes and files, nc.
local fwx = require "fwx"
local H = require "spec.helper"

local E = fwx.errors

-- A listening TCP socket on 127.0.0.1, any port.
local function listener(fw, backlog)
  local ls = fw:CreateNetworkSocket("tcp")
  assert(ls:Bind("127.0.0.1", 0))
  assert(ls:Listen(backlog or 16))
  return ls, ls:GetSockName().port
end

-- A connected pair (client, server side), made by awaiting in a coroutine; calls
-- body(client, server) in that coroutine.
local function with_pair(fw, body)
  fw:spawn(function()
    local ls, port = listener(fw)
    local c = fw:CreateNetworkSocket("tcp")
    local server
    fw:spawn(function()
      local ok, err, accepted = ls:accept()
      assert(ok, err)
      server = accepted
    end)
    assert.same({ true, 0 }, { c:connect("127.0.0.1", port) })
    while server == nil do fw:sleep(1) end
    ls:Close()
    body(c, server)
  end)
end

-- Two UDP sockets bound to 127.0.0.1.
local function udp_pair(fw)
  local a, b = fw:CreateNetworkSocket("udp"), fw:CreateNetworkSocket("udp")
  assert(a:Bind("127.0.0.1", 0)); assert(b:Bind("127.0.0.1", 0))
  return a, b
end

-- Send to a peer that never reads until a write waits in the socket's queue: every
-- send after it waits too, whatever the machine's speed (fire-and-forget Sends: no
-- notification to wait for; one that waits is pending).
local function clog(fw, c)
  local chunk = ("x"):rep(1024 * 1024)
  repeat c:Send(chunk) until (fw:pending(true).Send or 0) > 0
end

describe("the await style", function()
  before_each(H.before)
  after_each(H.after)

  describe("fw:spawn", function()
    it("starts the coroutine from the dispatcher, never inside spawn, with its arguments", function()
      local fw = H.new()
      local got
      local co = fw:spawn(function(...) got = table.pack(...) end, 1, nil, "three", nil)
      assert.equal("thread", type(co))
      assert.is_nil(got)
      assert.equal("suspended", coroutine.status(co))
      H.run(fw)
      assert.same({ n = 4, 1, nil, "three", nil }, got)
      assert.equal("dead", coroutine.status(co))
    end)

    it("runs coroutines in the order they were spawned, each to its first wait", function()
      local fw = H.new()
      local order = {}
      for i = 1, 3 do
        fw:spawn(function()
          order[#order + 1] = "start " .. i
          fw:sleep(0)
          order[#order + 1] = "end " .. i
        end)
      end
      H.run(fw)
      assert.same({ "start 1", "start 2", "start 3", "end 1", "end 2", "end 3" }, order)
    end)

    it("raises on a bad function and on a closed service, and starts nothing", function()
      local fw = H.new()
      H.raises("bad argument #1 to 'spawn' (function expected, got nil)", function() fw:spawn() end)
      H.raises("function expected, got string", function() fw:spawn("f") end)
      assert.equal(0, fw:pending())
      local closed = fwx.new{}
      closed:Close()
      H.raises("closed", function() closed:spawn(function() end) end)
    end)
  end)

  describe("awaited operations outside fw:spawn", function()
    it("raise a clear error and start nothing, in the main thread and in a plain coroutine", function()
      local fw = H.new()
      local s = fw:CreateNetworkSocket("tcp")
      local ls = listener(fw)
      H.raises("s:recv is the await style: call it inside fw:spawn(fn)", function() s:recv() end)
      H.raises("s:accept is the await style", function() ls:accept() end)
      H.raises("fw:sleep is the await style", function() fw:sleep(1) end)
      H.raises("s:send is the await style: call it inside fw:spawn(fn)", function() s:send("x") end)
      for what, call in pairs({
        ["s:accept"] = function() return ls:accept() end,
        ["s:recv"] = function() return s:recv() end,       -- recv and send are C functions:
        ["s:send"] = function() return s:send("x", 5) end, -- they look the coroutine up
      }) do
        local ok, err = coroutine.resume(coroutine.create(call))
        assert.is_false(ok)
        assert.truthy(err:find(what .. " is the await style", 1, true), err)
      end
      assert.equal(0, fw:pending())
      s:Close(); ls:Close()
    end)

    it("name the caller's line, as do bad timeouts inside fw:spawn", function()
      local fw = H.new()
      local s = fw:CreateNetworkSocket("tcp")
      local path = os.tmpname()
      local f = assert(io.open(path, "rb"))
      local h = fw:HookToCompletionPort(f)
      local outside = {
        function() s:send("x") end, function() s:recv() end, function() s:accept() end,
        function() s:connect("127.0.0.1", 1) end, function() h:read(fw:CreateBuffer(1)) end,
        function() h:write("x") end, function() fw:sleep(1) end, function() fw:pump(s, s) end,
      }
      for _, call in ipairs(outside) do
        local err = H.raises("is the await style", call)
        assert.truthy(err:find("^spec/await_spec.lua:%d+: "), err)
      end
      local inside = {}
      fw:spawn(function()
        for _, call in ipairs({
          function() s:send("x", -1) end, function() s:recv(nil, -1) end,
          function() s:accept(-1) end, function() h:read(fw:CreateBuffer(1), nil, -1) end,
          function() s:settimeout("x") end,
        }) do
          local ok, err = pcall(call)
          inside[#inside + 1] = not ok and err
        end
      end)
      H.run(fw)
      assert.equal(5, #inside)
      for _, err in ipairs(inside) do
        assert.truthy(err:find("^spec/await_spec.lua:%d+: bad argument #%d to '%a+' %(timeout in ms expected"), err)
      end
      s:Close(); h:Close(); f:close(); os.remove(path)
    end)
  end)

  describe("TCP", function()
    it("echoes: accept, connect, recv and send return the notification's values", function()
      local fw = H.new()
      local ls, port = listener(fw)
      local seen = {}
      fw:spawn(function()
        local ok, err, s, remote, loc = ls:accept()
        seen.accept = { ok, err, tostring(s):match("^fwx.socket") ~= nil,
                        remote.ip, loc.port }
        while true do
          local rok, rerr, buf = s:recv()
          assert(rok, rerr)
          if #buf == 0 then break end
          local sok, serr, sent = s:send(buf)
          assert.same({ true, 0 }, { sok, serr })
          assert.is_true(rawequal(sent, buf))
        end
        s:Close()
        ls:Close()
      end)
      fw:spawn(function()
        local c = fw:CreateNetworkSocket("tcp")
        seen.connect = { c:connect("127.0.0.1", port) }
        local got = {}
        for _, word in ipairs({ "one", "two", "three" }) do
          assert(c:send(word))
          local ok, err, buf = c:recv()
          seen.recv = { ok, err }
          got[#got + 1] = tostring(buf)
        end
        seen.echoed = got
        c:Shutdown()
        local ok, err, buf = c:recv()
        seen.eof = { ok, err, #buf }
        c:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, true, "127.0.0.1", port }, seen.accept)
      assert.same({ true, 0 }, seen.connect)
      assert.same({ true, 0 }, seen.recv)
      assert.same({ "one", "two", "three" }, seen.echoed)
      assert.same({ true, 0, 0 }, seen.eof)
    end)

    it("serves nc: an await-style echo server with a real client", function()
      local fw = H.new()
      local ls, port = listener(fw)
      fw:spawn(function()
        local ok, _, s = ls:accept()
        assert(ok)
        ls:Close()
        repeat
          local rok, _, buf = s:recv()
          if rok and #buf > 0 then s:send(buf) end
        until not rok or #buf == 0
        s:Close()
      end)
      local out = os.tmpname()
      os.execute(("(printf 'await echo' | timeout 5 nc -N 127.0.0.1 %d > %s) &"):format(port, out))
      H.run(fw)
      -- nc exits once the echo is back and the server closed; wait for its output.
      local got
      for _ = 1, 100 do
        local f = io.open(out); got = f:read("a"); f:close()
        if got == "await echo" then break end
        os.execute("sleep 0.05")
      end
      os.remove(out)
      assert.equal("await echo", got)
    end)

    it("receives into the caller's buffer", function()
      local fw = H.new()
      local got
      with_pair(fw, function(c, s)
        assert(c:send("0123456789"))
        local buf = fw:CreateBuffer(4)
        local ok, err, b = s:recv(buf)
        got = { ok, err, rawequal(b, buf), tostring(b) }
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, true, "0123" }, got)
    end)

    it("a connect that is refused returns false and 1225", function()
      local fw = H.new()
      local ls, port = listener(fw)
      ls:Close()
      local got
      fw:spawn(function()
        local c = fw:CreateNetworkSocket("tcp")
        got = { c:connect("127.0.0.1", port) }
        c:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_CONNECTION_REFUSED }, got)
    end)

    it("misuse raises at the caller's line, in the awaited call's name and argument numbers", function()
      local fw = H.new()
      local errs = {}
      local path = os.tmpname()
      local f = assert(io.open(path, "rb"))
      local h = fw:HookToCompletionPort(f)
      fw:spawn(function()
        local s = fw:CreateNetworkSocket("tcp")
        for _, call in ipairs({
          function() s:recv(123) end,
          function() s:send({}) end,
          function() s:recv(123, 100) end, -- with a timeout: the Lua side starts them
          function() s:send({}, 100) end,
          function() s:sendto("x", "127.0.0.1", "port") end,
          function() h:read(fw:CreateBuffer(4), -3) end,
          function() fw:pump(s, 1) end,
          -- fw:pump's third argument is a filter or a timeout, then a timeout and an
          -- idle limit
          function() fw:pump(s, s, "upper") end,
          function() fw:pump(s, s, 5, 5, 5) end,
          function() fw:pump(s, s, function() end, -1) end,
          function() fw:pump(s, s, nil, -1) end,
          function() fw:pump(s, s, -1) end,
          -- and the one after the timeout an idle limit in whole ms
          function() fw:pump(s, s, nil, nil, 1.5) end,
          function() fw:pump(s, s, 5, -1) end,
          function() fw:pump(s, s, function() end, nil, "soon") end,
        }) do
          local ok, err = pcall(call)
          errs[#errs + 1] = not ok and err
        end
        assert.equal(0, fw:pending())
        s:Close(); h:Close()
      end)
      H.run(fw)
      f:close(); os.remove(path)
      -- recv and send, every message's calls, are C functions (csrc/lua/resume.c):
      -- they raise in their own names as the others do, with no pcall to pay for
      local want = {
        "bad argument #1 to 'recv' (fwx.buffer expected, got number)",
        "bad argument #1 to 'send' (fwx.buffer or string expected, got table)",
        "bad argument #1 to 'recv' (fwx.buffer expected, got number)",
        "bad argument #1 to 'send' (fwx.buffer or string expected, got table)",
        "bad argument #3 to 'sendto' (number expected, got string)",
        "bad argument #2 to 'read' (offset must be 0 or more)",
        "bad argument #2 to 'pump' (fwx.socket expected, got number)",
        "bad argument #3 to 'pump' (function or timeout in ms expected, got string)",
        "bad argument #5 to 'pump' (no value expected after the idle limit, got number)",
        "bad argument #4 to 'pump' (timeout in ms expected, got -1)",
        "bad argument #4 to 'pump' (timeout in ms expected, got -1)",
        "bad argument #3 to 'pump' (timeout in ms expected, got -1)",
        "bad argument #5 to 'pump' (idle limit in whole ms expected, got 1.5)",
        "bad argument #4 to 'pump' (idle limit in whole ms expected, got -1)",
        "bad argument #5 to 'pump' (idle limit in whole ms expected, got string)",
      }
      for i, w in ipairs(want) do
        assert.truthy(errs[i], w)
        assert.truthy(errs[i]:find(w, 1, true), errs[i])
        assert.truthy(errs[i]:find("^spec/await_spec.lua:%d+: "), errs[i]) -- the caller's line
      end
    end)

    it("misuse inside a coroutine raises at the call, and the coroutine fails alone", function()
      local fw, errors = H.collecting()
      local after = {}
      fw:spawn(function()
        local s = fw:CreateNetworkSocket("tcp")
        s:Close()
        s:recv() -- closed: raises
        after.bad = true
      end)
      fw:spawn(function()
        fw:sleep(1)
        after.good = true
      end)
      assert.is_true(fw:run(H.TIMEOUT_MS))
      assert.is_nil(after.bad)
      assert.is_true(after.good)
      assert.equal(1, #errors)
      assert.truthy(errors[1]:find("closed"), errors[1])
      for i = #errors, 1, -1 do errors[i] = nil end
    end)
  end)

  describe("exactly once", function()
    it("a recv waiting when another coroutine closes the socket returns 995 once", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        fw:spawn(function()
          local r = { s:recv() }
          got[#got + 1] = r
        end)
        fw:sleep(5)
        s:Close()
        fw:sleep(5)
        c:Close()
      end)
      H.run(fw)
      assert.same({ { false, E.ERROR_OPERATION_ABORTED } }, got)
    end)

    it("fw:Close() resumes every waiting coroutine once with 995, timeouts or not", function()
      local fw = H.new()
      local ls = listener(fw)
      local got = {}
      -- (the result first: `got[#got + 1] = {...}` would take its index before waiting)
      fw:spawn(function() local r = { "accept", ls:accept() }; got[#got + 1] = r end)
      fw:spawn(function() local r = { "sleep", fw:sleep(60000) }; got[#got + 1] = r end)
      fw:spawn(function()
        local u = fw:CreateNetworkSocket("udp")
        assert(u:Bind("127.0.0.1", 0))
        local r = { "udp", u:recv(nil, 60000) }
        got[#got + 1] = r
        u:Close()
      end)
      H.run_for(fw, 20)
      assert.same({}, got)
      fw:Close()
      table.sort(got, function(a, b) return a[1] < b[1] end)
      assert.same({
        { "accept", false, E.ERROR_OPERATION_ABORTED },
        { "sleep", false, E.ERROR_OPERATION_ABORTED },
        { "udp", false, E.ERROR_OPERATION_ABORTED },
      }, got)
      ls:Close()
    end)

    it("a coroutine that yields outside an awaited operation is reported and not resumed", function()
      local fw, errors = H.collecting()
      local resumed = {}
      fw:spawn(function() -- at its start (resumed from Lua)
        coroutine.yield("stray")
        resumed[#resumed + 1] = "first"
      end)
      fw:spawn(function() -- after a send and a receive (resumed from C: core.wake_io)
        local u = fw:CreateNetworkSocket("udp")
        assert(u:Bind("127.0.0.1", 0))
        assert(u:sendto("to myself", u:GetSockName()))
        assert(u:recv())
        u:Close()
        coroutine.yield()
        resumed[#resumed + 1] = "second"
      end)
      assert.is_true(fw:run(H.TIMEOUT_MS))
      assert.same({}, resumed)
      assert.equal(2, #errors)
      for _, e in ipairs(errors) do
        assert.truthy(e:find("yielded outside an awaited operation", 1, true), e)
      end
      for i = #errors, 1, -1 do errors[i] = nil end
    end)
  end)

  describe("errors", function()
    it("go to on_error with the coroutine's traceback, and the others go on", function()
      local fw, errors = H.collecting()
      local done = 0
      local function failing_filter()
        fw:sleep(1)
        error("the filter broke")
      end
      fw:spawn(failing_filter)
      local function failing_after_recv() -- resumed from C (core.wake_io)
        local u = fw:CreateNetworkSocket("udp")
        assert(u:Bind("127.0.0.1", 0))
        assert(u:sendto("to myself", u:GetSockName()))
        local ok = u:recv()
        u:Close()
        error({ code = "an error object", ok = ok })
      end
      fw:spawn(failing_after_recv)
      for _ = 1, 3 do
        fw:spawn(function()
          fw:sleep(2)
          done = done + 1
        end)
      end
      assert.is_true(fw:run(H.TIMEOUT_MS))
      assert.equal(3, done)
      assert.equal(2, #errors)
      local text, object
      for _, e in ipairs(errors) do
        if type(e) == "string" and e:find("the filter broke", 1, true) then text = e else object = e end
      end
      -- the error where it was raised, then the coroutine's own stack
      assert.truthy(text:find("await_spec.lua:%d+: the filter broke\nstack traceback:"), text)
      local line = debug.getinfo(failing_filter, "S").linedefined
      assert.truthy(text:find("await_spec.lua:" .. line, 1, true), text)
      -- an error object raised after a receive (resumed from C) is reported too, as
      -- the dispatcher reports any handler's error object
      assert.truthy(object:find("error object is a table value", 1, true), object)
      for i = #errors, 1, -1 do errors[i] = nil end
    end)
  end)

  describe("timeouts", function()
    for _, proto in ipairs({ "tcp", "udp" }) do
      it(("a %s recv that times out returns false, 121; the socket stays usable and loses nothing")
          :format(proto), function()
        local fw = H.new()
        local got = {}
        -- receiver times out, then gets what send_late sends after it
        local function body(receiver, send_late, close)
          got.timeout = { receiver:recv(nil, 20) }
          assert(send_late("after the timeout"))
          local ok, err, buf = receiver:recv(nil, 5000)
          got.after = { ok, err, tostring(buf) }
          close()
        end
        if proto == "tcp" then
          with_pair(fw, function(c, s)
            body(s, function(x) return c:send(x) end, function() c:Close(); s:Close() end)
          end)
        else
          fw:spawn(function()
            local a, b = udp_pair(fw)
            body(a, function(x) return b:sendto(x, "127.0.0.1", a:GetSockName().port) end,
                 function() a:Close(); b:Close() end)
          end)
        end
        H.run(fw)
        assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.timeout)
        assert.same({ true, 0, "after the timeout" }, got.after)
      end)
    end

    it("bytes already there beat a 0 ms timeout, and the timer leaves nothing behind", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        assert(c:send("arm"))
        assert.equal("arm", tostring(select(3, s:recv()))) -- reading is armed from now on
        assert(c:send("ready"))
        fw:sleep(20) -- the bytes are read and held by the socket now
        local ok, err, buf = s:recv(nil, 0)
        got.first = { ok, err, tostring(buf) }
        got.second = { s:recv(nil, 0) }
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, "ready" }, got.first)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.second)
    end)

    it("an operation that completed before the timeout could cancel it keeps its result", function()
      local fw = H.new()
      local got
      with_pair(fw, function(c, s)
        fw:spawn(function()
          -- The bytes reach the kernel now; then this handler keeps the loop busy past
          -- the timeout, so that the next poll finds both the timer due and the bytes
          -- there: the timer's notification cancels a receive that has completed.
          assert(c:send("in time"))
          local t = os.clock()
          while os.clock() - t < 0.08 do end
        end)
        local ok, err, buf = s:recv(nil, 30)
        got = { ok, err, buf and tostring(buf) }
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, "in time" }, got)
    end)

    it("s:settimeout sets the default, an argument overrides it, nil clears it", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        assert.is_true(s:settimeout(10))
        got.default = { s:recv() }
        fw:spawn(function()
          fw:sleep(30)
          c:send("late")
        end)
        local ok, _, buf = s:recv(nil, 5000)
        got.override = { ok, tostring(buf) }
        s:settimeout(nil)
        fw:spawn(function()
          fw:sleep(30)
          c:send("later")
        end)
        ok, _, buf = s:recv()
        got.cleared = { ok, tostring(buf) }
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.default)
      assert.same({ true, "late" }, got.override)
      assert.same({ true, "later" }, got.cleared)
    end)

    it("an accept that times out leaves the listener usable", function()
      local fw = H.new()
      local ls, port = listener(fw)
      local got = {}
      fw:spawn(function()
        got.timeout = { ls:accept(10) }
        local c = fw:CreateNetworkSocket("tcp")
        fw:spawn(function() assert(c:connect("127.0.0.1", port)) end)
        local ok, err, s = ls:accept(5000)
        got.after = { ok, err }
        s:Close(); c:Close(); ls:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.timeout)
      assert.same({ true, 0 }, got.after)
    end)

    it("a send that times out closes the socket (a send cannot be taken back halfway)", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        -- The peer never reads: the socket buffers fill, and one send waits. (1 MiB
        -- at a time: one huge string would raise glibc's mmap threshold for the specs
        -- that run after this one, and their RSS figures with it.)
        local chunk, ok, err = ("x"):rep(1024 * 1024), true, 0
        for _ = 1, 256 do
          ok, err = c:send(chunk, 50)
          if not ok then break end
        end
        got.send = { ok, err, c:IsClosed() }
        s:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT, true }, got.send)
    end)

    it("an operation that ends before its timeout cancels the timer", function()
      local fw = H.new()
      local got
      with_pair(fw, function(c, s)
        assert(c:send("quick"))
        local ok, err, buf = s:recv(nil, 60000)
        got = { ok, err, tostring(buf) }
        c:Close(); s:Close()
      end)
      -- H.run returns only when nothing is pending: a timer left running would hold it.
      H.run(fw, 5000)
      assert.same({ true, 0, "quick" }, got)
    end)

    -- s:recv and s:send with a timeout have a deadline in the core (deadline.c): one
    -- timer per socket, armed at the nearer of its receive's and its send's, disarmed
    -- when the operation completes first.
    it("two timed sends waiting on one socket: 121 for the one that ran out, 995 for the other", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        -- A socket has one send deadline at a time: the second send to wait is timed by
        -- a timer of its own. The nearer deadline (50 ms) runs out and closes the
        -- socket under both.
        clog(fw, c)
        fw:spawn(function() -- runs once the send below waits
          got.second = { c:send("after", 5000) }
        end)
        fw:spawn(function() -- runs once that one waits too
          got.timers = fw:pending(true).timer -- the second's; the first has none
        end)
        got.first = { c:send("first", 50) } -- waits: the socket's deadline
        s:Close()
      end)
      H.run(fw)
      assert.equal(1, got.timers)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, { got.first[1], got.first[2] })
      assert.same({ false, E.ERROR_OPERATION_ABORTED }, { got.second[1], got.second[2] })
    end)

    it("a timed recv that completed leaves no deadline for the next, untimed one", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        assert(c:send("first"))
        got.first = { s:recv(nil, 30) }  -- completes well before its 30 ms
        fw:spawn(function()
          fw:sleep(80)                   -- past the first one's deadline
          c:send("second")
        end)
        got.second = { s:recv() }        -- no timeout: waits for it
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, "first" }, { got.first[1], got.first[2], tostring(got.first[3]) })
      assert.same({ true, 0, "second" }, { got.second[1], got.second[2], tostring(got.second[3]) })
    end)

    it("a timed recv whose socket is closed meanwhile says 995, once, and its deadline goes", function()
      local fw = H.new()
      local got = {}
      local resumed = 0
      with_pair(fw, function(c, s)
        fw:spawn(function()
          fw:sleep(10)
          s:Close()
        end)
        got.recv = { s:recv(nil, 40) }
        resumed = resumed + 1
        fw:sleep(80) -- past the deadline: nothing more may come of it
        got.after = resumed
        c:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_OPERATION_ABORTED }, got.recv)
      assert.equal(1, got.after)
      assert.equal(0, fw:pending())
    end)

    it("fw:Close() ends a timed receive and a timed send once each, with 995", function()
      local fw = H.new()
      local got = {}
      local sockets = {}
      with_pair(fw, function(c, s)
        -- Both deadlines on c's one timer: s never sends, and never reads.
        sockets = { c, s }
        clog(fw, c)
        fw:spawn(function() local r = { "recv", c:recv(nil, 60000) }; got[#got + 1] = r end)
        local r = { "send", c:send("waits", 60000) }
        got[#got + 1] = { r[1], r[2], r[3] }
      end)
      H.run_for(fw, 100) -- both wait now
      assert.same({}, got)
      fw:Close()
      table.sort(got, function(a, b) return a[1] < b[1] end)
      assert.same({
        { "recv", false, E.ERROR_OPERATION_ABORTED },
        { "send", false, E.ERROR_OPERATION_ABORTED },
      }, got)
      for _, x in ipairs(sockets) do x:Close() end
    end)

    it("a receive and a send deadline on one socket: each runs out on its own", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        -- The receive's deadline is the nearer; when it passes the send goes on
        -- waiting, until its own passes and closes the socket.
        clog(fw, c)
        fw:spawn(function() local r = { c:recv(nil, 30) }; got.recv = r end)
        local r = { c:send("waits", 150) }
        got.send = { r[1], r[2], c:IsClosed() }
        s:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.recv)
      assert.same({ false, E.ERROR_SEM_TIMEOUT, true }, got.send)
    end)

    it("a socket with a deadline is collected and closed like any other", function()
      local fw = H.new()
      local got = {}
      local weak = setmetatable({}, { __mode = "v" })
      fw:spawn(function()
        local ls, port = listener(fw)
        local held = {}
        fw:spawn(function() held.s = select(3, ls:accept()) end)
        local c = fw:CreateNetworkSocket("tcp")
        assert(c:connect("127.0.0.1", port))
        while held.s == nil do fw:sleep(1) end
        ls:Close()
        local s = held.s
        held.s = nil
        got.timeout = { s:recv(nil, 10) } -- s has a deadline timer now
        weak.s = s
        s = nil -- luacheck: ignore
        -- a socket's own receive keeps it until its handler returns, and the handler
        -- resumed this coroutine: yield once so that it lets go
        fw:sleep(1)
        collectgarbage(); collectgarbage()
        got.collected = weak.s == nil
        got.peer = { c:recv(nil, 5000) } -- the close that __gc made
        c:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.timeout)
      assert.is_true(got.collected)
      assert.is_true(got.peer[1])
      assert.equal(0, #got.peer[3])
    end)

    it("a fractional or huge timeout is rounded up to whole ms, and raises nothing", function()
      local fw = H.new()
      local got = {}
      with_pair(fw, function(c, s)
        local ls = listener(fw)
        got.accept = { ls:accept(10.5) }        -- a timer (SetTimer takes whole ms)
        got.pending = fw:pending()
        got.recv = { s:recv(nil, 10.5) }         -- the socket's deadline
        assert(c:send("in time"))
        local ok, err, buf = s:recv(nil, 1e300)  -- capped, not an error
        got.huge = { ok, err, tostring(buf) }
        ls:Close(); c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.accept)
      assert.equal(0, got.pending) -- the accept's timer and notification are done
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, got.recv)
      assert.same({ true, 0, "in time" }, got.huge)
    end)

    it("a bad timeout raises and starts nothing", function()
      local fw = H.new()
      local raised = {}
      with_pair(fw, function(c, s)
        for _, bad in ipairs({ -1, "10", 0 / 0, {} }) do
          local ok, err = pcall(s.recv, s, nil, bad)
          raised[#raised + 1] = not ok and err:match("timeout in ms expected") ~= nil
          ok, err = pcall(s.send, s, "x", bad)
          raised[#raised + 1] = not ok and err:match("timeout in ms expected") ~= nil
        end
        local ok, err = pcall(s.settimeout, s, -5)
        raised[#raised + 1] = not ok and err:match("timeout in ms expected") ~= nil
        assert.equal(0, fw:pending(true).Recv or 0)
        assert.equal(0, fw:pending(true).Send or 0)
        c:Close(); s:Close()
      end)
      H.run(fw)
      assert.same({ true, true, true, true, true, true, true, true, true }, raised)
    end)
  end)

  describe("nothing is collected while a coroutine waits", function()
    it("a coroutine held by nothing but its pending recv survives full collections", function()
      local fw = H.new()
      local done = false
      local port
      do
        local ls
        ls, port = listener(fw)
        fw:spawn(function()
          local _, _, s = ls:accept()
          ls:Close()
          local ok, _, buf = s:recv()
          done = ok and tostring(buf) == "finally"
          s:Close()
        end)
      end
      local c = fw:CreateNetworkSocket("tcp")
      c:Connect("127.0.0.1", port, function(ok) assert(ok) end)
      H.run_for(fw, 30)
      for _ = 1, 3 do collectgarbage() end
      c:Send("finally")
      H.run_until(fw, function() return done end)
      c:Close()
      H.run(fw)
      assert.is_true(done)
    end)
  end)

  describe("what an awaited send anchors", function()
    -- An awaited Recv or Send anchors only its coroutine and its buffer (the socket is
    -- held by the suspended call): these try to get either collected in flight.

    -- Read everything that comes on s; st.total, st.tail its last 4096 bytes, and
    -- st.ended once the end of stream (or an error) came.
    local function drain(s, st)
      st.total, st.tail = 0, ""
      local function on_recv(ok, _, buf)
        if not ok or #buf == 0 then st.ended = true return end
        st.total = st.total + #buf
        st.tail = (st.tail .. tostring(buf)):sub(-4096)
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
    end

    it("a coroutine held by nothing but its pending send survives full collections, and so does the buffer", function()
      local fw = H.new()
      local got, peer = {}, nil
      with_pair(fw, function(c, s)
        peer = s
        clog(fw, c) -- every send from here on waits for the peer
        local b = fw:CreateBuffer(4096)
        b:Append(("b"):rep(4096))
        got.sent = { c:send(b) }
        got.same = got.sent[3] == b
        c:Close()
      end)
      H.run_until(fw, function() return peer ~= nil and fw:pending(true).Send == 2 end)
      for _ = 1, 3 do collectgarbage() end
      local st = {}
      drain(peer, st)
      H.run_until(fw, function() return got.sent ~= nil end)
      assert.same({ true, 0 }, { got.sent[1], got.sent[2] })
      assert.is_true(got.same)
      H.run_until(fw, function() return st.ended end) -- c closed after its send
      assert.equal(("b"):rep(4096), st.tail)
      peer:Close()
      H.run(fw)
    end)

    it("a buffer whose send waits stays anchored when its coroutine is resumed by hand and ends", function()
      local fw, errors = H.collecting()
      local co, peer, client
      with_pair(fw, function(c, s)
        peer, client = s, c
        clog(fw, c)
        co = coroutine.running()
        local b = fw:CreateBuffer(4096)
        b:Append(("q"):rep(4096))
        c:send(b) -- resumed by hand below: returns at once, and the coroutine ends
      end)
      H.run_until(fw, function() return co ~= nil and fw:pending(true).Send == 2 end)
      assert.is_true(coroutine.resume(co)) -- misuse: nothing of fwx resumed it
      assert.equal("dead", coroutine.status(co))
      for _ = 1, 3 do collectgarbage() end -- the buffer is held by its anchor alone
      local st = {}
      drain(peer, st)
      H.run_until(fw, function() return #errors > 0 end)
      -- the send completed into a coroutine that no longer waits: reported, once
      assert.equal(1, #errors)
      assert.truthy(errors[1]:find("cannot resume the coroutine", 1, true), errors[1])
      for i = #errors, 1, -1 do errors[i] = nil end
      client:Shutdown()
      H.run_until(fw, function() return st.ended end)
      assert.equal(("q"):rep(4096), st.tail) -- its bytes, not a freed buffer's
      client:Close(); peer:Close()
      H.run(fw)
    end)
  end)

  describe("UDP", function()
    it("recv returns the sender's address; sendto answers it", function()
      local fw = H.new()
      local got = {}
      fw:spawn(function()
        local a, b = udp_pair(fw)
        local pa, pb = a:GetSockName().port, b:GetSockName().port
        local sok, serr, sent = b:sendto("ping", "127.0.0.1", pa)
        got.sent = { sok, serr, tostring(sent) }
        local ok, err, buf, from = a:recv()
        got.ping = { ok, err, tostring(buf), from.port == pb }
        assert(a:sendto("pong", from)) -- an address value: no port
        ok, err, buf = b:recv(nil, 5000)
        got.pong = { ok, err, tostring(buf) }
        a:Close(); b:Close()
      end)
      H.run(fw)
      assert.same({ true, 0, "ping" }, got.sent)
      assert.same({ true, 0, "ping", true }, got.ping)
      assert.same({ true, 0, "pong" }, got.pong)
    end)

    it("a sendto with a timeout takes the socket's deadline, not a timer", function()
      local fw = H.new()
      local got = {}
      fw:spawn(function()
        local a, b = udp_pair(fw)
        b:settimeout(5000)
        fw:spawn(function() -- runs while the sendto below waits for its notification
          got.timers = fw:pending(true).timer or 0
        end)
        local ok, err, sent = b:sendto("ping", "127.0.0.1", a:GetSockName().port)
        got.sent = { ok, err, tostring(sent) }
        local rok, rerr, buf = a:recv(nil, 5000)
        got.ping = { rok, rerr, tostring(buf) }
        -- misuse with a timeout raises in sendto's name and starts nothing
        got.misuse = select(2, pcall(b.sendto, b, "x", "127.0.0.1", "port", 100))
        a:Close(); b:Close()
      end)
      H.run(fw)
      assert.equal(0, got.timers)
      assert.same({ true, 0, "ping" }, got.sent)
      assert.same({ true, 0, "ping" }, got.ping)
      assert.truthy(got.misuse:find("bad argument #3 to 'sendto'", 1, true), got.misuse)
    end)
  end)

  describe("hooked handles", function()
    local temps = {}
    after_each(function()
      for _, p in ipairs(temps) do os.remove(p) end
      temps = {}
    end)

    it("write then read a file at offsets", function()
      local fw = H.new()
      local path = os.tmpname()
      temps[#temps + 1] = path
      local f = assert(io.open(path, "r+b"))
      local h = fw:HookToCompletionPort(f)
      local got = {}
      fw:spawn(function()
        got.write = { h:write("awaited bytes", 0) }
        local buf = fw:CreateBuffer(7)
        local ok, err, n = h:read(buf, 8)
        got.read = { ok, err, n, tostring(buf) }
        h:Close()
      end)
      H.run(fw)
      f:close()
      assert.same({ true, 0, 13 }, got.write)
      assert.same({ true, 0, 5, "bytes" }, got.read)
    end)

    it("a pipe read that times out is cancelled; the next read gets the bytes", function()
      local fw = H.new()
      local path = os.tmpname()
      os.remove(path)
      temps[#temps + 1] = path
      assert(os.execute("mkfifo '" .. path .. "'"))
      local f = assert(io.open(path, "r+"))
      local h = fw:HookToCompletionPort(f)
      local got = {}
      fw:spawn(function()
        local buf = fw:CreateBuffer(64)
        got.timeout = { h:read(buf, nil, 20) }
        fw:spawn(function() h:write("through") end)
        local ok, err, n = h:read(buf, nil, 5000)
        got.after = { ok, err, n, tostring(buf) }
        h:Close()
      end)
      H.run(fw)
      f:close()
      assert.same({ false, E.ERROR_SEM_TIMEOUT }, { got.timeout[1], got.timeout[2] })
      assert.same({ true, 0, 7, "through" }, got.after)
    end)
  end)

  describe("fw:pump", function()
    -- An upstream on the listener up, in a coroutine: it accepts one connection,
    -- echoes, and closes at the end of stream.
    local function spawn_echo(fw, up)
      fw:spawn(function()
        local _, _, s = up:accept()
        up:Close()
        repeat
          local ok, _, buf = s:recv()
          if ok and #buf > 0 then s:send(buf) end
        until not ok or #buf == 0
        s:Close()
      end)
    end

    -- A proxy in three coroutines: an upstream that echoes, the pump (pump_call(fw,
    -- a, b) returns what the awaited pump returned) and a client that sends `message`
    -- then reads to the end. Returns the pump's results and what the client read.
    local function proxied(fw, message, pump_call)
      local up, up_port = listener(fw)
      local front, front_port = listener(fw)
      local got = {}
      spawn_echo(fw, up)
      fw:spawn(function() -- the proxy
        local _, _, a = front:accept()
        front:Close()
        local b = fw:CreateNetworkSocket("tcp")
        assert(b:connect("127.0.0.1", up_port))
        got.pump = table.pack(pump_call(fw, a, b))
        a:Close(); b:Close()
      end)
      fw:spawn(function() -- the client
        local c = fw:CreateNetworkSocket("tcp")
        assert(c:connect("127.0.0.1", front_port))
        c:send(message)
        c:Shutdown()
        local parts = {}
        repeat
          local ok, _, buf = c:recv()
          if ok and #buf > 0 then parts[#parts + 1] = tostring(buf) end
        until not ok or #buf == 0
        got.client = table.concat(parts)
        c:Close()
      end)
      return got
    end

    it("awaits the core pump to the end of both directions", function()
      local fw = H.new()
      local got = proxied(fw, "through the pump", function(_, a, b) return fw:pump(a, b) end)
      H.run(fw)
      assert.equal("through the pump", got.client)
      assert.same({ n = 4, true, 0, 16, 16 }, got.pump)
    end)

    it("passes every chunk through filter(direction, buf), the callback style's less the user data", function()
      local fw = H.new()
      local seen = {}
      local got = proxied(fw, "through the filter", function(_, a, b)
        return fw:pump(a, b, function(...)
          local direction, buf = ...
          seen[#seen + 1] = { select("#", ...), direction, tostring(buf) }
          if direction == "request" then return tostring(buf):upper() end
          -- nil: the response goes on as it is
        end, H.TIMEOUT_MS)
      end)
      H.run(fw)
      assert.equal("THROUGH THE FILTER", got.client)
      assert.same({ n = 4, true, 0, 18, 18 }, got.pump)
      -- every chunk, with two arguments; the bytes may come in more than one chunk
      local text = { request = {}, response = {} }
      for _, v in ipairs(seen) do
        assert.equal(2, v[1])
        table.insert(text[v[2]], v[3])
      end
      assert.equal("through the filter", table.concat(text.request))
      assert.equal("THROUGH THE FILTER", table.concat(text.response))
    end)

    it("a filter that raises ends its pump with 1236, reported once, and the coroutine goes on", function()
      local fw, errors = H.collecting()
      local got = proxied(fw, "boom", function(_, a, b)
        return fw:pump(a, b, function() error("filter broke") end)
      end)
      assert.is_true(fw:run(H.TIMEOUT_MS))
      -- the counts are the bytes the filter was given: the request's 4, then it raised
      assert.same({ n = 4, false, E.ERROR_CONNECTION_ABORTED, 4, 0 }, got.pump)
      assert.equal(1, #errors)
      assert.truthy(errors[1]:find("filter broke", 1, true), errors[1])
      for i = #errors, 1, -1 do errors[i] = nil end
    end)

    it("ends at its idle limit with false, 121, not while bytes keep moving, and leaves the sockets open", function()
      for _, with_filter in ipairs({ false, true }) do
        local fw = H.new()
        local front, front_port = listener(fw)
        local up, up_port = listener(fw)
        local got = {}
        spawn_echo(fw, up)
        fw:spawn(function()
          local _, _, a = front:accept()
          front:Close()
          local b = fw:CreateNetworkSocket("tcp")
          assert(b:connect("127.0.0.1", up_port))
          if with_filter then
            got.pump = { fw:pump(a, b, function() end, nil, 150) }
          else
            got.pump = { fw:pump(a, b, nil, nil, 150) }
          end
          got.open = not a:IsClosed() and not b:IsClosed()
          a:Close(); b:Close()
        end)
        fw:spawn(function() -- a byte every 25 ms for 200 ms, longer than the limit
          local c = fw:CreateNetworkSocket("tcp")
          assert(c:connect("127.0.0.1", front_port))
          local echoed = 0
          for _ = 1, 8 do
            c:send("x")
            local ok, _, buf = c:recv()
            if ok then echoed = echoed + #buf end
            fw:sleep(25)
          end
          got.echoed = echoed
          local ok, _, buf = c:recv() -- then quiet, until the proxy closes
          got.client_ended = not ok or #buf == 0
          c:Close()
        end)
        H.run(fw)
        assert.same({ false, E.ERROR_SEM_TIMEOUT, 8, 8 }, got.pump)
        assert.equal(8, got.echoed)
        assert.is_true(got.open)
        assert.is_true(got.client_ended)
      end
    end)

    it("times out with a filter as without: false, 121, and both sockets closed", function()
      for _, with_filter in ipairs({ false, true }) do
        local fw = H.new()
        local front, front_port = listener(fw)
        local up, up_port = listener(fw)
        local got = {}
        fw:spawn(function() -- an upstream that accepts and waits for the end
          local _, _, s = up:accept()
          up:Close()
          local ok, _, buf = s:recv()
          got.upstream_ended = not ok or #buf == 0
          s:Close()
        end)
        fw:spawn(function()
          local _, _, a = front:accept()
          front:Close()
          local b = fw:CreateNetworkSocket("tcp")
          assert(b:connect("127.0.0.1", up_port))
          if with_filter then
            got.pump = { fw:pump(a, b, function() end, 30) }
          else
            got.pump = { fw:pump(a, b, 30) }
          end
          got.closed = { pcall(a.Send, a, "x") }
        end)
        fw:spawn(function() -- a client that sends nothing and waits for the end
          local c = fw:CreateNetworkSocket("tcp")
          assert(c:connect("127.0.0.1", front_port))
          local ok, _, buf = c:recv()
          got.client_ended = not ok or #buf == 0
          c:Close()
        end)
        H.run(fw)
        assert.same({ false, E.ERROR_SEM_TIMEOUT, 0, 0 }, got.pump)
        assert.is_false(got.closed[1])
        assert.truthy(tostring(got.closed[2]):find("closed"), got.closed[2])
        -- both peers saw their connection end (a reset or an end of stream)
        assert.is_true(got.client_ended)
        assert.is_true(got.upstream_ended)
      end
    end)
  end)
end)
