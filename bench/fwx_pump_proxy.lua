-- fwx_pump_proxy.lua: the TCP proxy with no data filter, its bytes moved by the core
-- pump (fw:Pump: splice(2) in C, no Lua per chunk), the "fwx_pump" column of the proxy
-- benchmarks. What the fwx host will do for a connection no data filter is attached
-- to; the host itself does not exist yet.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_pump_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT   (PORT 0 = any)
--
-- Listens on 127.0.0.1, prints "PORT n" once listening; ended by SIGTERM. Connect
-- upstream per accepted connection, then pump the two until both directions end (EOF
-- passed on as a shutdown by the pump) or one fails, then close both.
local fwx = require "fwx"

local port, up_host, up_port = tonumber(arg[1]), arg[2], tonumber(arg[3])
assert(port and up_host and up_port,
       "usage: fwx_pump_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT")

local fw = fwx.new{}

-- sink(ok, err, bytes_a_to_b, bytes_b_to_a, userdata): the pair is done either way.
local function on_pumped(_, _, _, _, pair)
  pair[1]:Close()
  pair[2]:Close()
end

local function on_connect(ok, _, upstream, client)
  if not ok then
    upstream:Close()
    return client:Close()
  end
  fw:Pump(client, upstream, on_pumped, { client, upstream })
end

local function on_accept(ok, _, listening, client)
  listening:Accept(on_accept)
  if not ok then return end
  local upstream = fw:CreateNetworkSocket("tcp")
  upstream:Connect(up_host, up_port, on_connect, client)
end

local ls = fw:CreateNetworkSocket("tcp")
assert(ls:Bind("127.0.0.1", port))
assert(ls:Listen(511))
ls:Accept(on_accept)
io.stdout:write("PORT ", ls:GetSockName().port, "\n")
io.stdout:flush()
fw:run()
