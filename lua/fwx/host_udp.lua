--- fwx.host_udp: the host for a filter with protocol = "udp" (DESIGN.md section 5: a
-- filtering TCP/UDP proxy). lua/fwx/host.lua checks the filter and calls start.
--
-- UDP has no connections, so the host makes sessions, as nginx's stream proxy and
-- Envoy's udp_proxy do: the first datagram from a client address opens one (with
-- on_accept, max_connections and an access-log line at its end, as a TCP
-- connection), and the session gets a socket of its own towards the upstream, so that
-- the upstream's replies come back to it and go to that client from the listening
-- socket. Each datagram passes through on_data(conn, direction, buf) whole; an empty
-- datagram is a datagram, not an end. A session ends when it has been idle for
-- idle_timeout_ms (no datagram either way), at total_timeout_ms, when the filter
-- closes it, when the upstream's socket fails, or at shutdown. (An upstream that is
-- not there answers with an ICMP port unreachable, which Linux does not report to an
-- unconnected socket: such a session ends when it is idle.) The idle limit notes fw:now() per datagram and one timer per session
-- waits it out, set again for what is left when it fires early.
--
-- With filters in the SDK's shape (lua/fwx/host_sdk.lua), a session raises
-- fwx_Udp_Destination (Parameters.UdpDest = { Address, piConnection, IsSecondary })
-- when it opens, and its session filters may attach data filters there. A session
-- without one is relayed by the host, as above. With a chain, the session's socket
-- towards the upstream is connected to it and handed to the last data filter as its
-- external socket (fwx_EstablishedConnection comes first, with Protocol "udp"), and
-- the first one's internal socket is the end of a link whose other end is the host's:
-- each datagram from the client is one Send into it (one Recv out of it, whole), and
-- each Send of the filter's into it one datagram to the client. What the host holds
-- for a filter that does not receive is bounded (SDK_QUEUE_MAX datagrams; beyond, they
-- are dropped, as a full socket buffer drops them). An empty datagram cannot cross a
-- link (a 0-byte receive is the end of the stream): the host drops empty datagrams
-- of such sessions. The session ends as the TCP host's connections do: once the
-- filters have closed both ends (reason "closed"), at a limit, Kill, or shutdown.
local fwx = require "fwx"
local link = require "fwx.link"

local M = {}

local ERROR_OPERATION_ABORTED = 995
local ERROR_SEM_TIMEOUT = 121
-- Datagrams from a client queued towards a data filter that has not taken them.
local SDK_QUEUE_MAX = 64

--- M.start(f, fw, host) -> server: f the checked filter, host what host.lua shares
-- (Conn, conn_of, report, counts, metrics, call_filter, connection_ended,
-- listen_port, workers, worker, id_step, id_first).
function M.start(f, fw, host)
  local server = { connections = 0, accepted = 0 }
  local counts = host.counts
  local sessions = {}    -- client address string -> conn
  local upstream_name = ("%s:%d"):format(f.upstream_host, f.upstream_port)
  local bind_any = f.upstream_host:find(":", 1, true) and "::" or "0.0.0.0"

  local ls = fw:CreateNetworkSocket("udp")
  local port, port_key = host.listen_port(f)
  if host.workers > 1 then assert(ls:SetSockOpt("reuseport", true)) end
  local ok, msg = ls:Bind(f.listen_host, port)
  if not ok then
    ls:Close()
    error(("cannot listen on %s:%d (udp): %s"):format(f.listen_host, port, msg), 0)
  end
  server.port = ls:GetSockName().port
  server.address = ls:GetSockName()
  server.protocol = "udp"
  if host.workers > 1 and host.worker == 1 then fwx.store.set(port_key, server.port) end

  local function call_filter(conn, name, ...) return host.call_filter(f, conn, name, ...) end
  local sdk = host.sdk
  local upstream_address = setmetatable({ ip = f.upstream_host, port = f.upstream_port },
    { __tostring = function() return upstream_name end })

  -- What a datagram becomes after on_data: the bytes to send, or nil (dropped), and
  -- whether the session goes on.
  local function filtered(conn, direction, buf)
    if f.on_data == nil then return buf, true end
    local fine, out = call_filter(conn, "on_data", conn, direction, buf)
    if conn.closed then return nil, false end
    if not fine then
      if f.failure == "open" then return buf, true end
      return nil, false, "filter error"
    end
    if out == nil then return buf, true end
    if out == false then return nil, true end
    local t = type(out)
    if t == "string" then return out, true end
    local mt = t == "userdata" and getmetatable(out)
    if type(mt) == "table" and mt.__name == "fwx.buffer" then return out, true end
    host.report(f, conn, "on_data", ("on_data returned a %s (nil, false, a string or an fwx.buffer expected)"):format(t))
    return nil, false, "filter error"
  end

  -- A datagram from the client of a session with data filters: one Send into the
  -- host's end of the link to the first of them, unless SDK_QUEUE_MAX are still
  -- waiting to be taken (a filter that does not receive holds no more than that).
  local function taken(_, _, _, conn) conn._queued = conn._queued - 1 end
  local function to_chain(conn, buf)
    conn._active = fw:now()
    if #buf == 0 or conn._queued >= SDK_QUEUE_MAX then return end
    conn._queued = conn._queued + 1
    conn._host_end:Send(buf, taken, conn)
  end

  -- The chain of a session's data filters: the link from the host to the first, the
  -- session's socket connected to the upstream (unless emulated), fwx_Established-
  -- Connection, then each SetSockets. What the first filter sends into the link goes
  -- to the client; its end of the link closed (or shut) is the client side's end.
  local function start_chain(conn, up, from)
    local mine, theirs = link.pair(fw, from, server.address)
    conn._own(mine)
    conn._own(theirs)
    conn._host_end, conn._queued = mine, 0
    local function on_out(ok, _, buf)
      if conn.closed then return end
      if not ok or #buf == 0 then return conn._end_closed(theirs) end
      conn.response_bytes = conn.response_bytes + #buf
      conn._active = fw:now()
      ls:SendTo(buf, from)
      mine:Recv(nil, on_out)
    end
    local function go(upstream)
      local fine, why = sdk.start(conn, theirs, upstream)
      if conn.closed then return end
      if not fine then return conn._close(why) end
      mine:Recv(nil, on_out)
    end
    if conn._emulated then
      up:Close()
      return go(nil)
    end
    up:Connect(f.upstream_host, f.upstream_port, function(ok, err)
      if conn.closed then return end
      if not ok then return conn._close("upstream", err) end
      conn._upstream = up
      local fine, why = sdk.event(conn, sdk.ESTABLISHED, { EstablishedConnection = {
        Protocol = "udp", piConnection = conn.api } })
      if conn.closed then return end
      if not fine then return conn._close(why) end
      go(up)
    end)
  end

  local function open_session(from, key)
    server.accepted = server.accepted + 1
    counts.accepted = counts.accepted + 1
    if server.connections >= f.max_connections then
      counts.refused = counts.refused + 1
      if f.access_log then
        f.access_log(("fwx: conn=%d client=%s end=refused (max_connections %d)")
          :format(server.accepted, tostring(from), f.max_connections))
      end
      return nil
    end
    local conn = setmetatable({ id = host.id_first + (server.accepted - 1) * host.id_step, client = from,
                                upstream = upstream_name, closed = false, protocol = "udp",
                                request_bytes = 0, response_bytes = 0 }, host.Conn)
    local up = fw:CreateNetworkSocket("udp")
    local idle_timer, total_timer
    server.connections = server.connections + 1

    local function finish(reason, err)
      if conn.closed then return end
      conn.closed = true
      sessions[key] = nil
      if idle_timer ~= nil then idle_timer:Cancel() end
      if total_timer ~= nil then total_timer:Cancel() end
      up:Close()
      if conn._host_end ~= nil then
        conn._host_end:CancelIo()
        conn._host_end:Close(true)
      end
      server.connections = server.connections - 1
      if sdk then sdk.ended(conn, reason, err) end
      host.connection_ended(f, counts, conn, reason, err)
    end
    conn._close = finish
    function conn._failed(message) -- a handler of this session raised (host.service)
      host.report(f, conn, "a handler", message)
      finish("error")
    end
    conn._inject = function(direction, data)
      if direction == "request" then
        up:SendTo(data, f.upstream_host, f.upstream_port)
      else
        ls:SendTo(data, from)
      end
    end
    host.conn_of[up] = conn
    if sdk then
      sdk.connection(conn, host.conn_of)
    end

    if f.on_accept then
      local fine, verdict = call_filter(conn, "on_accept", conn)
      if conn.closed then return nil end
      if (not fine and f.failure == "closed") or (fine and verdict == false) then
        finish(fine and "refused by the filter" or "filter error")
        return nil
      end
    end
    if sdk then
      local fine, why = sdk.event(conn, sdk.UDP_DEST, { UdpDest = {
        Address = upstream_address, piConnection = conn.api, IsSecondary = false } })
      if conn.closed then return nil end
      if not fine then
        finish(why)
        return nil
      end
    end
    local bound, _, code
    if conn._emulated then
      bound = true
    else
      bound, _, code = up:Bind(bind_any, 0)
    end
    if not bound then
      finish("error", code)
      return nil
    end

    local function on_reply(rok, rerr, buf)
      if conn.closed then return end
      if not rok then
        if rerr == ERROR_OPERATION_ABORTED then return end
        return finish("upstream", rerr)
      end
      conn.response_bytes = conn.response_bytes + #buf
      conn._active = fw:now()
      local out, goes_on, why_not = filtered(conn, "response", buf)
      if not goes_on then return finish(why_not or "closed by the filter") end
      if out ~= nil then ls:SendTo(out, from) end
      up:Recv(nil, on_reply)
    end
    if sdk and sdk.has_chain(conn) then
      start_chain(conn, up, from)
      if conn.closed then return nil end -- an emulated chain's SetSockets failed
    else
      up:Recv(nil, on_reply)
    end

    conn._active = fw:now()
    if f.idle_timeout_ms > 0 then
      local function on_idle(tok)
        idle_timer = nil
        if not tok or conn.closed then return end
        if conn._host_end ~= nil and conn._client_end ~= nil then
          -- a chain's: what its filters did on the upstream's socket counts too, as
          -- seen now (a session busy only there ends 1 to 2 limits after its last move)
          local n = sdk.activity(conn)
          if n ~= conn._moved then conn._moved, conn._active = n, fw:now() end
        end
        local left = conn._active + f.idle_timeout_ms - fw:now()
        if left <= 0 then return finish("idle timeout", ERROR_SEM_TIMEOUT) end
        idle_timer = fw:SetTimer(left, on_idle)
      end
      idle_timer = fw:SetTimer(f.idle_timeout_ms, on_idle)
    end
    if f.total_timeout_ms > 0 then
      total_timer = fw:SetTimer(f.total_timeout_ms, function(tok)
        if tok then finish("total timeout", ERROR_SEM_TIMEOUT) end
      end)
    end
    sessions[key] = conn
    return conn
  end

  local function on_datagram(rok, rerr, buf, _, from)
    if not rok then
      if rerr == ERROR_OPERATION_ABORTED then return end -- the listener was closed
      io.stderr:write(("fwx: udp receive failed: %d\n"):format(rerr))
      return ls:Recv(nil, on_datagram)
    end
    local key = tostring(from)
    local conn = sessions[key]
    if conn == nil then conn = open_session(from, key) end
    if conn ~= nil and conn._host_end ~= nil then
      to_chain(conn, buf)
    elseif conn ~= nil then
      conn.request_bytes = conn.request_bytes + #buf
      conn._active = fw:now()
      local out, goes_on, why_not = filtered(conn, "request", buf)
      if not goes_on then
        conn._close(why_not or "closed by the filter")
      elseif out ~= nil then
        local sent, serr = pcall(conn._inject, "request", out)
        if not sent then conn._close("error", tostring(serr)) end
      end
    end
    ls:Recv(nil, on_datagram)
  end
  ls:Recv(nil, on_datagram)

  function server.metrics() return host.metrics.snapshot(counts, fw, server.connections) end

  --- server.close(): stop receiving, and end the open sessions (reason "shutdown"):
  -- their answers go out through the listening socket, so unlike TCP connections
  -- they cannot go on without it.
  function server.close()
    ls:Close()
    if host.served then host.served.close() end
    local list = {}
    for _, conn in pairs(sessions) do list[#list + 1] = conn end
    table.sort(list, function(a, b) return a.id < b.id end)
    for _, conn in ipairs(list) do conn._close("shutdown") end
  end

  --- server.shutdown(ms, when_drained): as the TCP host's, but a datagram session has
  -- no end of its own to wait for (it ends only when idle), so the sessions end at
  -- once, whatever ms.
  function server.shutdown(_, when_drained)
    server.close()
    if sdk then sdk.shutdown() end
    if when_drained ~= nil then when_drained() end
  end
  return server
end

return M
