-- fwx_host_proxy.lua: the fwx host (lua/fwx/host.lua, what `fwx run` serves) as the
-- benchmark's proxy: MODE "none" has no data filter (the core pump moves the bytes,
-- the "fwx_host" column), MODE "lua" an identity Lua data filter, on_data returning
-- nil for every chunk (the "fwx_host_lua" column).
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_host_proxy.lua MODE PORT UPSTREAM_HOST UPSTREAM_PORT
--
-- Prints "PORT n" once listening; the runner ends it with SIGTERM. The access log is
-- the host's default (a line per connection on stderr), as a user would run it.
local host = require "fwx.host"

local mode, port, up_host, up_port = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
assert((mode == "none" or mode == "lua") and port and up_host and up_port,
       "usage: fwx_host_proxy.lua none|lua PORT UPSTREAM_HOST UPSTREAM_PORT")

local server = host.start({
  listen = ("127.0.0.1:%d"):format(port),
  upstream = ("%s:%d"):format(up_host, up_port),
  on_data = mode == "lua" and function() end or nil,
})
io.stdout:write("PORT ", server.port, "\n")
io.stdout:flush()
server.fw:run()
