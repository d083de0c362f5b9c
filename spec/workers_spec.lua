-- Worker threads (DESIGN.md section 4): fwx.serve, messages between workers, the
-- shared store across threads, SO_REUSEPORT. Each worker is a real OS thread with its
-- own Lua state; what the workers saw comes back through fwx.store, which the test's
-- own state reads once serve has returned.
local fwx = require "fwx"
local H = require "spec.helper"

local store = fwx.store

-- Every worker script starts with this: its service, a watchdog that stops a worker
-- that hangs (so a failing spec ends instead of stalling the run), and done() to
-- cancel it.
local PRELUDE = [[
local fw = ...
local fwx = require "fwx"
local store = fwx.store
local me, workers = fwx.worker_id(), fwx.worker_count()
local watchdog = fw:SetTimer(%d, function(ok)
  if ok then store.incr("watchdog"); fw:stop() end
end)
local function done() watchdog:Cancel() end
]]

local scripts = {}

-- Run `body` (after the prelude) in n workers; returns what fwx.serve returned.
local function serve(n, body, args)
  local path = os.tmpname()
  scripts[#scripts + 1] = path
  local f = assert(io.open(path, "w"))
  f:write(PRELUDE:format(H.TIMEOUT_MS), body)
  f:close()
  return fwx.serve{ threads = n, script = path, args = args }
end

describe("fwx.serve", function()
  before_each(function() H.before(); store._clear() end)
  after_each(function()
    assert.is_nil(store.get("watchdog"), "a worker hung until its watchdog fired")
    store._clear()
    for _, p in ipairs(scripts) do os.remove(p) end
    scripts = {}
    H.after()
  end)

  it("runs each worker in its own thread and state, with its id, count and arguments", function()
    assert.is_true(serve(3, [[
      local extra = select(2, ...)
      -- Each state is its own: a global the worker before set is not seen here.
      store.set("seen " .. me, { workers = workers, extra = extra, mark = rawget(_G, "mark"),
                                 service = getmetatable(fw).__name })
      mark = me
      done()
    ]], { "hello" }))
    for id = 1, 3 do
      assert.are.same({ workers = 3, extra = "hello", service = "fwx.service" }, store.get("seen " .. id))
    end
    assert.are.equal(1, fwx.worker_id())
    assert.are.equal(1, fwx.worker_count())
  end)

  it("runs a worker's collector in generational mode, as lua5.4 runs a script", function()
    assert.is_true(serve(2, [[
      -- Setting a mode returns the one before; setting it back leaves it as it was.
      store.set("mode " .. me, collectgarbage("incremental"))
      collectgarbage("generational")
      done()
    ]]))
    assert.are.equal("generational", store.get("mode 1"))
    assert.are.equal("generational", store.get("mode 2"))
  end)

  it("starts scripts in worker order, each once the one before has returned", function()
    assert.is_true(serve(4, [[
      -- A script still running when the next began would see the log end otherwise.
      local log = store.get("log") or ""
      store.set("log", log .. "<" .. me)
      for _ = 1, 1e5 do end
      store.set("log", store.get("log") .. me .. ">")
      done()
    ]]))
    assert.are.equal("<11><22><33><44>", store.get("log"))
  end)

  it("delivers every message exactly once, in order, in the receiving worker's thread", function()
    assert.is_true(serve(2, [[
      local N = 2000
      if me == 1 then
        local next_seq = 1
        fw:SetTaskHandler("seq", function(v, from)
          assert(from == 2, "from " .. tostring(from))
          if v ~= next_seq then store.set("bad", ("got %s, wanted %d"):format(v, next_seq)) end
          next_seq = next_seq + 1
          if v == N then
            store.set("received", next_seq - 1)
            done()
          end
        end)
      else
        for i = 1, N do assert(fw:PostTaskCompletion("seq", i, 1)) end
        done()
      end
    ]]))
    assert.is_nil(store.get("bad"))
    assert.are.equal(2000, store.get("received"))
  end)

  it("keeps what is posted to a worker whose script has not run yet", function()
    assert.is_true(serve(2, [[
      if me == 1 then
        for i = 1, 10 do assert(fw:PostTaskCompletion("early", { i = i }, 2)) end
        done()
      else
        local got = 0
        fw:SetTaskHandler("early", function(v)
          got = got + 1
          store.set("early " .. got, v.i)
          if got == 10 then done() end
        end)
      end
    ]]))
    for i = 1, 10 do assert.are.equal(i, store.get("early " .. i)) end
  end)

  it("delivers every accepted post to a worker that shuts down meanwhile, and refuses later ones with 1062", function()
    assert.is_true(serve(2, [[
      if me == 1 then
        -- Worker 1 stops 20 ms after the first message, while worker 2 is posting to
        -- it as fast as it can (counted from the first, so a slow start cannot skip
        -- it). It stops with fw:stop(): a worker that messages keep arriving at never
        -- goes idle, which is how a slow worker (TSan) would otherwise never end.
        local ending = false
        fw:SetTaskHandler("n", function()
          store.incr("delivered")
          if not ending then
            ending = true
            fw:SetTimer(20, function() done(); fw:stop() end)
          end
        end)
      else
        local function again()
          local ok, err, code = fw:PostTaskCompletion("n", true, 1)
          if ok then
            store.incr("accepted")
            fw:PostTaskCompletion(again)
          else
            store.set("refusal", { err = err, code = code })
            done()
          end
        end
        fw:PostTaskCompletion(again)
      end
    ]]))
    local refusal = store.get("refusal")
    assert.are.same({ err = "worker 1 has stopped", code = 1062 }, refusal)
    assert.is_true(store.get("accepted") > 0)
    assert.are.equal(store.get("accepted"), store.get("delivered"))
  end)

  it("bounds what waits in an inbox: a post past 64 MiB is refused with 1450 and nothing is lost", function()
    assert.is_true(serve(2, [[
      local MiB = string.rep("x", 1024 * 1024)
      if me == 1 then
        -- Worker 2's script has not run: nothing reads its inbox yet.
        local n = 0
        while true do
          local ok, err, code = fw:PostTaskCompletion("big", MiB, 2)
          if not ok then store.set("refusal", code) break end
          n = n + 1
        end
        store.set("accepted", n)
        done()
      else
        local got = 0
        fw:SetTaskHandler("big", function(v)
          assert(v == MiB)
          got = got + 1
          if got == store.get("accepted") then store.set("delivered", got); done() end
        end)
      end
    ]]))
    assert.are.equal(1450, store.get("refusal"))
    assert.are.equal(63, store.get("accepted")) -- 63 MiB and the name bytes fit; 64 MiB do not
    assert.are.equal(63, store.get("delivered"))
  end)

  it("fails a raising task handler alone, and names a missing one", function()
    assert.is_true(serve(2, [[
      if me == 1 then
        local errors = {}
        fw:SetErrorHandler(function(msg, object, operation)
          errors[#errors + 1] = operation .. ": " .. msg:match("^[^\n]*")
        end)
        fw:SetTaskHandler("boom", function(v) error("boom " .. v) end)
        fw:SetTaskHandler("fine", function(v)
          store.set("fine", v)
          store.set("errors", errors)
          done()
        end)
      else
        assert(fw:PostTaskCompletion("boom", 1, 1))
        assert(fw:PostTaskCompletion("nobody", 2, 1))
        assert(fw:PostTaskCompletion("fine", 3, 1))
        done()
      end
    ]]))
    assert.are.equal(3, store.get("fine"))
    local errors = store.get("errors")
    assert.are.equal(2, #errors)
    assert.matches("^message: .*boom 1", errors[1])
    assert.matches("^message: no task handler named 'nobody' for a message from worker 2", errors[2])
  end)

  it("stops the running workers and returns the error when a script fails", function()
    local ok, err = serve(3, [[
      if me == 2 then error("script two is broken") end
      -- Worker 1 listens, so it would run for ever unless serve stops it.
      local ls = fw:CreateNetworkSocket("tcp")
      assert(ls:Bind("127.0.0.1", 0))
      assert(ls:Listen(8))
      ls:Accept(function(ok, err)
        store.set("accept ended", err)
      end)
      done()
      store.set("ran " .. me, true)
    ]])
    assert.is_nil(ok)
    assert.matches("^worker 2: .*script two is broken", err)
    assert.is_true(store.get("ran 1"))
    assert.is_nil(store.get("ran 3")) -- never started
    assert.are.equal(995, store.get("accept ended"))
  end)

  it("refuses fw:run() in a worker's script, which would keep the next worker from starting", function()
    local ok, err = serve(2, [[
      done()
      fw:run()
    ]])
    assert.is_nil(ok)
    assert.matches("^worker 1: .*run%(%) in a worker's script: fwx.serve runs the service", err)
  end)

  it("reports a script that cannot be loaded, and bad options", function()
    local ok, err = fwx.serve{ threads = 2, script = "/nonexistent/fwx-worker.lua" }
    assert.is_nil(ok)
    assert.matches("^worker 1: cannot open /nonexistent/fwx%-worker%.lua", err)
    assert.has_error(function() fwx.serve{ threads = 0, script = "x" } end,
      "bad argument #1 to 'serve' (threads must be 1 to 1024)")
    assert.has_error(function() fwx.serve{ threads = 1.5, script = "x" } end,
      "bad argument #1 to 'serve' (threads must be an integer)")
    assert.has_error(function() fwx.serve{ threads = 2 } end,
      "bad argument #1 to 'serve' (script must be a string)")
    assert.has_error(function() fwx.serve{ threads = 2, script = "x", args = { print } } end)
  end)

  it("lets every worker listen on one port (SO_REUSEPORT) and serve real clients", function()
    assert.is_true(serve(3, [[
      if me == 3 then
        -- The client: real nc processes, run from this worker, which blocks while they
        -- run (workers 1 and 2 serve meanwhile).
        local p = io.popen(("for i in $(seq 1 20); do printf ping$i | timeout 5 nc -N 127.0.0.1 %d; echo; done")
          :format(store.get("port")))
        store.set("replies", p:read("a"))
        p:close()
        fw:PostTaskCompletion("stop", true, 1)
        fw:PostTaskCompletion("stop", true, 2)
        done()
        return
      end
      local ls = fw:CreateNetworkSocket("tcp")
      assert(ls:SetSockOpt("reuseport", true))
      assert(ls:Bind("127.0.0.1", me == 1 and 0 or store.get("port")))
      assert(ls:Listen(64))
      if me == 1 then store.set("port", ls:GetSockName().port) end
      local function accept()
        ls:Accept(function(ok, err, _, c)
          if not ok then return end
          store.incr("accepted by " .. me)
          c:Recv(nil, function(rok, _, buf)
            if rok and #buf > 0 then c:Send("echo:" .. tostring(buf)) end
            c:Shutdown(false)
          end)
          accept()
        end)
      end
      accept()
      fw:SetTaskHandler("stop", function() ls:Close(); done() end)
    ]]))
    local replies = store.get("replies")
    for i = 1, 20 do assert.matches("echo:ping" .. i .. "\n", replies, 1, true) end
    assert.are.equal(20, (store.get("accepted by 1") or 0) + (store.get("accepted by 2") or 0))
  end)
end)

describe("messages in one service (fwx.new{} is worker 1 of 1)", function()
  before_each(H.before)
  after_each(H.after)

  it("delivers a message to itself never inline, with the sender's id", function()
    local fw = H.new()
    local got = {}
    fw:SetTaskHandler("t", function(v, from) got[#got + 1] = { v, from } end)
    assert.is_true(fw:PostTaskCompletion("t", { a = { 1, 2.5, "x" } }, 1))
    assert.are.same({}, got) -- not inline
    H.run(fw)
    assert.are.same({ { { a = { 1, 2.5, "x" } }, 1 } }, got)
  end)

  it("calls an object's CompleteTask, and a removed handler no more", function()
    local fw, errors = H.collecting()
    local obj = { seen = {} }
    function obj:CompleteTask(v, from) self.seen[#self.seen + 1] = v .. from end
    fw:SetTaskHandler("o", obj)
    fw:PostTaskCompletion("o", "v", 1)
    H.run(fw)
    fw:SetTaskHandler("o", nil)
    fw:PostTaskCompletion("o", "w", 1)
    local ok = fw:run(H.TIMEOUT_MS)
    assert.is_true(ok)
    assert.are.same({ "v1" }, obj.seen)
    assert.are.equal(1, #errors)
    assert.matches("no task handler named 'o'", errors[1])
    errors[1] = nil
  end)

  it("rejects what cannot cross with a clear error, and posts nothing", function()
    local fw, errors = H.collecting()
    fw:SetTaskHandler("t", function() error("must not be called") end)
    assert.has_error(function() fw:PostTaskCompletion("t", print, 1) end)
    assert.has_error(function() fw:PostTaskCompletion("t", { co = coroutine.create(print) }, 1) end)
    local cyclic = {}
    cyclic.self = cyclic
    assert.has_error(function() fw:PostTaskCompletion("t", cyclic, 1) end)
    assert.has_error(function() fw:PostTaskCompletion(42, 1, 1) end,
      "bad argument #1 to 'PostTaskCompletion' (a task for another worker is named by a string without NUL (the name its handler has there: fw:SetTaskHandler))")
    assert.has_error(function() fw:PostTaskCompletion("t", 1, 2) end,
      "bad argument #3 to 'PostTaskCompletion' (no worker 2 (there are 1))")
    assert.has_error(function() fw:PostTaskCompletion("t", 1, 1.5) end)
    assert.has_error(function() fw:SetTaskHandler("t", 42) end)
    assert.has_error(function() fw:SetTaskHandler(42, print) end,
      "bad argument #1 to 'SetTaskHandler' (string expected, got number)")
    assert.are.equal(0, fw:pending())
    assert.is_true(fw:run(H.TIMEOUT_MS))
    assert.are.same({}, errors)
  end)

  it("lets two sockets of one process share a port only with reuseport", function()
    local fw = H.new()
    local a, b, c = fw:CreateNetworkSocket("tcp"), fw:CreateNetworkSocket("tcp"), fw:CreateNetworkSocket("tcp")
    assert.is_true(a:SetSockOpt("reuseport", true))
    assert.is_true(a:GetSockOpt("reuseport"))
    assert.is_true(a:Bind("127.0.0.1", 0))
    assert.is_true(a:Listen(8))
    local port = a:GetSockName().port
    assert.is_true(b:SetSockOpt("SO_REUSEPORT", true))
    assert.is_true(b:Bind("127.0.0.1", port))
    assert.is_true(b:Listen(8))
    local ok, _, code = c:Bind("127.0.0.1", port)
    if ok then ok, _, code = c:Listen(8) end
    assert.is_nil(ok)
    assert.are.equal(10048, code)
    a:Close(); b:Close(); c:Close()
  end)
end)
