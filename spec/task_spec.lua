local fwx = require "fwx"
local H = require "spec.helper"

describe("PostTaskCompletion", function()
  before_each(H.before)
  after_each(H.after)

  it("never runs inline: the sink runs from run(), later", function()
    local fw = H.new()
    local ran = false
    fw:PostTaskCompletion(function(ud) ran = ud end, "x")
    assert.is_false(ran)
    H.run(fw)
    assert.equal("x", ran)
  end)

  it("delivers one notification per post, in order, never coalesced", function()
    local fw = H.new()
    local seen = {}
    for i = 1, 1000 do fw:PostTaskCompletion(function(ud) seen[#seen + 1] = ud end, i) end
    H.run(fw)
    assert.equal(1000, #seen)
    for i = 1, 1000 do assert.equal(i, seen[i]) end
  end)

  it("calls CompleteTask on an object sink", function()
    local fw = H.new()
    local obj = { got = nil }
    function obj:CompleteTask(ud) self.got = ud end
    fw:post_task_completion(obj, 42)
    H.run(fw)
    assert.equal(42, obj.got)
  end)

  it("rejects a sink that is neither a function nor an object with CompleteTask", function()
    local fw = H.new()
    assert.has_error(function() fw:PostTaskCompletion({}, 1) end,
      "bad argument #1 to 'PostTaskCompletion' (sink must be a function or an object with a CompleteTask method)")
    assert.equal(0, fw:pending())
  end)

  it("keeps the order of posts across dispatch rounds, stop() and sinks that post", function()
    local fw = H.new()
    local seen = {}
    local function sink(i)
      seen[#seen + 1] = i
      if i <= 600 then fw:PostTaskCompletion(sink, i + 600) end
      if i == 300 then fw:stop() end
    end
    for i = 1, 600 do fw:PostTaskCompletion(sink, i) end
    assert.equal(600, fw:pending())
    assert.equal(600, fw:anchored())
    local idle, why = fw:run()
    assert.is_false(idle)
    assert.equal("stopped", why)
    assert.equal(300, #seen)
    H.run(fw)
    assert.equal(1200, #seen)
    for i = 1, 1200 do assert.equal(i, seen[i]) end
    assert.equal(0, fw:anchored())
  end)

  it("past what the ring holds, posts still come once each and in order", function()
    -- The ring takes 3072 values, 1536 tasks; the rest go through the anchor table.
    -- Sinks that post while both are in use interleave the two paths.
    local fw = H.new()
    local N = 3000
    local seen, next_id = {}, N
    local function sink(ud)
      seen[#seen + 1] = ud.id
      if ud.id % 7 == 0 and next_id < N + 1000 then
        next_id = next_id + 1
        fw:PostTaskCompletion(sink, { id = next_id })
      end
    end
    for i = 1, N do fw:PostTaskCompletion(sink, { id = i }) end
    assert.equal(N, fw:pending())
    assert.equal(N, fw:anchored())
    collectgarbage(); collectgarbage() -- the queue alone holds the user data
    H.run(fw)
    assert.equal(next_id, #seen)
    for i = 1, next_id do assert.equal(i, seen[i]) end
    assert.equal(0, fw:pending())
    assert.equal(0, fw:anchored())
  end)

  it("a chain of tasks does not starve a socket or a timer", function()
    -- Each task posts the next until the datagram and the timer are in. The bound only
    -- ends the chain if they never come; they must come long before it.
    local fw = H.new()
    local a = fw:CreateNetworkSocket("udp")
    local b = fw:CreateNetworkSocket("udp")
    assert(a:Bind("127.0.0.1", 0)); assert(b:Bind("127.0.0.1", 0))
    local received, fired, chain = nil, false, 0
    b:Recv(nil, function(ok, err, buf) received = tostring(buf) end)
    fw:SetTimer(1, function() fired = true end)
    local function link()
      chain = chain + 1
      if (received == nil or not fired) and chain < 10000000 then fw:PostTaskCompletion(link) end
    end
    fw:PostTaskCompletion(link)
    a:SendTo("ping", "127.0.0.1", b:GetSockName().port)
    H.run(fw)
    assert.equal("ping", received)
    assert.is_true(fired)
    assert.is_true(chain < 10000000, "the chain ran to its bound")
    a:Close(); b:Close()
  end)

  it("objects made for packets that follow a task in its round are whole", function()
    -- While a chain runs, every round begins with a task, so the accepted socket, the
    -- received buffer and the sender's address are made inside the round's one pcall.
    local fw, errors = H.collecting()
    local ls, port = H.listener(fw)
    local u1 = fw:CreateNetworkSocket("udp")
    local u2 = fw:CreateNetworkSocket("udp")
    assert(u1:Bind("127.0.0.1", 0)); assert(u2:Bind("127.0.0.1", 0))
    local got = {}
    ls:Accept(function(ok, err, l, s, remote)
      got.accepted = s.GetPeerName ~= nil and tostring(remote):match("^127%.0%.0%.1:%d+$") ~= nil
      s:Close()
    end)
    u2:Recv(nil, function(ok, err, buf, ud, from)
      got.buffer = tostring(buf) == "ping" and #buf == 4 and buf.ReadAt ~= nil
      got.address = tostring(from) == "127.0.0.1:" .. u1:GetSockName().port
    end)
    local chain = 0
    local function link()
      chain = chain + 1
      local done = got.accepted ~= nil and got.buffer ~= nil
      if not done and chain < 10000000 then fw:PostTaskCompletion(link) end
    end
    fw:PostTaskCompletion(link)
    local c = fw:CreateNetworkSocket("tcp")
    c:Connect("127.0.0.1", port, function(ok, err, s) s:Close() end)
    u1:SendTo("ping", "127.0.0.1", u2:GetSockName().port)
    H.run(fw)
    H.no_errors(errors)
    assert.same({ accepted = true, buffer = true, address = true }, got)
    ls:Close(); u1:Close(); u2:Close()
  end)

  it("Close() during a chain delivers every queued task once; a post from the drain raises", function()
    local fw = H.new()
    local seen, raised = {}, {}
    local function sink(i)
      seen[#seen + 1] = i
      local ok, err = pcall(fw.PostTaskCompletion, fw, sink, i + 1)
      if not ok then raised[#raised + 1] = err end
      if i == 50 then
        for j = 1, 300 do fw:PostTaskCompletion(function(k) seen[#seen + 1] = k end, 1000 + j) end
        fw:Close()
      end
    end
    fw:PostTaskCompletion(sink, 1)
    local idle, why = fw:run()
    assert.is_false(idle)
    assert.equal("stopped", why)
    -- 1..50 ran; 51 was queued before Close and 1001..1300 too; 51's own post raised
    assert.equal(351, #seen)
    for i = 1, 51 do assert.equal(i, seen[i]) end
    for j = 1, 300 do assert.equal(1000 + j, seen[51 + j]) end
    assert.equal(1, #raised)
    assert.matches("service is closed", raised[1])
    assert.equal(0, fw:pending())
    assert.equal(0, fw:anchored())
  end)

  it("a finalizer that closes the service in the middle of a chain: every queued task once, in order", function()
    local fw = H.new()
    local seen, closed = {}, false
    setmetatable({}, { __gc = function() closed = true; fw:Close() end }) -- garbage now
    local function echo(i) seen[#seen + 1] = "e" .. i end
    local function link(i)
      seen[#seen + 1] = "l" .. i
      if i >= 100000 then return end
      if not pcall(fw.PostTaskCompletion, fw, echo, i) then return end
      pcall(fw.PostTaskCompletion, fw, link, i + 1)
      local junk = {}
      for k = 1, 50 do junk[k] = {} end -- the collector, and so the finalizer, comes
    end
    fw:PostTaskCompletion(link, 1)
    local idle, why = fw:run()
    assert.is_false(idle)
    assert.equal("stopped", why)
    assert.is_true(closed)
    -- l1 e1 l2 e2 ...: the drain delivered what was queued, once, in order. The
    -- finalizer may run between a link's two posts, so the run ends after an "e" or an
    -- "l" (a collection step can come at any allocation).
    assert.is_true(#seen >= 2 and #seen < 199999, "the collector never came")
    for i, v in ipairs(seen) do
      assert.equal((i % 2 == 1 and "l" or "e") .. ((i + 1) // 2), v)
    end
    assert.equal(0, fw:pending())
    assert.equal(0, fw:anchored())
  end)

  it("an error in one task of a chain goes to on_error with its traceback; the chain goes on", function()
    local reports = {}
    local fw = H.new{ on_error = function(msg, obj, op) reports[#reports + 1] = { msg, obj, op } end }
    local seen = {}
    local function explode(i) error("task " .. i .. " exploded") end
    local function link(i)
      seen[#seen + 1] = i
      if i < 10 then fw:PostTaskCompletion(link, i + 1) end
      if i % 2 == 1 then explode(i) end
    end
    fw:PostTaskCompletion(link, 1)
    H.run(fw)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, seen)
    assert.equal(5, #reports)
    for n, r in ipairs(reports) do
      assert.matches("task " .. (2 * n - 1) .. " exploded", r[1])
      assert.matches("stack traceback", r[1])
      assert.matches("explode", r[1])
      assert.is_nil(r[2])
      assert.equal("task", r[3])
    end
  end)

  it("errors in a round that mixes tasks, 0 ms timers and I/O are each reported once, as theirs", function()
    -- Tasks run unprotected inside one protected call per round: a raising task
    -- unwinds it, and the round must go on from the next packet, every kind included.
    local reports = {}
    local fw = H.new{ on_error = function(msg, obj, op) reports[#reports + 1] = { op = op, obj = obj, msg = msg } end }
    local a = fw:CreateNetworkSocket("udp")
    local b = fw:CreateNetworkSocket("udp")
    assert(a:Bind("127.0.0.1", 0)); assert(b:Bind("127.0.0.1", 0))
    local seen, timers = {}, {}
    b:Recv(nil, function(ok, err, buf) seen[#seen + 1] = "recv"; error("recv fails") end)
    a:SendTo("x", "127.0.0.1", b:GetSockName().port)
    for i = 1, 600 do
      if i % 3 == 0 then
        timers[i] = fw:SetTimer(0, function() seen[#seen + 1] = i; if i % 2 == 0 then error("timer " .. i) end end)
      else
        fw:PostTaskCompletion(function() seen[#seen + 1] = i; if i % 2 == 0 then error({ task = i }) end end)
      end
    end
    H.run(fw)
    local numbers, recvs = {}, 0
    for _, v in ipairs(seen) do
      if v == "recv" then recvs = recvs + 1 else numbers[#numbers + 1] = v end
    end
    assert.equal(1, recvs)
    assert.equal(600, #numbers)
    for i = 1, 600 do assert.equal(i, numbers[i]) end
    local count = { task = 0, timer = 0, Recv = 0 }
    for _, r in ipairs(reports) do
      count[r.op] = count[r.op] + 1
      assert.matches("stack traceback", r.msg)
      if r.op == "timer" then assert.equal(timers[tonumber(r.msg:match("timer (%d+)"))], r.obj) end
      if r.op == "task" then assert.is_nil(r.obj); assert.matches("error object is a table value", r.msg) end
      if r.op == "Recv" then assert.equal(b, r.obj) end
    end
    assert.same({ task = 200, timer = 100, Recv = 1 }, count)
    a:Close(); b:Close()
  end)

  it("passes nil and false user data, and calls a CompleteTask that comes from a metatable", function()
    local fw = H.new()
    local got = {}
    local class = { __index = { CompleteTask = function(self, ud) got[#got + 1] = { self, ud } end } }
    local obj = setmetatable({}, class)
    fw:PostTaskCompletion(obj)
    fw:PostTaskCompletion(obj, false)
    fw:PostTaskCompletion(function(...) got[#got + 1] = table.pack(...) end)
    H.run(fw)
    assert.equal(3, #got)
    assert.equal(obj, got[1][1]); assert.is_nil(got[1][2])
    assert.equal(obj, got[2][1]); assert.is_false(got[2][2])
    assert.equal(1, got[3].n); assert.is_nil(got[3][1])
  end)

  it("keeps sinks and user data alive while queued, and lets them go once delivered", function()
    local fw = H.new()
    local weak = setmetatable({}, { __mode = "v" })
    local delivered = 0
    do
      for i = 1, 20 do
        local ud = { i = i }
        local function sink(u) assert.equal(i, u.i); delivered = delivered + 1 end
        weak[#weak + 1] = ud
        weak[#weak + 1] = sink
        fw:PostTaskCompletion(sink, ud)
      end
    end
    collectgarbage(); collectgarbage()
    assert.equal(40, #weak)
    H.run(fw)
    assert.equal(20, delivered)
    collectgarbage(); collectgarbage()
    assert.is_nil(next(weak))
  end)
end)
