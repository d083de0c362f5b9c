-- luv_echo.lua: the echo server a competent luv user writes (Debian's lua-luv under
-- lua5.4), the "luv" column of the fwx benchmarks.
--
--   lua5.4 bench/luv_echo.lua PORT        (0 = any free port)
--
-- Listens on 127.0.0.1, prints "PORT n" once listening, exits on SIGTERM/SIGINT.
-- Same strategy as c_echo.c: try_write first and queue only the rest (libuv 1.44
-- adds an epoll_ctl to every uv_write), and stop reading while more than 64 KiB
-- wait to be written.
local uv = require "luv"

local HIGH_WATER = 64 * 1024
local port = tonumber(arg[1]) or error("usage: luv_echo.lua PORT")

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", port))

local function on_connection(err)
  if err then return end
  local c = uv.new_tcp()
  if not server:accept(c) then c:close() return end
  local paused = false
  local on_read

  -- The write callback resumes reading once the queue has drained.
  local function on_write(werr)
    if werr then
      if not c:is_closing() then c:close() end
    elseif paused and c:get_write_queue_size() <= HIGH_WATER then
      paused = false
      c:read_start(on_read)
    end
  end

  function on_read(rerr, data)
    if rerr or not data then
      if not c:is_closing() then c:close() end
      return
    end
    local n = c:try_write(data)
    if n == #data then return end
    -- nil (EAGAIN) or a short count: queue what is left.
    if n then data = data:sub(n + 1) end
    c:write(data, on_write)
    if c:get_write_queue_size() > HIGH_WATER then
      paused = true
      c:read_stop()
    end
  end

  c:read_start(on_read)
end

assert(server:listen(511, on_connection))
io.stdout:write("PORT ", server:getsockname().port, "\n")
io.stdout:flush()

local function on_signal()
  uv.walk(function(h) if not h:is_closing() then h:close() end end)
end
for _, name in ipairs{ "sigterm", "sigint" } do
  local s = uv.new_signal()
  s:start(name, on_signal)
end
-- libuv writes with write(2): without a handler, a peer that already closed kills
-- the process with SIGPIPE instead of failing the write with EPIPE.
local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)
sigpipe:unref()

uv.run()
