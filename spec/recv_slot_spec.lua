-- A socket's own receive (Recv(nil)) holds the socket in a keep slot of its service.
-- The slot is kept through the delivery, so that a handler that receives again reuses
-- it, and let go after the handler when it did not (csrc/lua/dispatch.c, deliver).
-- These attack that: handlers that receive again and then close, switch to a
-- receive into their own buffer, fail to start the next receive, raise, or close the
-- whole service; and many sockets whose slots are let go and taken again, each
-- notification checked to reach its own socket. fw:anchored() counts the slots held;
-- the helper checks it is 0 after every test.
local H = require "spec.helper"

describe("a socket's own receive and its keep slot", function()
  before_each(H.before)
  after_each(H.after)

  local pairs_of = H.pairs

  it("is held while a receive is pending and let go when the handler does not receive again", function()
    local fw = H.new()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local got = {}
    local function on_recv(ok, err, b)
      assert(ok, err)
      got[#got + 1] = tostring(b)
      if #got < 3 then s:Recv(nil, on_recv) end
    end
    s:Recv(nil, on_recv)
    assert.equal(1, fw:anchored())
    for i = 1, 3 do
      c:Send("m" .. i)
      H.run_until(fw, function() return #got == i end)
      assert.equal(i < 3 and 1 or 0, fw:anchored())
    end
    assert.same({ "m1", "m2", "m3" }, got)
    s:Close(); c:Close()
    H.run(fw)
  end)

  -- The sink and user data stay in the socket between receives; a receive called
  -- without user data (three arguments, or nil) must not see the one before's.
  it("gives each receive its own user data, nil when none was given", function()
    local fw = H.new()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local uds, n = {}, 0
    local starts = {
      function(sink) s:Recv(nil, sink, "first") end,
      function(sink) s:Recv(nil, sink) end,              -- three arguments
      function(sink) s:Recv(nil, sink, { "third" }) end,
      function(sink) s:Recv(nil, sink, nil) end,         -- four, the last nil
      function(sink) s:Recv(nil, sink, false) end,
    }
    local function on_recv(ok, err, b, ud)
      assert(ok, err)
      n = n + 1
      uds[n] = ud == nil and "nil" or type(ud) == "table" and ud[1] or tostring(ud)
      if n < #starts then starts[n + 1](on_recv) end
    end
    starts[1](on_recv)
    for i = 1, #starts do
      c:Send("m" .. i)
      H.run_until(fw, function() return n == i end)
    end
    assert.same({ "first", "nil", "third", "nil", "false" }, uds)
    s:Close(); c:Close()
    H.run(fw)
  end)

  -- Closing the service drains it: the 995 of the new receive is delivered inside
  -- the handler that started it, and the slot must still be let go once.
  for _, what in ipairs{ "socket", "service" } do
    it("is let go once when a handler receives again and then closes the " .. what, function()
      local fw = H.new()
      local s, c = pairs_of(fw, 1)
      s, c = s[1], c[1]
      local calls = {}
      local function on_recv(ok, err, b)
        calls[#calls + 1] = err
        if ok and #b > 0 then
          s:Recv(nil, on_recv)
          if what == "socket" then s:Close() else fw:Close() end
        end
      end
      s:Recv(nil, on_recv)
      c:Send("x")
      H.run_until(fw, function() return #calls == 2 end)
      assert.same({ 0, 995 }, calls) -- the data, then the receive the close ended
      assert.equal(0, fw:anchored())
      c:Close()
      if what == "socket" then H.run(fw) end
    end)
  end

  it("is let go when the handler receives into its own buffer, and taken again after", function()
    local fw = H.new()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local own = fw:CreateBuffer(16)
    local got, on_own = {}, nil
    local function on_kept(ok, err, b)
      if err == 995 then return end -- the receive pending when the test closes
      assert(ok, err)
      got[#got + 1] = "kept:" .. tostring(b)
      if #got < 4 then s:Recv(own, on_own) end
    end
    function on_own(ok, err, b)
      assert(ok, err)
      assert.equal(own, b)
      got[#got + 1] = "own:" .. tostring(b)
      s:Recv(nil, on_kept)
    end
    s:Recv(nil, on_kept)
    for i = 1, 4 do
      c:Send("m" .. i)
      H.run_until(fw, function() return #got == i end)
      -- one slot while a receive of its own is pending, none during one into `own`
      -- (that one is anchored instead: one anchor row)
      assert.equal(1, fw:anchored())
    end
    assert.same({ "kept:m1", "own:m2", "kept:m3", "own:m4" }, got)
    s:Close(); c:Close()
    H.run(fw)
  end)

  it("is held to the end of the round, so that a later handler's receive takes it again", function()
    local fw = H.new()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local seen = {}
    local function on_second(ok, err, b)
      assert(ok, err)
      seen[#seen + 1] = "second:" .. tostring(b)
    end
    s:Recv(nil, function(ok, err, b)
      assert(ok, err)
      seen[#seen + 1] = "first:" .. tostring(b)
      fw:PostTaskCompletion(function()
        seen[#seen + 1] = ("task: %d held"):format(fw:anchored())
        s:Recv(nil, on_second)
      end)
    end)
    c:Send("a")
    H.run_until(fw, function() return #seen == 2 end)
    assert.equal(1, fw:anchored()) -- the second receive, in the same slot
    c:Send("b")
    H.run_until(fw, function() return #seen == 3 end)
    assert.same({ "first:a", "task: 1 held", "second:b" }, seen)
    assert.equal(0, fw:anchored()) -- its handler did not receive again: let go
    s:Close(); c:Close()
    H.run(fw)
  end)

  -- A handler that does not receive again lets the slot go at the end of the round,
  -- not at once (an awaited echo receives in the next packet's handler). Within the
  -- round the socket may still leave its slot another way: here a task later in the
  -- same round receives into its own buffer (which lets the slot go then), closes the
  -- socket, and the 995 of that receive drops the last reference and collects it
  -- before the round ends. The end of the round must let go nothing more: no slot
  -- left held, none given back twice, the socket collected.
  it("is let go at the end of the round, and a socket collected before then is not touched", function()
    local fw = H.new()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local weak = setmetatable({ s }, { __mode = "v" })
    local steps = {}
    s:Recv(nil, function(ok, err, b)
      assert(ok, err)
      steps[#steps + 1] = "kept:" .. tostring(b)
      -- no receive again; in this round, a task:
      fw:PostTaskCompletion(function()
        steps[#steps + 1] = "task"
        s:Recv(fw:CreateBuffer(8), function(rok, rerr)
          steps[#steps + 1] = ("own:%s,%s"):format(tostring(rok), tostring(rerr))
          s = nil
          collectgarbage()
          collectgarbage()
        end)
        s:Close()
      end)
    end)
    c:Send("x")
    H.run(fw)
    assert.same({ "kept:x", "task", "own:false,995" }, steps)
    collectgarbage()
    assert.is_nil(weak[1], "the socket was not collected")
    assert.equal(0, fw:anchored())
    c:Close()
    H.run(fw)
  end)

  it("is let go when the next receive cannot start, or the handler raises", function()
    local fw, errors = H.collecting()
    local s, c = pairs_of(fw, 1)
    s, c = s[1], c[1]
    local start_error
    s:Recv(nil, function(ok, err)
      assert(ok, err)
      s:Close()
      local started, e = pcall(s.Recv, s, nil, function() end)
      assert(not started)
      start_error = e
      error("handler fails after that")
    end)
    c:Send("x")
    H.run_until(fw, function() return start_error ~= nil end)
    assert.matches("closed", start_error)
    assert.equal(1, #errors)
    assert.matches("handler fails after that", errors[1])
    for i = #errors, 1, -1 do errors[i] = nil end
    assert.equal(0, fw:anchored())
    c:Close()
    H.run(fw)
  end)

  -- A handler that switches to a receive into its own buffer lets its keep slot go at
  -- that call, and another socket's receive may take the slot before the handler
  -- raises (slots are reused most recent first). The error is reported once, and
  -- never as the socket that took the slot, whose receive goes on.
  it("reports a raising handler once, and not as the socket that took its slot", function()
    local reports = {}
    local fw = H.new{ on_error = function(msg, obj, op)
      reports[#reports + 1] = { msg = msg, obj = obj, op = op }
    end }
    local s, c = pairs_of(fw, 2)
    local a, b = s[1], s[2]
    local own = fw:CreateBuffer(16)
    local b_got
    a:Recv(nil, function(ok, err)
      assert(ok, err)
      a:Recv(own, function() end)
      b:Recv(nil, function(bok, berr, buf) assert(bok, berr); b_got = tostring(buf) end)
      error("raised after the switch")
    end)
    c[1]:Send("x")
    H.run_until(fw, function() return #reports == 1 end)
    assert.matches("raised after the switch", reports[1].msg)
    assert.equal("Recv", reports[1].op)
    assert.are_not.equal(b, reports[1].obj)
    assert.equal(2, fw:anchored()) -- a's receive into its buffer, b's own receive
    c[2]:Send("y")
    H.run_until(fw, function() return b_got ~= nil end)
    assert.equal("y", b_got)
    assert.equal(1, #reports)
    a:Close(); b:Close(); c[1]:Close(); c[2]:Close()
    H.run(fw)
  end)

  it("delivers to the right socket while slots are let go and taken again", function()
    local fw = H.new()
    local N, ROUNDS = 24, 12
    local servers, clients = pairs_of(fw, N)
    local own = {}
    local done, wrong, got = 0, 0, {}
    local start
    -- Socket i's handler checks the notification is its own (user data i), then, by
    -- round, receives again, receives into its own buffer, or lets a timer start the
    -- next receive later (its slot goes back meanwhile and another socket may take it).
    local function handler(i)
      return function(ok, err, b, ud)
        assert(ok, err)
        if ud ~= i then wrong = wrong + 1 end
        got[i] = (got[i] or 0) + 1
        local n = got[i]
        if n == ROUNDS then done = done + 1; return end
        clients[i]:Send(("%d:%d"):format(i, n + 1))
        local how = (i + n) % 3
        if how == 0 then
          start(i, nil)
        elseif how == 1 then
          start(i, own[i])
        else
          fw:SetTimer((i % 3) + 1, function() start(i, nil) end)
        end
      end
    end
    local handlers = {}
    function start(i, buf) servers[i]:Recv(buf, handlers[i], i) end
    for i = 1, N do
      own[i] = fw:CreateBuffer(64)
      handlers[i] = handler(i)
      start(i, nil)
      clients[i]:Send(("%d:%d"):format(i, 1))
    end
    H.run_until(fw, function() return done == N end, math.max(20000, 4 * H.TIMEOUT_MS))
    assert.equal(0, wrong)
    assert.equal(0, fw:anchored())
    for i = 1, N do servers[i]:Close(); clients[i]:Close() end
    H.run(fw)
  end)
end)
