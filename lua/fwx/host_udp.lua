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
local fwx = require "fwx"

local M = {}

local ERROR_OPERATION_ABORTED = 995
local ERROR_SEM_TIMEOUT = 121

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
      server.connections = server.connections - 1
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

    if f.on_accept then
      local fine, verdict = call_filter(conn, "on_accept", conn)
      if conn.closed then return nil end
      if (not fine and f.failure == "closed") or (fine and verdict == false) then
        finish(fine and "refused by the filter" or "filter error")
        return nil
      end
    end
    local bound, _, code = up:Bind(bind_any, 0)
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
    up:Recv(nil, on_reply)

    conn._active = fw:now()
    if f.idle_timeout_ms > 0 then
      local function on_idle(tok)
        idle_timer = nil
        if not tok or conn.closed then return end
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
    if conn ~= nil then
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
    if when_drained ~= nil then when_drained() end
  end
  return server
end

return M
