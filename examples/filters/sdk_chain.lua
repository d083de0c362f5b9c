-- Two filters in the SDK's shape (IFWXFilter, IFWXSessionFilter, IFWXDataFilter),
-- whose data filters form one chain per connection:
--   * "uppercase" (class fwx_dfpc_Middle): the client's bytes reach the upstream in
--     upper case, as examples/filters/uppercase.lua does in the short form;
--   * "tally" (class fwx_dfpc_NAT, so nearer the client): counts the bytes it passes
--     each way and prints them when its connection ends.
-- Each data filter moves its bytes itself, in the completion style of the SDK's
-- samples: Recv on both of its sockets, Send what came to the other one, Recv again.
--   fwx run examples/filters/sdk_chain.lua --upstream 127.0.0.1:7001
local fw = ...
local fwx = require "fwx"

-- A data filter that passes each chunk through transform(direction, buf) -> string
-- or buffer. One object is the sink of all four of its operations; the user data says
-- which one completed.
local Relay = {}
Relay.__index = Relay

local function relay(transform)
  return setmetatable({ transform = transform }, Relay)
end

function Relay:SetSockets(internal, external)
  self.internal, self.external = internal, external
  internal:Recv(nil, self, "request")
  external:Recv(nil, self, "response")
end

function Relay:CompleteAsyncIO(ok, err, buf, what)
  if what == "sent" then
    if not ok then self:abort() end
    return
  end
  local from, to = self.internal, self.external
  if what == "response" then from, to = to, from end
  if not ok then return self:abort() end
  if #buf == 0 then -- the end of one direction: pass it on; after both, close
    to:Shutdown()
    self.ended = (self.ended or 0) + 1
    if self.ended == 2 then self:abort() end
    return
  end
  to:Send(self.transform(what, buf), self, "sent")
  from:Recv(nil, self, what)
end

function Relay:abort()
  if self.internal then self.internal:Close() end
  if self.external then self.external:Close() end
end

function Relay:Detach()
  if self.on_detach then self.on_detach() end
  self.internal, self.external = nil, nil
end

local function uppercase(direction, buf)
  if direction == "request" then return tostring(buf):upper() end
  return buf
end

-- A filter whose session filters attach one data filter per accepted connection.
local function filter(class, make)
  return {
    FilterInit = function(_, firewall)
      assert(firewall == fw)
      return fwx.fwx_AcceptedConnection
    end,
    AttachToSession = function(_, session)
      return {
        FirewallEventHandler = function(_, event)
          local conn = event.Parameters.Accept.piConnectionAccepted
          conn:AttachDataFilter(make(conn, session), class)
        end,
      }
    end,
  }
end

return {
  listen = "127.0.0.1:7000",
  upstream = "127.0.0.1:7001",
  filters = {
    filter(fwx.fwx_dfpc_Middle, function() return relay(uppercase) end),
    filter(fwx.fwx_dfpc_NAT, function(conn, session)
      local counts = { request = 0, response = 0 }
      local df = relay(function(direction, buf)
        counts[direction] = counts[direction] + #buf
        return buf
      end)
      df.on_detach = function()
        io.stderr:write(("tally: connection %d from %s: %d bytes up, %d down\n")
          :format(conn.id, tostring(session:GetClientAddress()), counts.request, counts.response))
      end
      return df
    end),
  },
}
