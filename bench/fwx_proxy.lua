-- fwx_proxy.lua: the TCP proxy written with the fwx API in callback style, the data
-- passing through Lua (the "fwx" column of the proxy benchmarks): every chunk is
-- received into a Lua buffer and sent on, the path an identity data filter takes.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT   (PORT 0 = any)
--
-- Listens on 127.0.0.1, prints "PORT n" once listening. It watches no signal
-- (fw:SetSignal), so the runner's SIGTERM ends it by the default action.
--
-- Same strategy as c_proxy.c and luv_proxy.lua: connect upstream per accepted
-- connection, read both sides once connected, pass EOF on as a shutdown, close the
-- pair on the first error or once both directions are done. Recv(nil) takes what
-- came; Send(buf) without a sink writes at once what the kernel takes and queues the
-- rest. Backpressure without a notification per message: sends on one socket complete
-- in order, so after each 64 KiB sent one Send carries a sink, and its completion says
-- everything before it is written. While one such marker is still out and another
-- 64 KiB has gone, that side stops receiving until the marker completes: at most about
-- 128 KiB queued per direction, as the others' 64 KiB high-water mark.
local fwx = require "fwx"

local HIGH_WATER = 64 * 1024
local port, up_host, up_port = tonumber(arg[1]), arg[2], tonumber(arg[3])
assert(port and up_host and up_port,
       "usage: fwx_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT")

local fw = fwx.new{}

local function new_pair(client)
  local upstream = fw:CreateNetworkSocket("tcp")
  local closed = false
  local ended = 0 -- directions that reached EOF

  local function close()
    if closed then return end
    closed = true
    client:Close()
    upstream:Close()
  end

  -- One direction: receive from src, send to dst.
  local function pump(src, dst)
    local since_mark = 0     -- bytes sent since the last marker
    local marker_out = false -- a marker send has not completed yet
    local waiting = false    -- receiving stopped until the marker completes
    local on_recv

    local function on_marker(ok)
      marker_out = false
      if not ok then return close() end
      if waiting and not closed then
        waiting = false
        src:Recv(nil, on_recv)
      end
    end

    function on_recv(ok, _, buf)
      if closed then return end
      if not ok then return close() end
      local n = #buf
      if n == 0 then
        -- EOF: forward the FIN once the queued bytes are out.
        dst:Shutdown()
        ended = ended + 1
        if ended == 2 then close() end
        return
      end
      since_mark = since_mark + n
      if since_mark < HIGH_WATER then
        dst:Send(buf)
      elseif not marker_out then
        since_mark = 0
        marker_out = true
        dst:Send(buf, on_marker)
      else
        -- A marker is still out and another 64 KiB has gone: wait for it.
        dst:Send(buf)
        waiting = true
        return
      end
      src:Recv(nil, on_recv)
    end

    src:Recv(nil, on_recv)
  end

  upstream:Connect(up_host, up_port, function(ok)
    if not ok or closed then return close() end
    pump(client, upstream)
    pump(upstream, client)
  end)
end

local ls = fw:CreateNetworkSocket("tcp")
assert(ls:Bind("127.0.0.1", port))
assert(ls:Listen(511))

local function on_accept(ok, _, listening, accepted)
  listening:Accept(on_accept)
  if ok then new_pair(accepted) end
end

ls:Accept(on_accept)
io.stdout:write("PORT ", ls:GetSockName().port, "\n")
io.stdout:flush()
fw:run()
