--- fwx.host: the Firewall service (DESIGN.md section 5), a filtering TCP proxy whose
-- filters are Lua tables in the short form:
--
--   return {
--     listen   = "127.0.0.1:7000",          -- where clients come in
--     upstream = "127.0.0.1:7001",          -- where each connection is forwarded
--     on_accept = function(conn) ... end,   -- false: refuse the connection
--     on_data   = function(conn, direction, buf) ... end, -- see below
--     on_close  = function(conn, result) ... end,
--     protocol = "tcp",                     -- or "udp": sessions by client address
--                                           -- (lua/fwx/host_udp.lua)
--     failure = "closed",                   -- or "open": what a raising filter means
--     max_connections = 10000,              -- per worker
--     connect_timeout_ms = 10000,           -- for the upstream's connect
--     idle_timeout_ms = 600000,             -- no byte either way for this long ends it
--     total_timeout_ms = 0,                 -- a connection's whole life; 0: no limit
--     send_limit_bytes = 1048576,           -- SDK data filters: what each socket and
--                                           -- link holds unsent; 0: no limit
--     threads = 1,                          -- worker threads (fwx.serve), each
--                                           -- listening on the port (SO_REUSEPORT)
--     shutdown_timeout_ms = 30000,          -- how long SIGTERM lets connections drain
--     metrics_listen = "127.0.0.1:9100",    -- Prometheus metrics there; nil: none
--     access_log = true,                    -- stderr; a function(line); false: none
--     error_log = true,                     -- where filter errors go, the same way
--   }
--
-- Filters may instead have the SDK's shape (filters = { ... } with FilterInit,
-- AttachToSession, data filters attached by priority class): lua/fwx/host_sdk.lua.
--
-- A connection with no on_data is pumped by the C core alone (fw:Pump: splice, no Lua
-- per chunk), the SDK's "kernel mode" pumping. With on_data, every chunk passes through
-- Lua: direction is "request" (client to upstream) or "response" (upstream to client);
-- returning nil forwards buf as it is, a string or a buffer forwards that instead,
-- false drops the chunk; conn:send(direction, data) injects bytes and conn:close()
-- ends the connection. Each direction stops reading while about 128 KiB it sent are
-- not yet written (backpressure), as the benchmark's proxies do.
local fwx = require "fwx"
local metrics = require "fwx.host_metrics"
local host_sdk = require "fwx.host_sdk"

local M = {}

local ERROR_OPERATION_ABORTED = 995
local ERROR_SEM_TIMEOUT = 121
local DIRECTIONS = { request = true, response = true }

-- "host:port" or "[v6]:port" -> host, port.
local function endpoint(value, what)
  local h, p
  if type(value) == "string" then
    h, p = value:match("^%[(.+)%]:(%d+)$")
    if not h then h, p = value:match("^([^:]+):(%d+)$") end
  end
  if not h then
    error(("%s must be \"host:port\", got %s"):format(what,
      type(value) == "string" and ("%q"):format(value) or type(value)), 0)
  end
  p = tonumber(p)
  if p > 65535 then error(("%s: port %d is out of range"):format(what, p), 0) end
  return h, p
end

-- The filter as the host runs it: checked once, with every default filled in.
local function check_filter(filter)
  if type(filter) ~= "table" then
    error(("a filter is a table, got %s"):format(type(filter)), 0)
  end
  local f = {}
  f.listen_host, f.listen_port = endpoint(filter.listen or "127.0.0.1:7000", "listen")
  f.upstream_host, f.upstream_port = endpoint(filter.upstream, "upstream")
  if filter.metrics_listen ~= nil then
    f.metrics_host, f.metrics_port = endpoint(filter.metrics_listen, "metrics_listen")
  end
  for _, name in ipairs({ "on_accept", "on_data", "on_close" }) do
    local fn = filter[name]
    if fn ~= nil and type(fn) ~= "function" then
      error(("%s must be a function, got %s"):format(name, type(fn)), 0)
    end
    f[name] = fn
  end
  f.protocol = filter.protocol or "tcp"
  if f.protocol ~= "tcp" and f.protocol ~= "udp" then
    error(("protocol must be \"tcp\" or \"udp\", got %s"):format(tostring(filter.protocol)), 0)
  end
  -- The SDK's shape (fwx.host_sdk): filters = { ... }, or the table is one.
  f.sdk_filters = host_sdk.filters(filter)
  if f.sdk_filters ~= nil then
    if f.on_data ~= nil then
      error("on_data and SDK filters (AttachToSession) do not mix: attach a data filter instead", 0)
    end
  end
  f.failure = filter.failure or "closed"
  if f.failure ~= "closed" and f.failure ~= "open" then
    error(("failure must be \"closed\" or \"open\", got %s"):format(tostring(filter.failure)), 0)
  end
  f.shutdown_timeout_ms = filter.shutdown_timeout_ms or 30000
  if math.type(f.shutdown_timeout_ms) ~= "integer" or f.shutdown_timeout_ms < 0 then
    error("shutdown_timeout_ms must be an integer of 0 or more", 0)
  end
  f.max_connections = filter.max_connections or 10000
  if math.type(f.max_connections) ~= "integer" or f.max_connections < 1 then
    error("max_connections must be a positive integer", 0)
  end
  -- Limits in time, 0 for none. The defaults: Envoy's and HAProxy's advice for a
  -- connect (a few seconds), nginx's proxy_timeout for idleness (10 minutes), and no
  -- limit on a connection that keeps moving bytes, as neither of them sets one.
  for name, default in pairs({ connect_timeout_ms = 10000, idle_timeout_ms = 600000,
                               total_timeout_ms = 0 }) do
    local ms = filter[name]
    if ms == nil then ms = default end
    if math.type(ms) ~= "integer" or ms < 0 then
      error(("%s must be an integer of 0 or more (ms; 0: no limit), got %s"):format(name, tostring(ms)), 0)
    end
    f[name] = ms
  end
  f.send_limit_bytes = filter.send_limit_bytes or 1048576
  if math.type(f.send_limit_bytes) ~= "integer" or f.send_limit_bytes < 0 then
    error(("send_limit_bytes must be an integer of 0 or more (0: no limit), got %s")
      :format(tostring(filter.send_limit_bytes)), 0)
  end
  f.threads = filter.threads or 1
  if math.type(f.threads) ~= "integer" or f.threads < 1 or f.threads > 1024 then
    error("threads must be an integer from 1 to 1024", 0)
  end
  for _, name in ipairs({ "access_log", "error_log" }) do
    local log = filter[name]
    if log == nil or log == true then
      f[name] = function(line) io.stderr:write(line, "\n") end
    elseif log == false then
      f[name] = nil
    elseif type(log) == "function" then
      f[name] = log
    else
      error(name .. " must be true, false or a function", 0)
    end
  end
  return f
end

-- A connection as filters see it.
local Conn = {}
Conn.__index = Conn

function Conn:close() self._close("closed by the filter") end

--- conn:send(direction, data): bytes that go out as if they came in that direction
-- ("request": to the upstream, "response": to the client).
function Conn:send(direction, data)
  if not DIRECTIONS[direction] then
    error(("bad argument #1 to 'send' (\"request\" or \"response\" expected, got %s)")
      :format(tostring(direction)), 2)
  end
  if self.closed then return false end
  if self._inject then -- a UDP session (fwx.host_udp)
    self._inject(direction, data)
    return true
  end
  local dst = direction == "request" and self._upstream or self._client
  dst:Send(data)
  return true
end

--- conn:pause(direction), conn:resume(direction): on_data sees no chunk of that
-- direction until it is resumed; what the peer sends meanwhile waits (the peer is
-- pushed back on). A chunk already on its way when it paused is held, and comes after
-- resume, from the dispatcher. For the filtered pump only: without on_data the core
-- moves the bytes in C, and a UDP session has no stream to hold back.
local function pause_or_resume(conn, direction, method, name)
  if not DIRECTIONS[direction] then
    error(("bad argument #1 to '%s' (\"request\" or \"response\" expected, got %s)")
      :format(name, tostring(direction)), 3)
  end
  local relay = conn._relay
  if relay == nil then
    if conn.closed then return false end
    if not conn._filtered then
      error(("conn:%s needs on_data (TCP): without it the core moves the bytes in C"):format(name), 3)
    end
    -- before the pump has started (on_accept, or the upstream's connect): noted, and
    -- given to the pump as it starts
    conn._paused = conn._paused or {}
    conn._paused[direction] = method == "Pause"
    return true
  end
  return relay[method](relay, direction)
end
function Conn:pause(direction) return pause_or_resume(self, direction, "Pause", "pause") end
function Conn:resume(direction) return pause_or_resume(self, direction, "Resume", "resume") end

Conn.__tostring = function(c) return ("fwx.connection %d (%s)"):format(c.id, tostring(c.client)) end

-- The connection each socket of the host belongs to, for the service's error handler.
local conn_of = setmetatable({}, { __mode = "k" })

local function report(f, conn, what, message)
  if f.error_log then
    f.error_log(("fwx: conn=%d %s raised: %s"):format(conn.id, what, tostring(message)))
  end
end

-- Services made by host.service(): their error handler is what fails a connection
-- closed when on_data raises.
local host_services = setmetatable({}, { __mode = "k" })

--- host.service([fw]) -> fw: a service for host.start, new or the given one (a
-- worker's, from fwx.serve). on_data is called plainly, not under a pcall of its own
-- (about 800 instructions a chunk, callgrind): what it raises reaches this service's
-- error handler with the socket whose receive it was, and fails that connection
-- closed. Other errors are logged as fwx.new's are.
function M.service(fw)
  fw = fw or fwx.new{}
  fw:SetErrorHandler(function(message, object, operation)
    local conn = object ~= nil and conn_of[object] or nil
    if conn == nil or conn.closed then
      io.stderr:write(("fwx: error in %s notification for %s: %s\n")
        :format(tostring(operation), tostring(object), tostring(message)))
      return
    end
    conn._failed(message)
  end)
  host_services[fw] = true
  return fw
end

-- Under fwx.serve every worker listens on the same port with SO_REUSEPORT, and the
-- kernel spreads connections over them. Worker 1 binds first (scripts start in
-- worker order) and publishes the port it got, which matters for port 0.
local function listen_port(f)
  local key = ("fwx.host.port %s:%d"):format(f.listen_host, f.listen_port)
  if fwx.worker_count() == 1 or fwx.worker_id() == 1 then return f.listen_port, key end
  return fwx.store.get(key) or f.listen_port, key
end

-- Run the filter's function f[name] protected; a raise is reported: returns whether
-- it ran, and its first result.
local function call_filter(f, conn, name, ...)
  local fine, res = xpcall(f[name], debug.traceback, ...)
  if not fine then
    report(f, conn, name, res)
    return false
  end
  return true, res
end

-- A connection (or a UDP session) ended: count it, tell on_close, log it.
local function connection_ended(f, counts, conn, reason, err)
  metrics.ended(counts, reason, conn.request_bytes, conn.response_bytes)
  local result = { reason = reason, error = err, request_bytes = conn.request_bytes,
                   response_bytes = conn.response_bytes }
  if f.on_close then call_filter(f, conn, "on_close", conn, result) end
  if f.access_log then
    f.access_log(("fwx: conn=%d client=%s upstream=%s request=%d response=%d end=%s%s")
      :format(conn.id, tostring(conn.client), conn.upstream, conn.request_bytes,
        conn.response_bytes, reason, err and (" error=" .. err) or ""))
  end
end

-- The metrics endpoint of a server, if the filter asks for one (it may raise: cannot
-- listen); sets server.metrics_port and .metrics_url.
local function serve_metrics(server, f, fw)
  if f.metrics_host == nil then return nil end
  local handle = metrics.start(fw, { name = ("%s:%d"):format(f.listen_host, server.port),
    snapshot = server.metrics, host = f.metrics_host, port = f.metrics_port })
  server.metrics_port = handle.port
  if handle.port then
    server.metrics_url = ((f.metrics_host:find(":", 1, true) and "http://[%s]:%d/metrics"
      or "http://%s:%d/metrics")):format(f.metrics_host, handle.port)
  end
  return handle
end

--- host.start(filter [, fw]) -> server: serves filter on fw (from host.service(); by
-- default a new one), which fw:run() runs. server.fw is that service, server.port
-- the listening port, server.connections counts the open connections, and
-- server.close() stops accepting (connections in progress go on).
function M.start(filter, fw)
  local f = check_filter(filter)
  if fw == nil then
    fw = M.service()
  elseif not host_services[fw] then
    error("host.start: the service must come from host.service()", 2)
  end
  if f.protocol == "udp" then
    local shared = { Conn = Conn, conn_of = conn_of, report = report, counts = metrics.counters(),
                     metrics = metrics, listen_port = listen_port, workers = fwx.worker_count(),
                     connection_ended = connection_ended, call_filter = call_filter,
                     worker = fwx.worker_id(), id_step = fwx.worker_count(), id_first = fwx.worker_id(),
                     -- SDK filters: FilterInit now (it may raise, and nothing is listening yet)
                     sdk = f.sdk_filters and host_sdk.new(f.sdk_filters, fw, f, report) }
    local server = require("fwx.host_udp").start(f, fw, shared)
    server.fw = fw
    server.shutdown_timeout_ms = f.shutdown_timeout_ms
    local fine, handle = pcall(serve_metrics, server, f, fw)
    if not fine then
      server.close()
      error(handle, 0)
    end
    shared.served = handle
    return server
  end
  local server = { connections = 0, accepted = 0 }
  local counts = metrics.counters()
  -- SDK filters: FilterInit now (it may raise, and nothing is listening yet).
  local sdk = f.sdk_filters and host_sdk.new(f.sdk_filters, fw, f, report)
  local open = {}        -- the open connections (for a shutdown that ends them)
  local draining = false -- server.shutdown was called, and connections are left
  local drain_timer      -- its deadline
  local on_drained       -- its caller, told once the last one has ended

  local function drained()
    draining = false
    if drain_timer ~= nil then
      drain_timer:Cancel() -- nothing of the host's keeps the service running now
      drain_timer = nil
    end
    if sdk then sdk.shutdown() end
    local done = on_drained
    on_drained = nil
    if done ~= nil then done() end
  end
  server.fw = fw
  local ls = fw:CreateNetworkSocket("tcp")
  local port, port_key = listen_port(f)
  if fwx.worker_count() > 1 then assert(ls:SetSockOpt("reuseport", true)) end
  local ok, msg = ls:Bind(f.listen_host, port)
  if ok then ok, msg = ls:Listen(511) end
  if not ok then
    ls:Close()
    error(("cannot listen on %s:%d: %s"):format(f.listen_host, port, msg), 0)
  end
  server.port = ls:GetSockName().port
  if fwx.worker_count() > 1 and fwx.worker_id() == 1 then fwx.store.set(port_key, server.port) end
  server.shutdown_timeout_ms = f.shutdown_timeout_ms
  server.address = ls:GetSockName()
  local upstream_name = ("%s:%d"):format(f.upstream_host, f.upstream_port)

  local on_data = f.on_data
  local idle_ms = f.idle_timeout_ms > 0 and f.idle_timeout_ms or nil
  if on_data ~= nil and f.failure == "open" then
    on_data = function(conn, direction, buf)
      local fine, out = call_filter(f, conn, "on_data", conn, direction, buf)
      if fine then return out end -- else the bytes go on as they came
    end
  end

  -- Connection ids are unique across workers without sharing a counter: worker k of
  -- n numbers its connections k, k + n, k + 2n, ...
  local id_step, id_first = fwx.worker_count(), fwx.worker_id()

  local function serve(client, remote)
    local conn = setmetatable({ id = id_first + (server.accepted - 1) * id_step, client = remote,
                                upstream = upstream_name, closed = false,
                                request_bytes = 0, response_bytes = 0 }, Conn)
    local upstream = fw:CreateNetworkSocket("tcp")
    conn._client, conn._upstream = client, upstream
    conn._filtered = on_data ~= nil
    conn_of[client], conn_of[upstream] = conn, conn
    server.connections = server.connections + 1
    open[conn] = true

    -- The pump's counts come with its notification, which closing the sockets
    -- brings: a connection ended while it runs is told of and logged then.
    local pumping, ending = false, nil
    local connect_timer, total_timer -- the limits in time that are timers of their own
    local idle_timer -- a chain of SDK data filters': the core pump has its own

    local function complete(reason, err)
      server.connections = server.connections - 1
      if sdk then sdk.ended(conn, reason, err) end
      connection_ended(f, counts, conn, reason, err)
      if draining and server.connections == 0 then drained() end
    end

    local function finish(reason, err)
      if conn.closed then return end
      conn.closed = true
      open[conn] = nil
      if connect_timer ~= nil then connect_timer:Cancel() end
      if total_timer ~= nil then total_timer:Cancel() end
      if idle_timer ~= nil then idle_timer:Cancel() end
      client:Close()
      upstream:Close()
      if pumping then
        ending = { reason, err }
      else
        complete(reason, err)
      end
    end
    conn._close = finish
    function conn._failed(message) -- on_data raised (failing open catches it before)
      report(f, conn, sdk and "a data filter's notification" or "on_data", message)
      finish("filter error")
    end
    if sdk then
      sdk.connection(conn, conn_of)
    end

    if f.on_accept then
      local fine, verdict = call_filter(f, conn, "on_accept", conn)
      if conn.closed then return end
      if (not fine and f.failure == "closed") or (fine and verdict == false) then
        return finish(fine and "refused by the filter" or "filter error")
      end
    end
    if sdk then
      local fine, why = sdk.event(conn, sdk.ACCEPTED, { Accept = {
        RemoteAddress = remote, LocalAddress = client:GetSockName(),
        piConnectionAccepted = conn.api, IsSecondary = false } })
      if conn.closed then return end
      if not fine then return finish(why) end
    end
    if f.total_timeout_ms > 0 then
      total_timer = fw:SetTimer(f.total_timeout_ms, function(ok)
        if ok then finish("total timeout", ERROR_SEM_TIMEOUT) end
      end)
    end
    -- SDK data filters move the bytes themselves: the core counts the Recv and Send
    -- calls on the real sockets and the bytes they move (sdk.activity), and the host's
    -- timer looks at the count four times per limit: a connection whose count has not
    -- changed for the limit ends, between 1 and 1.25 limits after its last move. A
    -- clock read per call would cost more than the count.
    local function watch_idle()
      local moves, since = sdk.activity(conn), fw:now()
      local tick = math.max(1, idle_ms // 4)
      idle_timer = fw:SetTimer(tick, function(ok)
        if not ok or conn.closed then idle_timer = nil; return end
        local now, n = fw:now(), sdk.activity(conn)
        if n ~= moves then
          moves, since = n, now
        elseif now - since >= idle_ms then
          idle_timer:Cancel()
          idle_timer = nil
          return finish("idle timeout", ERROR_SEM_TIMEOUT)
        end
      end, nil, tick)
    end
    local function start_chain(up)
      local fine, why = sdk.start(conn, client, up)
      if conn.closed then return end
      if not fine then return finish(why) end
      if idle_ms then watch_idle() end
    end
    if sdk then
      -- An Emulation data filter (attached as the client came, or before the
      -- connect) answers the client itself: no upstream, so no fwx_Connect_Tcp.
      if not conn._emulated then
        local fine, why = sdk.event(conn, sdk.CONNECT, { Connect = {
          Address = setmetatable({ ip = f.upstream_host, port = f.upstream_port },
            { __tostring = function() return upstream_name end }),
          piConnection = conn.api, IsSecondary = false } })
        if conn.closed then return end
        if not fine then return finish(why) end
      end
      if conn._emulated then
        upstream:Close()
        return start_chain(nil)
      end
    end
    local connect_done = false
    if f.connect_timeout_ms > 0 then
      connect_timer = fw:SetTimer(f.connect_timeout_ms, function(ok)
        connect_timer = nil
        -- A tick queued behind the Connect's notification (the limit ran out after
        -- the connect completed, before it was delivered: a Cancel then comes too
        -- late) must not end a connection that is up.
        if ok and not connect_done then finish("connect timeout", ERROR_SEM_TIMEOUT) end
      end)
    end
    upstream:Connect(f.upstream_host, f.upstream_port, function(ok, err)
      connect_done = true
      if conn.closed then return end
      if connect_timer ~= nil then connect_timer:Cancel(); connect_timer = nil end
      if not ok then return finish("upstream", err) end
      if sdk then
        conn._established = true
        local fine, why = sdk.event(conn, sdk.ESTABLISHED, { EstablishedConnection = {
          Protocol = "tcp", piConnection = conn.api } })
        if conn.closed then return end
        if not fine then return finish(why) end
        if sdk.has_chain(conn) then return start_chain(upstream) end
      end
      -- With on_data, the filtered pump: every chunk through on_data(conn,
      -- direction, buf); without, the core pump.
      conn._relay = fw:Pump(client, upstream, function(pok, perr, up, down)
        pumping = false
        conn.request_bytes, conn.response_bytes = up, down
        if ending then return complete(ending[1], ending[2]) end
        if pok then return finish("eof") end
        finish(perr == ERROR_SEM_TIMEOUT and "idle timeout" or "error", perr)
      end, conn, on_data, idle_ms)
      pumping = true -- after the call: its notification never comes inside it
      if conn._paused then
        for direction, paused in pairs(conn._paused) do
          if paused then conn._relay:Pause(direction) end
        end
      end
    end)
  end

  local function on_accept(ok, err, listening, accepted, remote)
    if not ok then
      if err == ERROR_OPERATION_ABORTED then return end -- the listener was closed
      io.stderr:write(("fwx: accept failed: %d\n"):format(err))
    end
    listening:Accept(on_accept) -- first: the next client is not kept waiting
    if ok then
      server.accepted = server.accepted + 1
      counts.accepted = counts.accepted + 1
      if server.connections >= f.max_connections then
        counts.refused = counts.refused + 1
        accepted:Close(true)
        if f.access_log then
          f.access_log(("fwx: conn=%d client=%s end=refused (max_connections %d)")
            :format(server.accepted, tostring(remote), f.max_connections))
        end
      else
        serve(accepted, remote)
      end
    end
  end
  ls:Accept(on_accept)

  --- server.metrics() -> this worker's figures now: open, accepted, refused, ended (by
  -- reason), request_bytes, response_bytes (of ended connections), lua_seconds,
  -- notifications.
  function server.metrics() return metrics.snapshot(counts, fw, server.connections) end
  -- the metrics endpoint (and, under fwx.serve, the publishing of them)
  local fine, served = pcall(serve_metrics, server, f, fw)
  if not fine then
    ls:Close()
    error(served, 0)
  end

  function server.close()
    ls:Close()
    if served then served.close() end
  end

  --- server.shutdown(ms [, when_drained]): stop accepting, let the open connections
  -- finish, end those still open after ms (nil or 0: at once), and call when_drained()
  -- once none is left (at once if there is none). The service then has nothing of the host's
  -- pending, so fw:run() returns once the rest of its work is done.
  function server.shutdown(ms, when_drained)
    ls:Close()
    if served then served.close() end
    if drain_timer ~= nil then drain_timer:Cancel(); drain_timer = nil end
    on_drained = when_drained or on_drained
    local function end_all()
      drain_timer = nil
      local list = {}
      for conn in pairs(open) do list[#list + 1] = conn end
      table.sort(list, function(a, b) return a.id < b.id end)
      for _, conn in ipairs(list) do conn._close("shutdown") end
    end
    if server.connections == 0 then return drained() end
    draining = true
    if ms == nil or ms <= 0 then return end_all() end
    drain_timer = fw:SetTimer(ms, function(ok) if ok then end_all() end end)
  end
  return server
end

local USAGE = [[
usage: fwx run FILTER.lua [--listen HOST:PORT] [--upstream HOST:PORT] [--threads N]
                          [--metrics HOST:PORT]
  Serves FILTER.lua, a Lua file that returns the filter table (listen, upstream,
  on_accept, on_data, on_close, filters (the SDK's shape), failure, max_connections,
  connect_timeout_ms,
  idle_timeout_ms, total_timeout_ms, shutdown_timeout_ms, threads, metrics_listen,
  access_log, error_log); the options override its fields. SIGTERM or
  SIGINT drains the open connections and exits; a second one ends them at once.]]

-- FILTER.lua called with fw, and the command line's overrides applied: the filter.
local function load_filter(path, fw, overrides)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local fine, filter = pcall(chunk, fw)
  if not fine then return nil, ("%s: %s"):format(path, tostring(filter)) end
  if type(filter) ~= "table" then return filter end
  local copy = {}
  for k, v in pairs(filter) do copy[k] = v end
  for k, v in pairs(overrides) do copy[k] = v end
  return copy
end

-- Serve the filter FILTER.lua returned on fw, with SIGTERM and SIGINT draining it:
-- what the one thread, or each worker, does before its service runs. true, or nil and
-- what went wrong.
local function serve_filter(fw, path, filter)
  local started, server = pcall(M.start, filter, fw)
  if not started then return nil, ("%s: %s"):format(path, tostring(server)) end
  local who = fwx.worker_count() > 1 and ("fwx: worker %d:"):format(fwx.worker_id()) or "fwx:"
  if fwx.worker_id() == 1 then
    local threads = fwx.worker_count()
    io.stdout:write(("fwx: %s listening on %s%s, upstream %s%s%s\n"):format(path,
      tostring(server.address), server.protocol == "udp" and " (udp)" or "", filter.upstream,
      threads > 1 and (", %d worker threads"):format(threads) or "",
      server.metrics_url and (", metrics on %s"):format(server.metrics_url) or ""))
    io.stdout:flush()
  end
  -- SIGTERM and SIGINT: stop accepting and drain, for at most shutdown_timeout_ms; a
  -- second one ends the connections still open at once. Every worker is told.
  local watchers, stopping = {}, false
  local function stop_watching()
    for _, w in ipairs(watchers) do w:Cancel() end
  end
  local function on_signal(ok, _, name)
    if not ok then return end
    if stopping then
      io.stdout:write(("%s %s again: ending %d connections now\n"):format(who, name, server.connections))
      server.shutdown(0, stop_watching)
    else
      stopping = true
      io.stdout:write(("%s %s: no new connections; draining %d (at most %d ms)\n")
        :format(who, name, server.connections, server.shutdown_timeout_ms))
      server.shutdown(server.shutdown_timeout_ms, stop_watching)
    end
    io.stdout:flush()
  end
  for _, name in ipairs({ "SIGTERM", "SIGINT" }) do
    watchers[#watchers + 1] = fw:SetSignal(name, on_signal, name)
  end
  return true
end

--- A worker of `fwx run` with threads (lua/fwx/host_worker.lua calls it).
function M.worker(fw, path, listen, upstream, metrics_listen)
  fw = M.service(fw)
  local filter, err = load_filter(path, fw, { listen = listen or nil, upstream = upstream or nil,
                                              metrics_listen = metrics_listen or nil })
  if filter ~= nil then filter, err = serve_filter(fw, path, filter) end
  if filter == nil then error(err, 0) end
end

local function fail(message)
  io.stderr:write("fwx: ", message, "\n")
  return 1
end

--- The command line: returns the exit status.
function M.main(argv)
  if argv[1] ~= "run" or argv[2] == nil then
    io.stderr:write(USAGE, "\n")
    return 2
  end
  local path, overrides = argv[2], {}
  local i = 3
  while argv[i] ~= nil do
    local opt, value = argv[i], argv[i + 1]
    if (opt == "--listen" or opt == "--upstream") and value ~= nil then
      overrides[opt:sub(3)] = value
    elseif opt == "--metrics" and value ~= nil then
      overrides.metrics_listen = value
    elseif opt == "--threads" and math.tointeger(tonumber(value or "")) then
      overrides.threads = math.tointeger(tonumber(value))
    else
      io.stderr:write(("fwx: unknown option %s\n"):format(opt), USAGE, "\n")
      return 2
    end
    i = i + 2
  end
  local fw = M.service()
  -- The filter says how many threads; with more than one, this load only reads it and
  -- each worker loads the file again in its own state.
  local filter, err = load_filter(path, fw, overrides)
  if filter == nil then return fail(err) end
  local checked, f = pcall(check_filter, filter)
  if not checked then return fail(("%s: %s"):format(path, f)) end
  if f.threads > 1 then
    fw:Close()
    local script = package.searchpath("fwx.host_worker", package.path)
    local served, why = fwx.serve{ threads = f.threads, script = script,
      args = { path, overrides.listen or false, overrides.upstream or false,
               overrides.metrics_listen or false } }
    if not served then return fail(why) end
  else
    local ok, why = serve_filter(fw, path, filter)
    if not ok then return fail(why) end
    fw:run()
  end
  io.stdout:write("fwx: stopped\n")
  return 0
end

return M
