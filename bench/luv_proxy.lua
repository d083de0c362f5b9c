-- luv_proxy.lua: the TCP proxy a competent luv user writes (Debian's lua-luv under
-- lua5.4), the "luv" column of the proxy benchmarks.
--
--   lua5.4 bench/luv_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT   (PORT 0 = any)
--
-- Listens on 127.0.0.1, prints "PORT n" once listening, exits on SIGTERM/SIGINT.
-- Same strategy as c_proxy.c: connect upstream per accepted connection, read both
-- sides once connected, try_write first and queue only the rest, stop reading a side
-- while its peer has more than 64 KiB queued, pass EOF on as a shutdown, and close
-- the pair on the first error or once both directions are done.
local uv = require "luv"

local HIGH_WATER = 64 * 1024
local port, up_host, up_port = tonumber(arg[1]), arg[2], tonumber(arg[3])
assert(port and up_host and up_port,
       "usage: luv_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT")

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", port))

local function new_pair(client)
  local upstream = uv.new_tcp()
  local closed = false
  local eof = 0          -- directions that ended
  local shutdowns = 0    -- shutdowns still pending

  local function close()
    if closed then return end
    closed = true
    -- A signal may already have closed the handles (uv.walk below).
    if not client:is_closing() then client:close() end
    if not upstream:is_closing() then upstream:close() end
  end

  -- One direction: read from src, write to dst.
  local function pump(src, dst)
    local paused = false
    local on_read

    local function on_write(err)
      if err then return close() end
      if paused and not closed and dst:get_write_queue_size() <= HIGH_WATER then
        paused = false
        src:read_start(on_read)
      end
    end

    local function on_shutdown(err)
      shutdowns = shutdowns - 1
      if err or (eof == 2 and shutdowns == 0) then close() end
    end

    function on_read(err, data)
      if closed then return end
      if err then return close() end
      if not data then
        -- EOF: forward the FIN once the queued bytes are out.
        eof = eof + 1
        src:read_stop()
        shutdowns = shutdowns + 1
        if not dst:shutdown(on_shutdown) then shutdowns = shutdowns - 1; close() end
        return
      end
      local n = dst:try_write(data)
      if n == #data then return end
      if n then data = data:sub(n + 1) end
      dst:write(data, on_write)
      if dst:get_write_queue_size() > HIGH_WATER then
        paused = true
        src:read_stop()
      end
    end

    src:read_start(on_read)
  end

  upstream:connect(up_host, up_port, function(err)
    if err or closed then return close() end
    pump(client, upstream)
    pump(upstream, client)
  end)
end

assert(server:listen(511, function(err)
  if err then return end
  local c = uv.new_tcp()
  if server:accept(c) then new_pair(c) else c:close() end
end))
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
