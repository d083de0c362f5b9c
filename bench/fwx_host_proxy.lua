-- fwx_host_proxy.lua: the fwx host (lua/fwx/host.lua, what `fwx run` serves) as the
-- benchmark's proxy: MODE "none" has no data filter (the core pump moves the bytes,
-- the "fwx_host" column), MODE "lua" an identity Lua data filter, on_data returning
-- nil for every chunk (the "fwx_host_lua" column), and MODE "lua_t2" the same filter
-- with threads = 2 (the "fwx_host_t2" column): two workers of fwx.serve, each with
-- its own state and loop, listening on one port with SO_REUSEPORT. MODE "sdk" has one
-- identity data filter in the SDK's shape (fwx.host_sdk: SetSockets, then Recv and Send
-- in the completion style, on the real sockets the host hands over; the "fwx_host_sdk"
-- column), and MODE "chain" two of them, with a link between (the "fwx_host_chain"
-- column, instruction counts only).
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_host_proxy.lua MODE PORT UPSTREAM_HOST UPSTREAM_PORT
--
-- Prints "PORT n" once listening; the runner ends it with SIGTERM. The access log is
-- the host's default (a line per connection on stderr), as a user would run it.
local fwx = require "fwx"
local host = require "fwx.host"

-- Run as a worker of fwx.serve, this file gets the worker's service first.
local worker_fw, mode, port, up_host, up_port
if type((...)) == "userdata" then
  worker_fw, mode, port, up_host, up_port = ...
else
  mode, port, up_host, up_port = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
end
local MODES = { none = true, lua = true, lua_t2 = true, sdk = true, chain = true }
assert(MODES[mode] and port and up_host and up_port,
       "usage: fwx_host_proxy.lua none|lua|lua_t2|sdk|chain PORT UPSTREAM_HOST UPSTREAM_PORT")

if mode == "lua_t2" and worker_fw == nil then
  assert(fwx.serve{ threads = 2, script = arg[0], args = { mode, port, up_host, up_port } })
  return
end

-- The identity data filter as an SDK filter writer would write it: one object is the
-- sink of its four operations, the user data says which.
local Identity = {}
Identity.__index = Identity
function Identity:SetSockets(internal, external)
  self.internal, self.external = internal, external
  internal:Recv(nil, self, "request")
  external:Recv(nil, self, "response")
end
function Identity:CompleteAsyncIO(ok, _, buf, what)
  if what == "sent" then return end
  local from, to = self.internal, self.external
  if what == "response" then from, to = to, from end
  if not ok or #buf == 0 then
    self.internal:Close()
    self.external:Close()
    return
  end
  to:Send(buf)
  from:Recv(nil, self, what)
end

local function sdk_filter(class)
  return {
    FilterInit = function() return fwx.fwx_AcceptedConnection end,
    AttachToSession = function()
      return { FirewallEventHandler = function(_, event)
        event.Parameters.Accept.piConnectionAccepted:AttachDataFilter(setmetatable({}, Identity), class)
      end }
    end,
  }
end

local filter = {
  listen = ("127.0.0.1:%d"):format(port),
  upstream = ("%s:%d"):format(up_host, up_port),
  on_data = (mode == "lua" or mode == "lua_t2") and function() end or nil,
}
if mode == "sdk" then
  filter.filters = { sdk_filter(fwx.fwx_dfpc_Middle) }
elseif mode == "chain" then
  filter.filters = { sdk_filter(fwx.fwx_dfpc_NAT), sdk_filter(fwx.fwx_dfpc_Middle) }
end
local server = host.start(filter, worker_fw and host.service(worker_fw))
if fwx.worker_id() == 1 then
  io.stdout:write("PORT ", server.port, "\n")
  io.stdout:flush()
end
if worker_fw == nil then server.fw:run() end
