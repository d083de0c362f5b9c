--- fwx.host_sdk: the host's filters in the SDK's shape (DESIGN.md section 5,
-- ISA-SDK.md 2.8 to 3.1), for lua/fwx/host.lua.
--
-- A filter is an object with FilterInit, AttachToSession and FilterShutdown
-- (IFWXFilter). The host calls filter:FilterInit(fw) once, when it starts serving;
-- it returns the events the filter hooks (an OR of fwx.fwx_AcceptedConnection, ...;
-- without FilterInit, all of them). A session is a client address, as the service's
-- SecureNAT sessions are: on the first event of a session that a filter hooks, the
-- host calls filter:AttachToSession(session), which returns the session filter
-- (IFWXSessionFilter: FirewallEventHandler, Detach) and, optionally, the events it
-- hooks for that session. Then each hooked event of the session's connections is
-- raised as session_filter:FirewallEventHandler(event), with event.EventType and
-- event.Parameters as the SDK's FwxFirewallEvent has them:
--
--   fwx_AcceptedConnection    Parameters.Accept = { RemoteAddress, LocalAddress,
--                             piConnectionAccepted, IsSecondary = false }
--   fwx_Connect_Tcp           Parameters.Connect = { Address (the upstream's),
--                             piConnection, IsSecondary = false }
--   fwx_Udp_Destination       Parameters.UdpDest = { Address, piConnection,
--                             IsSecondary = false } (a UDP session: lua/fwx/host_udp.lua)
--   fwx_EstablishedConnection Parameters.EstablishedConnection = { Protocol = "tcp" or
--                             "udp", piConnection }
--   fwx_ConnectionTerminating Parameters.EndConnect = { piConnection, Reason, Error }
--                             (Reason and Error: what the access log says)
--
-- In the first three, connection:AttachDataFilter(df, class, context) puts the data
-- filter df (IFWXDataFilter: SetSockets, Detach) into the connection's chain, ordered
-- by class (fwx.fwx_dfpc_NAT, client side, to fwx.fwx_dfpc_Emulation) and, within a
-- class, by the order of the calls. Once the upstream is connected, the host calls
-- df:SetSockets(internal, external, connection, context) for each, client side first:
-- the first one's internal socket is the client's, the last one's external socket the
-- upstream's, and between two data filters is a link (lua/fwx/link.lua). The data
-- filters then move the bytes themselves (Recv, Send, ...). A connection without data
-- filters is pumped by the core, in C. A data filter of class fwx_dfpc_Emulation
-- answers the client itself: the host does not connect upstream, and that filter, the
-- last of the chain, gets nil as its external socket.
--
-- The connection ends once the filters have closed the client's socket and the
-- upstream's (reason "closed"), at a limit in time, when a filter calls
-- connection:Kill() (reason "killed by the filter"), or at shutdown. The host then
-- closes what is still open (so pending operations end with 995, which may come after
-- Detach, as the SDK allows), raises fwx_ConnectionTerminating, and calls each data
-- filter's Detach. When a session's last connection has ended, its session filters'
-- Detach is called; when the server has shut down, each filter's FilterShutdown.
--
-- Every call into a filter is protected. A raising AttachToSession or
-- FirewallEventHandler refuses the connection (or, with failure = "open", is logged
-- and the connection goes on); a raising SetSockets, or a notification of a data
-- filter's operation that raises, ends that connection alone ("filter error").
local fwx = require "fwx"
local link = require "fwx.link"

local M = {}

-- FwxFirewallEventType and FwxDataFilterPriorityClass (ISA-SDK.md 2.10): lua/fwx/init.lua
-- defines them (fwx.fwx_AcceptedConnection, fwx.fwx_dfpc_Middle, ...).
local EMULATION = fwx.fwx_dfpc_Emulation
local ACCEPTED = fwx.fwx_AcceptedConnection
local CONNECT = fwx.fwx_Connect_Tcp
local UDP_DEST = fwx.fwx_Udp_Destination
local ESTABLISHED = fwx.fwx_EstablishedConnection
local TERMINATING = fwx.fwx_ConnectionTerminating
local ALL_EVENTS = 0 -- what a filter without FilterInit hooks
for _, flag in pairs(fwx.events) do ALL_EVENTS = ALL_EVENTS | flag end

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring

local function callable(obj, name)
  local t = type(obj)
  return (t == "table" or t == "userdata") and type(obj[name]) == "function"
end

local function check_events(mask, what)
  if math.type(mask) ~= "integer" or mask < 0 then
    error(("%s must return the events it hooks (an integer of fwx.fwx_* flags), got %s")
      :format(what, tostring(mask)), 0)
  end
  return mask
end

--- host_sdk.filters(filter) -> the list of SDK filters a filter table names, or nil
-- for the short form: filter.filters, a list, or the table itself when it has
-- AttachToSession. Raises with a clear message on a bad one.
function M.filters(filter)
  local list = filter.filters
  if list == nil then
    if type(filter.AttachToSession) == "function" then return { filter } end
    return nil
  end
  if type(list) ~= "table" or #list == 0 then
    error("filters must be a non-empty list of SDK filters (objects with AttachToSession)", 0)
  end
  for i, f in ipairs(list) do
    if not callable(f, "AttachToSession") then
      error(("filters[%d] has no AttachToSession method"):format(i), 0)
    end
    for _, name in ipairs({ "FilterInit", "FilterShutdown" }) do
      if f[name] ~= nil and type(f[name]) ~= "function" then
        error(("filters[%d].%s must be a function"):format(i, name), 0)
      end
    end
  end
  return list
end

-- A real socket as a data filter is given it: the core's socket itself, under a
-- metatable of the host's. Its Recv and Send are the core's own methods, and the core
-- counts what they move (s:counters()): the idle limit and the byte counts read the
-- counts, so no call of the filter's goes through the host. (A wrapper table with a
-- closure per Recv and per Send, which counted in Lua, cost the SDK shape about 1 600
-- instructions a proxied message.) Close is the host's, to see the closes that end
-- the connection; the methods are those of the SDK's IFWXSocket, with the await
-- style's recv, send and settimeout, counters and setsendlimit.
local hosted = setmetatable({}, { __mode = "k" }) -- socket -> { conn =, side =, closed = }
local HOSTED_METHODS = { "Recv", "Send", "Shutdown", "CancelIo", "GetSockName",
  "GetPeerName", "SetSockOpt", "GetSockOpt", "IsClosed", "recv", "send", "settimeout",
  "counters", "setsendlimit" }
local socket_class = debug.getregistry()["fwx.socket"] -- the core's socket class
local core_close = socket_class.__index.Close

local function hosted_close(s, abortive)
  core_close(s, abortive)
  local h = hosted[s]
  if h ~= nil and not h.closed then
    h.closed = true
    h.conn._end_closed(s)
  end
  return true
end

local hosted_methods = { Close = hosted_close }
for _, name in ipairs(HOSTED_METHODS) do hosted_methods[name] = socket_class.__index[name] end
-- An abortive shutdown is an abortive close (the core's Shutdown says so too).
local core_shutdown = hosted_methods.Shutdown
function hosted_methods.Shutdown(e, abortive)
  if abortive then return hosted_close(e, true) end
  return core_shutdown(e)
end

local Hosted = {
  __name = socket_class.__name,
  __index = hosted_methods,
  __gc = socket_class.__gc, -- a socket nobody holds is closed, as any socket
  __close = function(e) hosted_close(e) end,
  __tostring = function(e)
    local h = hosted[e]
    return ("fwx.socket %s of connection %d"):format(h.side, h.conn.id)
  end,
}

-- The real socket s of connection c, as its data filter is given it. The count of its
-- operations starts now.
local function socket_end(c, s, side)
  hosted[s] = { conn = c, side = side, closed = false }
  s:counters()
  return debug.setmetatable(s, Hosted)
end

-- What has happened on connection c's real sockets so far, as one number that changes
-- whenever something does: the Recv and Send calls and the bytes moved (by them, or by
-- a pump a data filter handed the sockets to). The idle limit's clock.
local function moved(s)
  local sent, received, calls = s:counters()
  return sent + received + calls
end
local function activity(c)
  local n = 0
  if not link.is_link(c._client_end) then n = moved(c._client_end) end -- (a UDP
  -- session's client end is a link: the host sees its datagrams itself)
  if c._upstream_end ~= nil then n = n + moved(c._upstream_end) end
  return n
end

-- IFWXSession: a client address.
local Session = {}
Session.__index = Session
function Session:GetClientAddress() return self._address end
Session.__tostring = function(s) return ("fwx.session %s"):format(s._ip) end

-- IFWXConnection.
local Connection = {}
Connection.__index = Connection

--- connection:AttachDataFilter(df, class, context): only inside FirewallEventHandler
-- for fwx_AcceptedConnection, fwx_Connect_Tcp or fwx_Udp_Destination.
function Connection:AttachDataFilter(df, class, context)
  local c = self._conn
  if not callable(df, "SetSockets") then
    error("bad argument #1 to 'AttachDataFilter' (data filter with a SetSockets method expected)", 2)
  end
  if df.Detach ~= nil and type(df.Detach) ~= "function" then
    error("bad argument #1 to 'AttachDataFilter' (its Detach must be a method)", 2)
  end
  if math.type(class) ~= "integer" or class < 0 or class > EMULATION then
    error(("bad argument #2 to 'AttachDataFilter' (a priority class, fwx.fwx_dfpc_NAT (0) to fwx.fwx_dfpc_Emulation (6), expected, got %s)")
      :format(tostring(class)), 2)
  end
  if c.closed then error("AttachDataFilter: the connection is terminating (FWX_E_TERMINATING)", 2) end
  if not c._may_attach then
    error("AttachDataFilter: only inside FirewallEventHandler, for fwx_AcceptedConnection, fwx_Connect_Tcp or fwx_Udp_Destination", 2)
  end
  local chain = c._chain
  chain[#chain + 1] = { df = df, class = class, context = context, order = #chain + 1 }
  if class == EMULATION then c._emulated = true end
  return true
end

--- connection:Kill(): ends the connection at once.
function Connection:Kill()
  local c = self._conn
  if not c.closed then c._close("killed by the filter") end
  return true
end

--- connection:Deny(): refuses it, from FirewallEventHandler (later: as Kill).
function Connection:Deny()
  local c = self._conn
  if c._may_attach then
    c._denied = true
  elseif not c.closed then
    c._close("refused by the filter")
  end
  return true
end

-- The upstream's addresses, once it is connected.
local function external_name(self, peer)
  local c = self._conn
  if c.closed then return nil, "FWX_E_TERMINATING", 0xC0040001 end
  if not c._established or c._emulated then return nil, "WSAEINVAL", 10022 end
  if peer then return c._upstream:GetPeerName() end
  return c._upstream:GetSockName()
end
function Connection:GetExternalPeerName() return external_name(self, true) end
function Connection:GetExternalSocketName() return external_name(self, false) end
function Connection:GetSession() return self._conn._session.api end
Connection.__tostring = function(x) return ("fwx.connection %d (%s)"):format(x.id, tostring(x.client)) end

--- host_sdk.new(list, fw, f, report) -> the SDK side of one server: the filters
-- initialised (a raising FilterInit raises here).
function M.new(list, fw, f, report)
  local sdk = {}
  local filters = {}
  for i, filter in ipairs(list) do
    local mask = ALL_EVENTS
    if filter.FilterInit ~= nil then
      local fine, res = xpcall(filter.FilterInit, debug.traceback, filter, fw)
      if not fine then error(("filters[%d]: FilterInit raised: %s"):format(i, tostring(res)), 0) end
      mask = check_events(res, ("filters[%d]:FilterInit"):format(i))
    end
    filters[i] = { filter = filter, events = mask, index = i }
  end
  local sessions = {} -- client ip -> session

  -- Run fn(...) protected; a raise is reported as conn's: whether it ran, its result.
  local function protected(conn, what, fn, ...)
    local fine, res, extra = xpcall(fn, debug.traceback, ...)
    if not fine then
      report(f, conn, what, res)
      return false
    end
    return true, res, extra
  end

  local function session_of(conn)
    local ip = conn.client.ip
    local s = sessions[ip]
    if s == nil then
      s = { ip = ip, connections = 0, filters = {} }
      s.api = setmetatable({ _address = conn.client, _ip = ip }, Session)
      sessions[ip] = s
    end
    return s
  end

  --- sdk.connection(conn, conn_of): conn joins its session; conn.api is its
  -- IFWXConnection. conn_of is the host's weak table from a socket to its connection
  -- (how a raising handler finds the connection it fails): conn._own(link_end) puts
  -- the ends of the links made for conn there.
  function sdk.connection(conn, conn_of)
    local s = session_of(conn)
    s.connections = s.connections + 1
    conn._session = s
    conn._chain = {}
    conn.api = setmetatable({ _conn = conn, id = conn.id, client = conn.client }, Connection)
    function conn._own(obj) conn_of[obj] = conn end
  end

  -- The session filter of filter entry e in session s, attached on first use: nil if
  -- AttachToSession raised or gave none (then false is remembered: not asked again).
  local function session_filter(conn, s, e)
    local sf = s.filters[e.index]
    if sf ~= nil then return sf or nil end
    local fine, obj, mask = protected(conn, ("filters[%d]:AttachToSession"):format(e.index),
      e.filter.AttachToSession, e.filter, s.api)
    if fine and not callable(obj, "FirewallEventHandler") then
      report(f, conn, ("filters[%d]:AttachToSession"):format(e.index),
        "returned no session filter (an object with FirewallEventHandler)")
      fine = false
    end
    if fine and mask ~= nil and (math.type(mask) ~= "integer" or mask < 0) then
      report(f, conn, ("filters[%d]:AttachToSession"):format(e.index),
        "returned events that are not an integer of fwx.fwx_* flags")
      fine = false
    end
    if not fine then
      s.filters[e.index] = false
      return nil, true
    end
    sf = { obj = obj, events = mask or e.events }
    s.filters[e.index] = sf
    return sf
  end

  --- sdk.event(conn, type, parameters) -> true, or false and the reason to end the
  -- connection with: each filter that hooks the event hears of it, in the order of
  -- the list.
  function sdk.event(conn, etype, parameters)
    local s = conn._session
    local event = { EventType = etype, Parameters = parameters }
    conn._may_attach = etype == ACCEPTED or etype == CONNECT or etype == UDP_DEST
    for _, e in ipairs(filters) do
      if e.events & etype ~= 0 then
        local sf, failed = session_filter(conn, s, e)
        local fine = not failed
        if sf ~= nil and sf.events & etype ~= 0 then
          fine = protected(conn, ("filters[%d]:FirewallEventHandler"):format(e.index),
            sf.obj.FirewallEventHandler, sf.obj, event)
        end
        if conn.closed and etype ~= TERMINATING then break end
        if not fine and f.failure == "closed" and etype ~= TERMINATING then
          conn._may_attach = false
          return false, "filter error"
        end
        if conn._denied then
          conn._may_attach = false
          return false, "refused by the filter"
        end
      end
    end
    conn._may_attach = false
    return true
  end

  --- sdk.has_chain(conn): whether data filters were attached.
  function sdk.has_chain(conn) return #conn._chain > 0 end

  --- sdk.activity(conn): a number that changes whenever something happens on conn's
  -- real sockets (a Recv or Send call, bytes moved).
  sdk.activity = activity

  --- sdk.start(conn, client, upstream) -> true, or false and a reason: the chain
  -- built and every data filter's SetSockets called, client side first. upstream is
  -- nil when the connection is emulated. client is the client's socket, or (a UDP
  -- session's) the end of a link whose other end the host keeps: the host sees the
  -- datagrams go through it, and its end.
  function sdk.start(conn, client, upstream)
    local chain = conn._chain
    table.sort(chain, function(a, b)
      if a.class ~= b.class then return a.class < b.class end
      return a.order < b.order
    end)
    conn._established = upstream ~= nil
    local ends = {}
    conn._ends = ends
    local function end_closed(e)
      if e == conn._client_end then conn._client_closed = true end
      if e == conn._upstream_end then conn._upstream_closed = true end
      if conn._client_closed and (conn._upstream_closed or upstream == nil) and not conn.closed then
        conn._close("closed")
      end
    end
    conn._end_closed = end_closed
    -- Every socket and link a data filter is given holds at most send_limit_bytes
    -- that it has not yet written or that were not yet taken (DESIGN.md 2.7).
    local limit = f.send_limit_bytes
    local function real(s, side)
      local e = socket_end(conn, s, side)
      e:setsendlimit(limit)
      ends[#ends + 1] = e
      return e
    end
    if link.is_link(client) then
      conn._client_end = client
      client:setsendlimit(limit)
      ends[#ends + 1] = client
    else
      conn._client_end = real(client, "client")
    end
    if upstream ~= nil then conn._upstream_end = real(upstream, "upstream") end
    local internal = conn._client_end
    local towards = upstream and upstream:GetPeerName() or nil
    for i, entry in ipairs(chain) do
      local external
      if i < #chain then
        -- Each end's names are the connection's: the client's on the client side.
        local a, b = link.pair(fw, conn.client, towards)
        a:setsendlimit(limit)
        b:setsendlimit(limit)
        conn._own(a)
        conn._own(b)
        ends[#ends + 1], ends[#ends + 2] = a, b
        external, entry.next_internal = a, b
      else
        external = conn._upstream_end -- nil when emulated
      end
      entry.internal, entry.external = internal, external
      internal = entry.next_internal
    end
    for i, entry in ipairs(chain) do
      local fine = protected(conn, ("data filter %d:SetSockets"):format(i),
        entry.df.SetSockets, entry.df, entry.internal, entry.external, conn.api, entry.context)
      if conn.closed then return true end
      if not fine then return false, "filter error" end
    end
    return true
  end

  --- sdk.ended(conn, reason, err): the connection has ended; its sockets are closed.
  function sdk.ended(conn, reason, err)
    if conn._client_end ~= nil then
      -- What the data filters sent to each side: the request went to the upstream. (A
      -- UDP session's host counts what it sends the client itself.)
      if not link.is_link(conn._client_end) then conn.response_bytes = conn._client_end:counters() end
      if conn._upstream_end ~= nil then conn.request_bytes = conn._upstream_end:counters() end
    end
    if conn._ends then
      -- The host ends them all: each receive waiting on a link ends with 995, as on
      -- the real sockets, before a close could tell it of a reset instead.
      for _, e in ipairs(conn._ends) do
        if link.is_link(e) then e:CancelIo() end
      end
      for _, e in ipairs(conn._ends) do
        if link.is_link(e) then e:Close(true) end
      end
    end
    sdk.event(conn, TERMINATING, { EndConnect = { piConnection = conn.api, Reason = reason, Error = err } })
    for i, entry in ipairs(conn._chain) do
      if entry.df.Detach ~= nil then
        protected(conn, ("data filter %d:Detach"):format(i), entry.df.Detach, entry.df)
      end
    end
    local s = conn._session
    s.connections = s.connections - 1
    if s.connections == 0 then
      sessions[s.ip] = nil
      for i = 1, #filters do
        local sf = s.filters[i]
        if sf and sf.obj.Detach ~= nil then
          protected(conn, ("filters[%d] session filter:Detach"):format(i), sf.obj.Detach, sf.obj)
        end
      end
    end
  end

  --- sdk.shutdown(): every filter's FilterShutdown, once.
  local shut = false
  function sdk.shutdown()
    if shut then return end
    shut = true
    for _, e in ipairs(filters) do
      if e.filter.FilterShutdown ~= nil then
        local fine, res = xpcall(e.filter.FilterShutdown, debug.traceback, e.filter)
        if not fine and f.error_log then
          f.error_log(("fwx: filters[%d]:FilterShutdown raised: %s"):format(e.index, tostring(res)))
        end
      end
    end
  end

  sdk.ACCEPTED, sdk.CONNECT, sdk.ESTABLISHED, sdk.UDP_DEST = ACCEPTED, CONNECT, ESTABLISHED, UDP_DEST
  return sdk
end

return M
