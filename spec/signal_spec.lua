-- fw:SetSignal: a watcher that notifies once per arrival of a signal, until Cancel()
-- (then one 995), built on the repeating timer. Real signals sent to this process with
-- kill(1); SIGWINCH and SIGURG, whose default action is to be ignored, so that a
-- signal arriving after a test cannot end the run.
local fwx = require "fwx"
local H = require "spec.helper"

local E = fwx.errors

local function send(name)
  assert(os.execute(("kill -%s %s"):format(name, H.pid())))
end

describe("fw:SetSignal", function()
  before_each(H.before)
  after_each(H.after)

  it("notifies on each arrival, never inside the call, until Cancel, then 995 once", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    local w = fw:SetSignal("SIGWINCH", sink, "ud")
    assert.is_true(w:IsActive())
    send("WINCH")
    assert.equal(0, #calls)
    H.run_until(fw, function() return #calls == 1 end)
    send("WINCH")
    H.run_until(fw, function() return #calls == 2 end)
    assert.is_true(w:Cancel())
    assert.is_false(w:Cancel())
    assert.is_false(w:IsActive())
    H.run(fw)
    assert.same({ true, 0, "ud", n = 3 }, calls[1])
    assert.same({ true, 0, "ud", n = 3 }, calls[2])
    assert.same({ false, E.ERROR_OPERATION_ABORTED, "ud", n = 3 }, calls[3])
    assert.equal(3, #calls)
  end)

  it("keeps the service running while it watches: run() is not idle", function()
    local fw = H.new()
    local w = fw:SetSignal(28, function() end) -- SIGWINCH by number
    local idle, why = fw:run(30)
    assert.is_false(idle)
    assert.equal("timeout", why)
    assert.equal(1, fw:pending())
    w:Cancel()
    H.run(fw)
  end)

  it("withdraws an arrival still queued when it is cancelled: only the 995 follows", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    local w = fw:SetSignal("SIGURG", sink)
    -- The next poll finds a 1 ms timer due and the signal arrived: timers run first,
    -- so the timer's notification is queued ahead of the signal's tick, and cancels
    -- the watcher while the tick waits behind it.
    fw:PostTaskCompletion(function()
      fw:SetTimer(1, function() w:Cancel() end)
      send("URG")
      local t = os.clock()
      while os.clock() - t < 0.02 do end
    end)
    H.run(fw)
    assert.equal(1, #calls)
    assert.same({ false, E.ERROR_OPERATION_ABORTED }, { calls[1][1], calls[1][2] })
  end)

  it("calls CompleteTimer on an object sink, and fw:Close() ends it with 995", function()
    local fw = H.new()
    local got = {}
    local obj = { CompleteTimer = function(self, ok, err, ud) got[#got + 1] = { ok, err, ud } end }
    fw:SetSignal("SIGWINCH", obj, "object")
    send("WINCH")
    H.run_until(fw, function() return #got == 1 end)
    fw:Close()
    assert.same({ { true, 0, "object" }, { false, E.ERROR_OPERATION_ABORTED, "object" } }, got)
  end)

  it("is anchored while active: dropped and collected, it still notifies", function()
    local fw = H.new()
    local n = 0
    do fw:SetSignal("SIGWINCH", function(ok) if ok then n = n + 1 end end) end
    for _ = 1, 3 do collectgarbage() end
    send("WINCH")
    H.run_until(fw, function() return n == 1 end)
    fw:Close()
  end)

  it("raises on a signal it cannot watch, a bad sink, a closed service", function()
    local fw = H.new()
    H.raises("unknown signal 'SIGNOPE'", function() fw:SetSignal("SIGNOPE", print) end)
    H.raises("not a signal that can be watched", function() fw:SetSignal(9, print) end)
    H.raises("not a signal that can be watched", function() fw:SetSignal(19, print) end)
    H.raises("not a signal that can be watched", function() fw:SetSignal(0, print) end)
    H.raises("signal name or number expected, got table", function() fw:SetSignal({}, print) end)
    H.raises("bad argument #2 to 'SetSignal'", function() fw:SetSignal("SIGWINCH", 42) end)
    assert.equal(0, fw:pending())
    local closed = fwx.new{}
    closed:Close()
    H.raises("closed", function() closed:SetSignal("SIGWINCH", print) end)
  end)
end)
