-- spec/helper.lua: what every spec file shares.
--
--   local H = require "spec.helper"
--   before_each(H.before); after_each(H.after)   -- fd and service checks
--   local fw = H.new()             -- a service that is checked and closed after the test
--   H.run(fw [, ms])               -- run until nothing is pending; fails the test on timeout
--
-- After each test: every service made with H.new() must have nothing pending and
-- nothing anchored; it is closed, the GC runs, and the process must hold the same
-- number of open file descriptors as before the test.
local fwx = require "fwx"

local H = {}

H.TIMEOUT_MS = tonumber(os.getenv("FWX_SPEC_TIMEOUT_MS")) or 5000

-- Set by `make asan` and `make valgrind`, whose allocators change what RSS means.
H.SANITIZED = os.getenv("FWX_SANITIZED") == "1"

if os.getenv("FWX_DEBUG_GC") == "1" then
  collectgarbage("generational")
end

local services = {}

-- libuv opens process-wide descriptors (its signal pipe) with the first loop; open
-- them now so that the per-test descriptor count sees only what a test leaks.
fwx.new{}:Close()

-- Handler errors of services made here, so that an assertion failing inside a sink
-- fails its test instead of being logged and swallowed by the dispatcher.
local handler_errors = setmetatable({}, { __mode = "k" })

--- A service checked after the test. Unless opts.on_error is given, errors raised by
-- its handlers are collected, and H.run and the after-test check fail on them.
function H.new(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local errors = {}
  if o.on_error == nil then
    o.on_error = function(msg) errors[#errors + 1] = msg end
  end
  local fw = fwx.new(o)
  handler_errors[fw] = errors
  services[#services + 1] = fw
  return fw
end

--- Check fw after the test as H.new's services are (for a service made elsewhere,
--- such as host.service()).
function H.track(fw)
  services[#services + 1] = fw
  return fw
end

--- A service and the list its handler errors go to (for tests that expect some).
function H.collecting()
  local fw = H.new()
  return fw, handler_errors[fw]
end

function H.no_errors(errors)
  assert(#errors == 0, "a handler raised:\n" .. table.concat(errors, "\n----\n"))
end

local function check_handlers(fw, level)
  local errors = handler_errors[fw]
  if errors and #errors > 0 then
    local msg = table.concat(errors, "\n----\n")
    for i = #errors, 1, -1 do errors[i] = nil end
    error("a handler raised:\n" .. msg, level + 1)
  end
end

--- Run fw for at most ms while operations may stay pending: fw:run(ms)'s results.
function H.run_for(fw, ms)
  return fw:run(ms)
end

--- The call raises an error whose message contains text (plainly).
function H.raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error containing " .. text)
  err = tostring(err)
  assert(err:find(text, 1, true), ("%q does not contain %q"):format(err, text))
  return err
end

--- Run fw until nothing is pending; the test fails if that takes longer than ms.
function H.run(fw, ms)
  local idle, why = fw:run(ms or H.TIMEOUT_MS)
  check_handlers(fw, 2)
  if not idle then
    local kinds = {}
    for k, n in pairs(fw:pending(true)) do kinds[#kinds + 1] = k .. "=" .. n end
    error(("fw:run() did not finish: %s, %d operations still pending (%s)"):format(
      why, fw:pending(), table.concat(kinds, " ")), 2)
  end
end

--- Run until pred() is true (checked after each notification batch), bounded in time.
function H.run_until(fw, pred, ms)
  local deadline = os.clock() + (ms or H.TIMEOUT_MS) / 1000
  local wall = os.time() + math.ceil((ms or H.TIMEOUT_MS) / 1000) + 1
  while not pred() do
    local idle = fw:run(10)
    if idle and not pred() then error("nothing pending, and the condition never became true", 2) end
    if os.clock() > deadline or os.time() > wall then error("timed out waiting for a condition", 2) end
  end
end

-- Counted through a file, not io.popen: popen's pipe is briefly open twice in this
-- process while the child lists the directory, which would make the count flaky.
function H.fd_count()
  local tmp = os.tmpname()
  os.execute("ls /proc/" .. H.pid() .. "/fd > " .. tmp)
  local n = 0
  for _ in io.lines(tmp) do n = n + 1 end
  os.remove(tmp)
  return n
end

local pid
function H.pid()
  if not pid then
    local f = io.open("/proc/self/stat")
    pid = f:read("*l"):match("^(%d+)")
    f:close()
  end
  return pid
end

local fds_before, globals_before
local function globals()
  local t = {}
  for k in pairs(_G) do t[k] = true end
  return t
end

function H.before()
    collectgarbage()
    collectgarbage()
    fds_before = H.fd_count()
    globals_before = globals()
end

function H.after()
    local problems = {}
    for i, fw in ipairs(services) do
      local errors = handler_errors[fw]
      if errors and #errors > 0 then
        problems[#problems + 1] = ("service %d: a handler raised:\n%s"):format(i, table.concat(errors, "\n----\n"))
      end
      local pending = fw:pending()
      if pending ~= 0 then
        problems[#problems + 1] = ("service %d: %d operations still pending after the test"):format(i, pending)
      end
      fw:Close()
      if fw:anchored() ~= 0 then
        problems[#problems + 1] = ("service %d: %d anchors left after Close"):format(i, fw:anchored())
      end
      services[i] = nil
    end
    -- the module and the host keep their state in locals: a global made during the
    -- test is a missing "local" somewhere
    local made = {}
    for k in pairs(_G) do
      if not globals_before[k] then made[#made + 1] = tostring(k) end
    end
    if #made > 0 then
      table.sort(made)
      problems[#problems + 1] = "globals made during the test: " .. table.concat(made, ", ")
    end
    collectgarbage()
    collectgarbage()
    local fds = H.fd_count()
    if fds ~= fds_before then
      problems[#problems + 1] = ("file descriptors: %d before the test, %d after: %s"):format(fds_before, fds, H.sh("ls -l /proc/" .. H.pid() .. "/fd"))
    end
    assert(#problems == 0, table.concat(problems, "; "))
end

--- A listening TCP socket on 127.0.0.1, port 0; returns it and its port.
function H.listener(fw, backlog)
  local ls = fw:CreateNetworkSocket("tcp")
  assert(ls:Bind("127.0.0.1", 0))
  assert(ls:Listen(backlog or 128))
  return ls, ls:GetSockName().port
end

-- The bytes a sender puts at positions from .. from+n-1 (0-based) of stream `id`: byte
-- i is (id * 31 + i) % 251, so the stream repeats every 251 bytes and streams differ.
local cycles = {}
function H.pattern(id, from, n)
  local cycle = cycles[id]
  if cycle == nil then
    local t = {}
    for i = 0, 250 do t[#t + 1] = string.char((id * 31 + i) % 251) end
    cycle = table.concat(t)
    cycles[id] = cycle
  end
  local start = from % 251
  return (cycle:rep((start + n) // 251 + 1)):sub(start + 1, start + n)
end

--- n connected TCP pairs in fw: the accepted sockets and the client sockets, in
-- order (servers[i] is clients[i]'s peer: they connect one at a time).
function H.pairs(fw, n)
  local ls, port = H.listener(fw, n)
  local servers, clients = {}, {}
  local function on_accept(ok, err, l, s)
    assert(ok, err)
    servers[#servers + 1] = s
    if #servers < n then l:Accept(on_accept) else l:Close() end
  end
  ls:Accept(on_accept)
  for i = 1, n do
    local c = fw:CreateNetworkSocket("tcp")
    c:Connect("127.0.0.1", port, function(ok, err, s) assert(ok, err); clients[i] = s end)
    H.run_until(fw, function() return servers[i] and clients[i] end)
  end
  return servers, clients
end

--- Count calls: returns a sink that records its arguments, and the record.
function H.recorder()
  local calls = {}
  local function sink(...)
    calls[#calls + 1] = table.pack(...)
  end
  return sink, calls
end

--- The command that runs a Lua script in a child process with the module under test:
--- the same paths as this run (so `make asan` children load the sanitized build, with
--- the runtime preloaded for them too), and under `make tsan` the interpreter that has
--- the TSan runtime linked in, since a TSan module cannot be loaded by plain lua5.4.
function H.lua_command()
  local q = function(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  return ("LUA_PATH=%s LUA_CPATH=%s %s"):format(q(package.path), q(package.cpath),
    os.getenv("LUA_RUNNER") or "lua5.4")
end

--- Shell out (for real clients: nc, curl); returns stdout.
function H.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

return H
