local fwx = require "fwx"
local H = require "spec.helper"

describe("SetTimer", function()
  before_each(H.before)
  after_each(H.after)

  local new_fw, no_errors, assert_raises = H.collecting, H.no_errors, H.raises

  it("notifies once with (true, 0, userdata), later, from run()", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    local t = fw:SetTimer(10, sink, "ud")
    assert.equal(0, #calls)
    assert.is_true(t:IsActive())
    H.run(fw)
    assert.equal(1, #calls)
    assert.same({ true, 0, "ud", n = 3 }, calls[1])
    assert.is_false(t:IsActive())
  end)

  it("is never inline, even with 0 ms", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    fw:SetTimer(0, sink, 1)
    fw:SetTimer(0, sink, 2)
    assert.equal(0, #calls)
    H.run(fw)
    assert.equal(2, #calls)
    assert.same({ true, 0, 1, n = 3 }, calls[1])
    assert.same({ true, 0, 2, n = 3 }, calls[2])
  end)

  it("a timer set from a timer's sink is not run inside that sink", function()
    local fw, errors = new_fw()
    local order = {}
    fw:SetTimer(0, function()
      order[#order + 1] = "outer start"
      fw:SetTimer(0, function() order[#order + 1] = "inner" end, nil)
      order[#order + 1] = "outer end"
    end, nil)
    H.run(fw)
    no_errors(errors)
    assert.same({ "outer start", "outer end", "inner" }, order)
  end)

  it("does not fire early", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    fw:SetTimer(300, sink, "late")
    local idle = fw:run(100)
    assert.is_false(idle)
    assert.equal(0, #calls)
    H.run(fw)
    assert.equal(1, #calls)
    assert.same({ true, 0, "late", n = 3 }, calls[1])
  end)

  -- Wall-clock milliseconds (os.clock is CPU time).
  local function now_ms()
    local p = assert(io.popen("date +%s%N"))
    local ns = tonumber(p:read("l"))
    p:close()
    return ns / 1e6
  end

  it("is measured from SetTimer, even after a long stretch of Lua work", function()
    local fw = H.new()
    fw:SetTimer(0, function() end, nil)
    H.run(fw) -- the loop has looked at its clock
    local t0 = os.clock()
    while os.clock() - t0 < 0.15 do end -- 150 ms of Lua work, no I/O
    local set_at, fired_at = now_ms(), nil
    fw:SetTimer(200, function() fired_at = now_ms() end, nil)
    H.run(fw)
    assert.is_not_nil(fired_at)
    local elapsed = fired_at - set_at
    assert.is_true(elapsed >= 190, ("SetTimer(200) fired after %.1f ms"):format(elapsed))
  end)

  it("run(ms)'s own deadline holds after a long stretch of Lua work (checked in a child process)", function()
    -- A child, so that a run() that never returns cannot hang this suite.
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([=[
      local fwx = require "fwx"
      local fw = fwx.new{}
      local s = fw:CreateNetworkSocket("udp")
      assert(s:Bind("127.0.0.1", 0))
      s:Recv(nil, function() end, nil)  -- pending; nothing will ever arrive
      fw:run(1)                          -- the loop looks at its clock
      local t0 = os.clock()
      while os.clock() - t0 < 0.1 do end -- 100 ms of Lua work
      local idle, why = fw:run(50)       -- must return after about 50 ms
      io.write(tostring(idle), " ", tostring(why))
      fw:Close()
    ]=])
    f:close()
    local out = H.sh(("timeout 5 env %s %s 2>&1; echo \" rc=$?\""):format(H.lua_command(), script))
    os.remove(script)
    assert.equal("false timeout rc=0", (out:gsub("%s+$", "")))
  end)

  it("fires timers in the order they expire", function()
    local fw = H.new()
    local seen = {}
    local function sink(ok, err, ud) seen[#seen + 1] = ud end
    fw:SetTimer(60, sink, 60)
    fw:SetTimer(20, sink, 20)
    fw:SetTimer(40, sink, 40)
    fw:SetTimer(0, sink, 0)
    H.run(fw)
    assert.same({ 0, 20, 40, 60 }, seen)
  end)

  it("passes nil and false user data through", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    fw:SetTimer(0, sink)
    fw:SetTimer(0, sink, false)
    H.run(fw)
    assert.equal(2, #calls)
    assert.same({ true, 0, nil, n = 3 }, calls[1])
    assert.same({ true, 0, false, n = 3 }, calls[2])
  end)

  describe("Cancel", function()
    it("ends a pending timer with exactly one (false, 995, userdata), not inline", function()
      local fw = H.new()
      local sink, calls = H.recorder()
      local t = fw:SetTimer(60000, sink, "c")
      assert.is_true(t:Cancel())
      assert.equal(0, #calls)
      assert.is_false(t:IsActive())
      assert.is_false(t:Cancel()) -- already cancelled
      H.run(fw)
      assert.equal(1, #calls)
      assert.same({ false, 995, "c", n = 3 }, calls[1])
      assert.equal(fwx.errors.ERROR_OPERATION_ABORTED, calls[1][2])
    end)

    it("returns false on a finished timer and adds no notification", function()
      local fw = H.new()
      local sink, calls = H.recorder()
      local t = fw:SetTimer(1, sink, "f")
      H.run(fw)
      assert.equal(1, #calls)
      assert.is_false(t:Cancel())
      assert.is_false(t:Cancel())
      H.run(fw)
      assert.equal(1, #calls)
      assert.same({ true, 0, "f", n = 3 }, calls[1])
    end)

    it("from the timer's own sink returns false (it has finished)", function()
      local fw, errors = new_fw()
      local t, result
      local sink, calls = H.recorder()
      t = fw:SetTimer(5, function(...) sink(...); result = t:Cancel() end, "own")
      H.run(fw)
      no_errors(errors)
      assert.equal(1, #calls)
      assert.same({ true, 0, "own", n = 3 }, calls[1])
      assert.is_false(result)
    end)

    it("of a timer that expired but whose notification is still queued returns false", function()
      local fw, errors = new_fw()
      local late, result = nil, nil
      local sink, calls = H.recorder()
      -- Both expire in the same loop iteration; the first sink cancels the second,
      -- whose notification is already queued: too late, as CancelIoEx finds it.
      fw:SetTimer(20, function() result = late:Cancel() end, nil)
      late = fw:SetTimer(20, sink, "late")
      H.run(fw)
      no_errors(errors)
      assert.equal(1, #calls)
      if result then
        assert.same({ false, 995, "late", n = 3 }, calls[1])
      else
        assert.same({ true, 0, "late", n = 3 }, calls[1])
      end
    end)

    it("has a snake_case alias", function()
      local fw = H.new()
      local sink, calls = H.recorder()
      local t = fw:set_timer(60000, sink, 1)
      assert.equal(t.Cancel, t.cancel)
      assert.equal(t.IsActive, t.is_active)
      assert.is_true(t:cancel())
      H.run(fw)
      assert.equal(1, #calls)
      assert.same({ false, 995, 1, n = 3 }, calls[1])
    end)
  end)

  describe("repeating (repeat_ms)", function()
    it("notifies once per period, then exactly one 995 after Cancel()", function()
      local fw, errors = new_fw()
      local calls, t = {}, nil
      local inline_995
      t = fw:SetTimer(10, function(ok, err, ud)
        calls[#calls + 1] = { ok, err, ud }
        if ok and #calls == 5 then
          local n = #calls
          assert.is_true(t:Cancel())
          inline_995 = #calls ~= n
        end
      end, "rep", 10)
      assert.equal(0, #calls)
      H.run(fw)
      no_errors(errors)
      assert.is_false(inline_995)
      assert.equal(6, #calls)
      for i = 1, 5 do assert.same({ true, 0, "rep" }, calls[i]) end
      assert.same({ false, 995, "rep" }, calls[6])
      assert.is_false(t:IsActive())
      assert.is_false(t:Cancel())
    end)

    it("ticks at its period, not faster (counted against a one-shot timer)", function()
      local fw, errors = new_fw()
      local ticks, aborted, after_cancel = 0, 0, 0
      local cancelled = false
      local rep = fw:SetTimer(25, function(ok, err)
        if cancelled and ok then after_cancel = after_cancel + 1 end
        if ok then ticks = ticks + 1 elseif err == 995 then aborted = aborted + 1 end
      end, nil, 25)
      fw:SetTimer(265, function() cancelled = true; rep:Cancel() end, nil)
      H.run(fw)
      no_errors(errors)
      -- 265 ms at 25 ms a period is 10 periods. A busy machine may lose some, but a
      -- timer never fires more often than its period: libuv runs due timers in the
      -- order of their due times, so the 11th tick (due at 275 ms or later) is queued
      -- after the one-shot even when both come in one poll, and the cancel withdraws
      -- it. The first tick is due long before the one-shot, so it always comes.
      assert.is_true(ticks <= 10, ticks .. " ticks in 265 ms")
      assert.is_true(ticks >= 1, "no tick in 265 ms")
      assert.equal(1, aborted)
      assert.equal(0, after_cancel)
    end)

    it("withdraws a tick that was queued before Cancel(): no tick after it, one 995", function()
      local fw, errors = new_fw()
      local calls, rep = {}, nil
      rep = fw:SetTimer(10, function(ok, err)
        calls[#calls + 1] = err
        if #calls == 1 then
          -- Due 1 ms after this poll, before the next tick (10 ms): in the next poll
          -- it is queued first, the tick behind it; its handler cancels.
          fw:SetTimer(1, function() calls[#calls + 1] = "cancel"; assert(rep:Cancel()) end)
          local t0 = os.clock()
          while os.clock() - t0 < 0.03 do end -- both are due when this returns
        end
      end, nil, 10)
      H.run(fw)
      no_errors(errors)
      -- Ticks, then the cancel, then only the 995. (On a slow machine, TSan's, the
      -- first poll may outlast a period: libuv runs timers before and after its wait,
      -- so a second tick can come before the cancel. None may come after it.)
      local n = #calls
      assert.is_true(n >= 3, "calls: " .. table.concat(calls, ", "))
      assert.same({ "cancel", 995 }, { calls[n - 1], calls[n] })
      for i = 1, n - 2 do assert.equal(0, calls[i]) end
    end)

    it("with a first delay of 0 still waits for run()", function()
      local fw, errors = new_fw()
      local calls, t = {}, nil
      t = fw:SetTimer(0, function(ok, err, ud)
        calls[#calls + 1] = { ok, err, ud }
        if #calls == 3 then t:Cancel() end
      end, "z", 5)
      assert.equal(0, #calls)
      H.run(fw)
      no_errors(errors)
      assert.same({ { true, 0, "z" }, { true, 0, "z" }, { true, 0, "z" }, { false, 995, "z" } }, calls)
    end)

    it("cancelled before its first period gives only the 995", function()
      local fw = H.new()
      local sink, calls = H.recorder()
      local t = fw:SetTimer(50, sink, "r", 50)
      assert.is_true(t:Cancel())
      H.run(fw)
      assert.equal(1, #calls)
      assert.same({ false, 995, "r", n = 3 }, calls[1])
    end)
  end)

  describe("object sinks", function()
    it("call CompleteTimer(self, ok, err, userdata)", function()
      local fw, errors = new_fw()
      local obj = { calls = {} }
      function obj:CompleteTimer(...) self.calls[#self.calls + 1] = table.pack(self, ...) end
      fw:SetTimer(0, obj, "o")
      local t = fw:SetTimer(60000, obj, "o2")
      t:Cancel()
      H.run(fw)
      no_errors(errors)
      assert.equal(2, #obj.calls)
      -- order: the cancel's packet and the 0 ms expiry may come either way round
      table.sort(obj.calls, function(a, b) return tostring(a[4]) < tostring(b[4]) end)
      assert.same({ obj, true, 0, "o", n = 4 }, obj.calls[1])
      assert.same({ obj, false, 995, "o2", n = 4 }, obj.calls[2])
    end)

    it("works with an object whose method comes from a metatable", function()
      local fw = H.new()
      local Class = {}
      Class.__index = Class
      function Class:CompleteTimer(ok, err, ud) self.got = { ok, err, ud } end
      local obj = setmetatable({}, Class)
      fw:SetTimer(0, obj, 9)
      H.run(fw)
      assert.same({ true, 0, 9 }, obj.got)
    end)
  end)

  describe("misuse raises, naming the argument, and starts nothing", function()
    it("bad milliseconds, sink or repeat", function()
      local fw = H.new()
      local f = function() end
      assert_raises("bad argument #1 to 'SetTimer'", function() fw:SetTimer(-1, f) end)
      assert_raises("bad argument #1 to 'SetTimer'", function() fw:SetTimer("soon", f) end)
      assert_raises("bad argument #1 to 'SetTimer'", function() fw:SetTimer(1.5, f) end)
      assert_raises("bad argument #2 to 'SetTimer'", function() fw:SetTimer(1, nil) end)
      assert_raises("bad argument #2 to 'SetTimer'", function() fw:SetTimer(1, {}) end)
      assert_raises("CompleteTimer", function() fw:SetTimer(1, { CompleteTask = f }) end)
      assert_raises("bad argument #4 to 'SetTimer'", function() fw:SetTimer(1, f, nil, -5) end)
      assert.equal(0, fw:pending())
      assert.equal(0, fw:anchored())
    end)

    it("on a closed service", function()
      local fw = H.new()
      fw:Close()
      assert_raises("closed", function() fw:SetTimer(1, function() end) end)
    end)
  end)

  -- A 0 ms one-shot timer is due at once: its packet is queued when it is set (no libuv
  -- timer), yet it stays pending, and cancellable, until it is delivered.
  describe("of 0 ms", function()
    it("can be cancelled until it is delivered: exactly one 995", function()
      local fw, errors = new_fw()
      local sink, calls = H.recorder()
      local late, result, active_before
      fw:SetTimer(0, function()
        active_before = late:IsActive()
        result = late:Cancel()
      end)
      late = fw:SetTimer(0, sink, "late")
      assert.is_true(late:IsActive())
      H.run(fw)
      no_errors(errors)
      assert.is_true(active_before)
      assert.is_true(result)
      assert.equal(1, #calls)
      assert.same({ false, 995, "late", n = 3 }, calls[1])
      assert.is_false(late:IsActive())
      assert.is_false(late:Cancel())
    end)

    it("is inactive in its own sink, where Cancel() returns false", function()
      local fw, errors = new_fw()
      local t, seen
      t = fw:SetTimer(0, function(ok, err)
        seen = { ok, err, t:IsActive(), t:Cancel() }
      end)
      H.run(fw)
      no_errors(errors)
      assert.same({ true, 0, false, false }, seen)
    end)

    it("keeps the order it was set in among posted tasks, past what the ring holds", function()
      -- 3000 starts: the ring takes 1024 timers (or 1536 tasks), the anchor table the rest
      local fw, errors = new_fw()
      local seen = {}
      local function task(i) seen[#seen + 1] = i end
      local function timer(ok, err, i) assert.is_true(ok); seen[#seen + 1] = i end
      for i = 1, 3000 do
        if i % 3 == 0 then fw:PostTaskCompletion(task, i) else fw:SetTimer(0, timer, i) end
      end
      assert.equal(3000, fw:pending())
      assert.equal(3000, fw:anchored())
      collectgarbage(); collectgarbage()
      H.run(fw)
      no_errors(errors)
      assert.equal(3000, #seen)
      for i = 1, 3000 do assert.equal(i, seen[i]) end
      assert.equal(0, fw:anchored())
    end)

    it("Close() ends every one still queued with one 995, in order", function()
      local fw, errors = new_fw()
      local seen = {}
      for i = 1, 100 do
        fw:SetTimer(0, function(ok, err, ud) seen[#seen + 1] = { ok, err, ud } end, i)
      end
      fw:Close()
      no_errors(errors)
      assert.equal(100, #seen)
      for i = 1, 100 do assert.same({ false, 995, i }, seen[i]) end
      assert.equal(0, fw:pending())
      assert.equal(0, fw:anchored())
    end)

    it("a chain of them does not starve a socket or a longer timer", function()
      local fw, errors = new_fw()
      local a = fw:CreateNetworkSocket("udp")
      local b = fw:CreateNetworkSocket("udp")
      assert(a:Bind("127.0.0.1", 0)); assert(b:Bind("127.0.0.1", 0))
      local received, fired, chain = nil, false, 0
      b:Recv(nil, function(ok, err, buf) received = tostring(buf) end)
      fw:SetTimer(1, function() fired = true end)
      local function link()
        chain = chain + 1
        if (received == nil or not fired) and chain < 10000000 then fw:SetTimer(0, link) end
      end
      fw:SetTimer(0, link)
      a:SendTo("ping", "127.0.0.1", b:GetSockName().port)
      H.run(fw)
      no_errors(errors)
      assert.equal("ping", received)
      assert.is_true(fired)
      assert.is_true(chain < 10000000, "the chain ran to its bound")
      a:Close(); b:Close()
    end)

    it("is collected once delivered; one that is kept still answers after collections", function()
      local fw, errors = new_fw()
      local weak = setmetatable({}, { __mode = "v" })
      for i = 1, 50 do weak[i] = fw:SetTimer(0, function() end) end
      local kept = fw:SetTimer(0, function() end)
      H.run(fw)
      no_errors(errors)
      collectgarbage(); collectgarbage()
      assert.is_nil(next(weak))
      assert.is_false(kept:IsActive())
      assert.is_false(kept:Cancel())
      assert.matches("^fwx.timer %(done", tostring(kept))
    end)

    it("a service dropped with 0 ms timers queued is collected with them, without calling Lua", function()
      local called = false
      local weak = setmetatable({}, { __mode = "v" })
      do
        local fw = fwx.new{}
        for i = 1, 10 do weak[i] = fw:SetTimer(0, function() called = true end) end
        fw:PostTaskCompletion(function() called = true end)
        weak.fw = fw
      end
      collectgarbage(); collectgarbage(); collectgarbage()
      assert.is_nil(next(weak))
      assert.is_false(called)
    end)

    it("finalizers that post while 0 ms timers are being set do not upset the queue", function()
      -- Setting a timer allocates its box, which may run finalizers, which here post.
      local fw, errors = new_fw()
      local timers, tasks = {}, {}
      local mt = { __gc = function(o)
        fw:PostTaskCompletion(function(id) tasks[#tasks + 1] = id end, o.id)
      end }
      for i = 1, 1500 do
        setmetatable({ id = i }, mt) -- garbage at once
        fw:SetTimer(0, function(ok, err, id) timers[#timers + 1] = id end, i)
      end
      collectgarbage(); collectgarbage() -- the finalizers left
      H.run(fw)
      no_errors(errors)
      assert.equal(1500, #timers)
      for i = 1, 1500 do assert.equal(i, timers[i]) end
      table.sort(tasks)
      assert.equal(1500, #tasks)
      for i = 1, 1500 do assert.equal(i, tasks[i]) end
      assert.equal(0, fw:anchored())
    end)

    it("dropped, still fires once, its user data kept alive until then", function()
      local fw, errors = new_fw()
      local got
      do
        fw:SetTimer(0, setmetatable({}, { __index = {
          CompleteTimer = function(self, ok, err, ud) got = { ok, err, ud.tag } end } }), { tag = "kept" })
      end
      collectgarbage(); collectgarbage()
      H.run(fw)
      no_errors(errors)
      assert.same({ true, 0, "kept" }, got)
    end)
  end)

  describe("collection", function()
    it("dropping the timer object does not stop or lose it", function()
      local fw, errors = new_fw()
      local calls = {}
      do
        local ud = { tag = "kept" }
        fw:SetTimer(30, function(ok, err, u) calls[#calls + 1] = { ok, err, u.tag } end, ud)
      end
      local rounds = 0
      repeat
        collectgarbage()
        collectgarbage()
        rounds = rounds + 1
        fw:run(5)
      until #calls > 0 or rounds > 1000
      no_errors(errors)
      assert.same({ { true, 0, "kept" } }, calls)
      H.run(fw)
      assert.equal(1, #calls)
    end)

    it("a dropped repeating timer keeps ticking until fw:Close(), which gives one 995", function()
      local fw, errors = new_fw()
      local ticks, aborted, other = 0, 0, 0
      do
        fw:SetTimer(5, function(ok, err, ud)
          if ok and err == 0 and ud.tag == "r" then ticks = ticks + 1
          elseif not ok and err == 995 and ud.tag == "r" then aborted = aborted + 1
          else other = other + 1 end
        end, { tag = "r" }, 5)
      end
      local rounds = 0
      repeat
        collectgarbage()
        rounds = rounds + 1
        fw:run(5)
      until ticks >= 5 or rounds > 1000
      assert.equal(5, math.min(ticks, 5))
      assert.equal(0, aborted)
      fw:Close()
      no_errors(errors)
      assert.equal(1, aborted)
      assert.equal(0, other)
      assert.equal(0, fw:anchored())
    end)
  end)

  describe("fw:Close()", function()
    it("gives every pending timer exactly one 995 before it returns", function()
      local fw, errors = new_fw()
      local got = {}
      local function sink(ok, err, ud) got[#got + 1] = { ok, err, ud } end
      for i = 1, 100 do fw:SetTimer(60000 + i, sink, i) end
      local rep = fw:SetTimer(60000, sink, "rep", 10)
      local cancelled = fw:SetTimer(60000, sink, "cancelled")
      cancelled:Cancel()
      assert.equal(0, #got)
      fw:Close()
      no_errors(errors)
      assert.equal(102, #got)
      local seen = {}
      for _, c in ipairs(got) do
        assert.is_false(c[1])
        assert.equal(995, c[2])
        assert.is_nil(seen[c[3]], "two notifications for " .. tostring(c[3]))
        seen[c[3]] = true
      end
      for i = 1, 100 do assert.is_true(seen[i], "no notification for " .. i) end
      assert.is_true(seen.rep)
      assert.is_true(seen.cancelled)
      assert.is_false(rep:Cancel())
      assert.equal(0, fw:anchored())
    end)

    it("a timer set from a sink that runs during Close's drain raises", function()
      local fw, errors = new_fw()
      local result
      local sink, calls = H.recorder()
      fw:SetTimer(60000, function(ok, err, ud)
        sink(ok, err, ud)
        result = table.pack(pcall(fw.SetTimer, fw, 0, function() end, nil))
      end, "drain")
      fw:Close()
      no_errors(errors)
      assert.equal(1, #calls)
      assert.same({ false, 995, "drain", n = 3 }, calls[1])
      assert.is_false(result[1])
      assert.truthy(tostring(result[2]):find("closed", 1, true), tostring(result[2]))
      assert.equal(0, fw:pending())
      assert.equal(0, fw:anchored())
    end)

    it("a timer that already fired gets nothing more from Close", function()
      local fw = H.new()
      local sink, calls = H.recorder()
      fw:SetTimer(0, sink, "done")
      H.run(fw)
      fw:Close()
      assert.equal(1, #calls)
      assert.same({ true, 0, "done", n = 3 }, calls[1])
    end)
  end)
end)
