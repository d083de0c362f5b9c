--- fwx.host_metrics: the host's metrics (DESIGN.md section 5: connections, bytes,
-- errors, time in Lua), counted per worker and served in the Prometheus text format
-- (what HAProxy's and Envoy's exporters speak) on the filter's metrics_listen.
--
-- Counting costs a table update per connection event, nothing per chunk: the bytes
-- come with a connection's end, and the time in Lua is the dispatcher's own count
-- (fw:stats(), two clock reads per round of notifications). Under fwx.serve each
-- worker counts its own; the others publish theirs in fwx.store once a second and
-- worker 1, which alone listens on metrics_listen, serves them all with a worker
-- label.
local fwx = require "fwx"

local M = {}

local PUBLISH_MS = 1000
local REQUEST_MAX = 8192 -- an HTTP request's head; a scraper's is far shorter

-- The endpoint's own limits, so that clients that connect and send nothing cannot
-- hold its sockets: a request must come within request_timeout_ms (Prometheus gives a
-- scrape 10 s by default), and past max_scrapes in progress a connection is reset at
-- once. Module settings (the specs lower them).
M.request_timeout_ms = 10000
M.max_scrapes = 64

--- M.counters() -> the counts one worker keeps (host.lua updates them).
function M.counters()
  return { accepted = 0, refused = 0, ended = {}, request_bytes = 0, response_bytes = 0 }
end

--- M.ended(c, reason, request_bytes, response_bytes): a connection ended.
function M.ended(c, reason, request_bytes, response_bytes)
  c.ended[reason] = (c.ended[reason] or 0) + 1
  c.request_bytes = c.request_bytes + request_bytes
  c.response_bytes = c.response_bytes + response_bytes
end

--- M.snapshot(c, fw, open) -> the worker's figures now, as a plain table (it goes
-- through fwx.store between workers).
function M.snapshot(c, fw, open)
  local stats = fw:stats()
  local ended = {}
  for reason, n in pairs(c.ended) do ended[reason] = n end
  return { worker = fwx.worker_id(), open = open, accepted = c.accepted, refused = c.refused,
           ended = ended, request_bytes = c.request_bytes, response_bytes = c.response_bytes,
           lua_seconds = stats.lua_seconds, notifications = stats.notifications }
end

local function escape(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ["\""] = "\\\"", ["\n"] = "\\n" }))
end

local function number(v)
  if math.type(v) == "integer" then return tostring(v) end
  return ("%.6f"):format(v)
end

--- M.render(snapshots) -> the Prometheus text exposition (format 0.0.4) of the
-- workers' snapshots, one series per worker (label worker).
function M.render(snaps)
  table.sort(snaps, function(a, b) return a.worker < b.worker end)
  local out = {}
  local function family(name, kind, help, each)
    out[#out + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(name, help, name, kind)
    for _, s in ipairs(snaps) do each(s, function(labels, value)
      local l = ('worker="%d"'):format(s.worker)
      for _, kv in ipairs(labels) do l = l .. (',%s="%s"'):format(kv[1], escape(kv[2])) end
      out[#out + 1] = ("%s{%s} %s\n"):format(name, l, number(value))
    end) end
  end
  family("fwx_connections_open", "gauge", "Connections open now.",
    function(s, put) put({}, s.open) end)
  family("fwx_connections_accepted_total", "counter",
    "Connections accepted, including those refused at max_connections.",
    function(s, put) put({}, s.accepted) end)
  family("fwx_connections_refused_total", "counter",
    "Connections reset at once because max_connections were open.",
    function(s, put) put({}, s.refused) end)
  family("fwx_connections_ended_total", "counter",
    "Connections ended, by reason (as on_close and the access log say it).",
    function(s, put)
      local reasons = {}
      for reason in pairs(s.ended) do reasons[#reasons + 1] = reason end
      table.sort(reasons)
      for _, reason in ipairs(reasons) do put({ { "reason", reason } }, s.ended[reason]) end
    end)
  family("fwx_bytes_total", "counter",
    "Bytes that came in each direction on connections that have ended.",
    function(s, put)
      put({ { "direction", "request" } }, s.request_bytes)
      put({ { "direction", "response" } }, s.response_bytes)
    end)
  family("fwx_lua_seconds_total", "counter",
    "Time the worker spent delivering notifications: filters and the host's Lua.",
    function(s, put) put({}, s.lua_seconds) end)
  family("fwx_notifications_total", "counter", "Notifications the worker delivered.",
    function(s, put) put({}, s.notifications) end)
  return table.concat(out)
end

local function store_key(name, worker)
  return ("fwx.host.metrics %s %d"):format(name, worker)
end

--- M.start(fw, opts) -> a handle with close(): the metrics of one host on one worker.
-- opts.name names the host across workers (its listening address), opts.snapshot()
-- gives this worker's snapshot, opts.host and opts.port (port 0: any) where to serve
-- them, on worker 1 only; handle.port is the port it listens on (nil elsewhere).
function M.start(fw, opts)
  local handle = {}
  local workers, me = fwx.worker_count(), fwx.worker_id()
  local ls, timer
  if workers > 1 and me ~= 1 then
    local function publish() fwx.store.set(store_key(opts.name, me), opts.snapshot()) end
    publish()
    timer = fw:SetTimer(PUBLISH_MS, function(ok) if ok then publish() end end, nil, PUBLISH_MS)
  end

  local function collect()
    local snaps = { opts.snapshot() }
    for k = 2, workers do
      local s = fwx.store.get(store_key(opts.name, k))
      if type(s) == "table" then snaps[#snaps + 1] = s end
    end
    return snaps
  end

  -- Answer one scrape: read the request's head (or up to its end, for a client that
  -- sends none), answer with the figures, close after they are written. A scrape
  -- whose request does not come within the limit is reset.
  local scrapes, in_progress = {}, 0 -- the open ones: socket -> its finish
  local function answer(s)
    local head, timer = "", nil
    local function finish(abortive)
      if scrapes[s] == nil then return end
      scrapes[s] = nil
      in_progress = in_progress - 1
      timer:Cancel()
      s:Close(abortive)
    end
    local function respond()
      local body = M.render(collect())
      s:Send(("HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n" ..
              "Content-Length: %d\r\nConnection: close\r\n\r\n%s"):format(#body, body))
      finish(false) -- a graceful close writes what was sent first
    end
    local function on_recv(ok, _, buf)
      if scrapes[s] == nil then return end -- ended: reset, or the endpoint closed
      if not ok then return finish(true) end
      if #buf == 0 then return respond() end
      head = head .. tostring(buf)
      if head:find("\r\n\r\n", 1, true) or #head >= REQUEST_MAX then return respond() end
      s:Recv(nil, on_recv)
    end
    scrapes[s] = finish
    in_progress = in_progress + 1
    timer = fw:SetTimer(M.request_timeout_ms, function(ok) if ok then finish(true) end end)
    s:Recv(nil, on_recv)
  end

  if opts.host ~= nil and me == 1 then
    ls = fw:CreateNetworkSocket("tcp")
    local ok, msg = ls:Bind(opts.host, opts.port)
    if ok then ok, msg = ls:Listen(64) end
    if not ok then
      ls:Close()
      if timer then timer:Cancel() end
      error(("cannot listen for metrics on %s:%d: %s"):format(opts.host, opts.port, msg), 0)
    end
    handle.port = ls:GetSockName().port
    local function on_accept(ok2, err, listening, accepted)
      if not ok2 and err == 995 then return end -- closed
      listening:Accept(on_accept)
      if not ok2 then return end
      if in_progress >= M.max_scrapes then
        accepted:Close(true)
      else
        answer(accepted)
      end
    end
    ls:Accept(on_accept)
  end

  --- handle.close(): stop serving (the scrapes in progress are reset) and publishing;
  -- the service has nothing of it pending afterwards.
  function handle.close()
    if ls ~= nil then ls:Close(); ls = nil end
    if timer ~= nil then timer:Cancel(); timer = nil end
    local open = {}
    for _, finish in pairs(scrapes) do open[#open + 1] = finish end
    for _, finish in ipairs(open) do finish(true) end
  end
  return handle
end

return M
