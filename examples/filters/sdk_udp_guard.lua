-- A UDP filter in the SDK's shape: a guard against reflection. Each client session
-- (fwx_Udp_Destination) gets a data filter that passes the client's datagrams to the
-- upstream and the upstream's answers back, but drops an answer more than RATIO times
-- the size of the request before it (how amplification attacks through DNS, NTP or
-- memcached look), and prints what it passed and dropped when the session ends.
--   lua5.4 examples/udp_echo.lua 7001 &
--   fwx run examples/filters/sdk_udp_guard.lua --upstream 127.0.0.1:7001
--   printf 'hello' | nc -u -w1 127.0.0.1 7000
local fwx = require "fwx"

local RATIO = 10

local Guard = {}
Guard.__index = Guard

function Guard:SetSockets(internal, external, connection)
  self.internal, self.external, self.connection = internal, external, connection
  self.last_request, self.passed, self.dropped = 0, 0, 0
  internal:Recv(nil, self, "request")
  external:Recv(nil, self, "response")
end

function Guard:CompleteAsyncIO(ok, _, buf, what)
  if not ok then return end -- 995: the session is ending
  if what == "request" then
    self.last_request = #buf
    self.external:Send(buf)
    self.internal:Recv(nil, self, what)
  else
    if #buf <= RATIO * math.max(self.last_request, 1) then
      self.passed = self.passed + 1
      self.internal:Send(buf)
    else
      self.dropped = self.dropped + 1
    end
    self.external:Recv(nil, self, what)
  end
end

function Guard:Detach()
  io.stderr:write(("guard: session %d: %d answers passed, %d dropped\n")
    :format(self.connection and self.connection.id or 0, self.passed or 0, self.dropped or 0))
end

return {
  protocol = "udp",
  listen = "127.0.0.1:7000",
  upstream = "127.0.0.1:7001",
  idle_timeout_ms = 30000,
  filters = { {
    FilterInit = function() return fwx.fwx_Udp_Destination end,
    AttachToSession = function()
      return { FirewallEventHandler = function(_, event)
        event.Parameters.UdpDest.piConnection:AttachDataFilter(setmetatable({}, Guard), fwx.fwx_dfpc_Middle)
      end }
    end,
  } },
}
