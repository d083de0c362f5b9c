-- spec/host_helper.lua: what the host's spec files share (host_spec, host_sdk_spec):
-- a real upstream, a real client, and the host started in front of them.
local host = require "fwx.host"
local H = require "spec.helper"

local HH = {}

-- An upstream on fw: echoes what it receives (opts.hold: answers nothing; opts.deaf:
-- never reads), and closes after the peer's end of stream. st.received has its bytes.
function HH.upstream(fw, opts)
  opts = opts or {}
  local ls, port = H.listener(fw)
  local st = { received = {}, connections = 0 }
  local function serve(s)
    local function on_recv(ok, _, buf)
      if not ok or #buf == 0 then s:Close() return end
      st.received[#st.received + 1] = tostring(buf)
      if not opts.hold then s:Send(buf) end
      s:Recv(nil, on_recv)
    end
    s:Recv(nil, on_recv)
  end
  local function on_accept(ok, _, l, s)
    if not ok then return end
    l:Accept(on_accept)
    st.connections = st.connections + 1
    if opts.deaf then st.held = s else serve(s) end
  end
  ls:Accept(on_accept)
  st.close = function()
    ls:Close()
    if st.held then st.held:Close(true) end
  end
  return ("127.0.0.1:%d"):format(port), st
end

-- A client on fw: sends each of parts, then shuts down (unless linger); collects the
-- reply until the end of stream. Returns its state: .reply, .done, .err, .socket.
function HH.client(fw, port, parts, linger)
  local c = fw:CreateNetworkSocket("tcp")
  local st = { got = {} }
  c:Connect("127.0.0.1", port, function(ok, err)
    if not ok then st.done, st.err = true, err; return end
    st.socket = c
    for _, p in ipairs(parts) do c:Send(p) end
    if not linger then c:Shutdown() end
    local function on_recv(rok, rerr, buf)
      if not rok or #buf == 0 then
        st.done, st.err, st.reply = true, not rok and rerr or nil, table.concat(st.got)
        c:Close()
        return
      end
      st.got[#st.got + 1] = tostring(buf)
      c:Recv(nil, on_recv)
    end
    c:Recv(nil, on_recv)
  end)
  return st
end

-- A UDP echo upstream on fw: answers each datagram to its sender (after delay_ms,
-- if given). st.received has the datagrams it got.
function HH.udp_upstream(fw, delay_ms)
  local s = fw:CreateNetworkSocket("udp")
  assert(s:Bind("127.0.0.1", 0))
  local st = { received = {} }
  local function on_recv(ok, _, buf, _, from)
    if not ok then return end
    st.received[#st.received + 1] = tostring(buf)
    if delay_ms then
      local answer = tostring(buf)
      fw:SetTimer(delay_ms, function() if not s:IsClosed() then s:SendTo(answer, from) end end)
    else
      s:SendTo(buf, from)
    end
    s:Recv(nil, on_recv)
  end
  s:Recv(nil, on_recv)
  st.close = function() s:Close() end
  return ("127.0.0.1:%d"):format(s:GetSockName().port), st
end

-- A UDP client on fw: sends each of datagrams to port; st.got collects the replies.
function HH.udp_client(fw, port, datagrams)
  local c = fw:CreateNetworkSocket("udp")
  assert(c:Bind("127.0.0.1", 0))
  local st = { got = {}, socket = c }
  local function on_recv(ok, _, buf)
    if not ok then return end
    st.got[#st.got + 1] = tostring(buf)
    c:Recv(nil, on_recv)
  end
  c:Recv(nil, on_recv)
  for _, d in ipairs(datagrams) do c:SendTo(d, "127.0.0.1", port) end
  return st
end

-- A host service, checked after the test as H.new's are.
function HH.service()
  return H.track(host.service())
end

-- Start a host on fw, with its logs collected.
function HH.start(fw, filter)
  local logs = { access = {}, errors = {} }
  filter.listen = filter.listen or "127.0.0.1:0"
  if filter.access_log == nil then
    filter.access_log = function(line) logs.access[#logs.access + 1] = line end
  end
  if filter.error_log == nil then
    filter.error_log = function(line) logs.errors[#logs.errors + 1] = line end
  end
  local server = host.start(filter, fw)
  return server, logs
end

-- A host service with an upstream of its own (upstream_opts), and the host started on
-- it in front of that upstream: server, logs, the upstream's state.
function HH.proxy(filter, upstream_opts)
  local fw = HH.service()
  local up, ust = HH.upstream(fw, upstream_opts)
  filter.upstream = up
  local server, logs = HH.start(fw, filter)
  return server, logs, ust
end

function HH.finish(server, ...)
  server.close()
  for _, st in ipairs({ ... }) do st.close() end
  H.run(server.fw)
end

return HH
