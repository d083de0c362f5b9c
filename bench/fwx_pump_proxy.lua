-- fwx_pump_proxy.lua: the TCP proxy built on fw:Pump, what the fwx host does per
-- connection, without the host around it. With no FILTER argument the core pump moves
-- the bytes (splice(2) in C, no Lua per chunk): the "fwx_pump" column of the proxy
-- benchmarks. With "filter" it is the filtered pump, every chunk through an identity
-- Lua filter that returns nil (the loop around it in C): the "fwx_filter" column.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_pump_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT [filter]
--
-- Listens on 127.0.0.1 (PORT 0 = any), prints "PORT n" once listening; ended by
-- SIGTERM. Connect upstream per accepted connection, then pump the two until both
-- directions end (EOF passed on as a shutdown by the pump) or one fails, then close
-- both.
local fwx = require "fwx"

local port, up_host, up_port = tonumber(arg[1]), arg[2], tonumber(arg[3])
assert(port and up_host and up_port and (arg[4] == nil or arg[4] == "filter"),
       "usage: fwx_pump_proxy.lua PORT UPSTREAM_HOST UPSTREAM_PORT [filter]")
-- filter(ud, direction, buf): nil passes the chunk on as it came.
local filter = arg[4] == "filter" and function() end or nil

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
  fw:Pump(client, upstream, on_pumped, { client, upstream }, filter)
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
