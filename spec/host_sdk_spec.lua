-- The host's filters in the SDK's shape (fwx.host_sdk): FilterInit, AttachToSession,
-- FirewallEventHandler, data filters attached by priority class, SetSockets and
-- Detach. Real sockets on 127.0.0.1: a real upstream in the same service, and nc
-- against `fwx run`. Each case tries to break a promise: the chain's order and its
-- bytes, the events and when they come, each Detach exactly once (also before
-- SetSockets), a raising filter failing its connection alone, the limits, and bad
-- filters refused with a clear error.
local fwx = require "fwx"
local H = require "spec.helper"
local HH = require "spec.host_helper"

local E = fwx.errors

-- A data filter that relays both ways through transform(direction, buf) -> data, in
-- the completion style; after both directions' ends it closes its sockets. Records
-- its calls in log (if given) as "name:Method".
local Relay = {}
Relay.__index = Relay

local function relay(name, transform, log)
  return setmetatable({ name = name, transform = transform or function(_, b) return b end,
                        log = log or {} }, Relay)
end

function Relay:SetSockets(internal, external, conn, ctx)
  self.log[#self.log + 1] = self.name .. ":SetSockets"
  self.internal, self.external, self.conn, self.ctx = internal, external, conn, ctx
  internal:Recv(nil, self, "request")
  if external then external:Recv(nil, self, "response") end
end

function Relay:CompleteAsyncIO(ok, err, buf, what)
  if what == "sent" then return end
  local from, to = self.internal, self.external
  if what == "response" then from, to = to, from end
  if not ok then
    self.errors = self.errors or {}
    self.errors[#self.errors + 1] = err
    self.internal:Close()
    if self.external then self.external:Close() end
    return
  end
  if #buf == 0 then
    to:Shutdown()
    self.ended = (self.ended or 0) + 1
    if self.ended == 2 then self.internal:Close(); self.external:Close() end
    return
  end
  to:Send(self.transform(what, buf), self, "sent")
  from:Recv(nil, self, what)
end

function Relay:Detach()
  self.log[#self.log + 1] = self.name .. ":Detach"
  self.detached = (self.detached or 0) + 1
end

-- A filter whose session filter calls on_event(event, session) for each event it
-- hooks; log records "AttachToSession", "Detach" and the events by name.
local EVENT_NAMES = {}
for name, v in pairs(fwx.events) do EVENT_NAMES[v] = name end

local function sdk_filter(events, on_event, log)
  log = log or {}
  return {
    log = log,
    FilterInit = function(self, fw)
      self.fw = fw
      log[#log + 1] = "FilterInit"
      return events
    end,
    AttachToSession = function(_, session)
      log[#log + 1] = "AttachToSession " .. session:GetClientAddress().ip
      return {
        FirewallEventHandler = function(_, event)
          log[#log + 1] = EVENT_NAMES[event.EventType]
          if on_event then on_event(event, session) end
        end,
        Detach = function() log[#log + 1] = "session:Detach" end,
      }
    end,
    FilterShutdown = function() log[#log + 1] = "FilterShutdown" end,
  }
end

-- A filter that attaches make() to each accepted connection with class.
local function attaching(class, make, log)
  return sdk_filter(fwx.fwx_AcceptedConnection, function(event)
    local conn = event.Parameters.Accept.piConnectionAccepted
    conn:AttachDataFilter(make(conn), class, "context")
  end, log)
end

local function ends_of(logs)
  local ends = {}
  for _, l in ipairs(logs.access) do ends[#ends + 1] = l:match("end=(.*)$"):gsub(" error=%d+$", "") end
  table.sort(ends)
  return ends
end

describe("the host with SDK filters", function()
  before_each(H.before)
  after_each(H.after)

  it("chains data filters by priority class, client side first, and carries the bytes through them", function()
    local dfs = {}
    local function tagging(name)
      return function()
        local df = relay(name, function(direction, buf) return tostring(buf) .. "|" .. name end)
        dfs[#dfs + 1] = df
        return df
      end
    end
    -- listed External first, NAT second, Middle last: the chain is NAT, Middle, External
    local server, logs, ust = HH.proxy({ filters = {
      attaching(fwx.fwx_dfpc_External, tagging("external")),
      attaching(fwx.fwx_dfpc_NAT, tagging("nat")),
      attaching(fwx.fwx_dfpc_Middle, tagging("middle")),
    } })
    local st = HH.client(server.fw, server.port, { "x" })
    H.run_until(server.fw, function() return st.done end)
    assert.equal("x|nat|middle|external", table.concat(ust.received))
    assert.equal("x|nat|middle|external|external|middle|nat", st.reply)
    H.run_until(server.fw, function() return server.connections == 0 end)
    HH.finish(server, ust)
    for _, df in ipairs(dfs) do
      assert.equal(1, df.detached)
      assert.equal("context", df.ctx)
      assert.is_nil(df.errors)
    end
    assert.same({ "closed" }, ends_of(logs))
    assert.truthy(logs.access[1]:find("request=21 response=41", 1, true), logs.access[1])
    assert.same({}, logs.errors)
  end)

  it("moves a megabyte both ways through a chain of two, byte for byte", function()
    local server, _, ust = HH.proxy({ filters = {
      attaching(fwx.fwx_dfpc_NAT, function() return relay("a") end),
      attaching(fwx.fwx_dfpc_Middle, function() return relay("b") end),
    } })
    local parts = {}
    for i = 0, 15 do parts[#parts + 1] = H.pattern(7, i * 65536, 65536) end
    local st = HH.client(server.fw, server.port, parts)
    H.run_until(server.fw, function() return st.done end, 20000)
    assert.equal(1024 * 1024, #st.reply)
    assert.is_true(st.reply == table.concat(parts))
    HH.finish(server, ust)
  end)

  it("raises the events in order, one session per client address, each Detach once, FilterShutdown at shutdown", function()
    local log = {}
    local seen = {}
    local df_log = {}
    local filter = sdk_filter(fwx.fwx_AcceptedConnection | fwx.fwx_Connect_Tcp
      | fwx.fwx_EstablishedConnection | fwx.fwx_ConnectionTerminating, function(event, session)
        local p = event.Parameters
        if event.EventType == fwx.fwx_AcceptedConnection then
          seen.accept = p.Accept
          assert.equal(session, p.Accept.piConnectionAccepted:GetSession())
          assert.same({ nil, "WSAEINVAL", 10022 }, { p.Accept.piConnectionAccepted:GetExternalPeerName() })
        elseif event.EventType == fwx.fwx_Connect_Tcp then
          seen.connect = p.Connect
          p.Connect.piConnection:AttachDataFilter(relay("df", nil, df_log), fwx.fwx_dfpc_Middle)
        elseif event.EventType == fwx.fwx_EstablishedConnection then
          seen.peer = p.EstablishedConnection.piConnection:GetExternalPeerName()
          H.raises("only inside FirewallEventHandler, for fwx_AcceptedConnection, fwx_Connect_Tcp or fwx_Udp_Destination",
            p.EstablishedConnection.piConnection.AttachDataFilter,
            p.EstablishedConnection.piConnection, relay("late"), fwx.fwx_dfpc_Middle)
        else
          seen.terminating = p.EndConnect
        end
      end, log)
    local server, logs, ust = HH.proxy({ filters = { filter } })
    assert.equal(server.fw, filter.fw)
    local a = HH.client(server.fw, server.port, { "a" }, true)
    local b = HH.client(server.fw, server.port, { "b" }, true)
    H.run_until(server.fw, function() return #ust.received == 2 end)
    -- two connections from 127.0.0.1: one session
    assert.same({ "FilterInit", "AttachToSession 127.0.0.1" }, { log[1], log[2] })
    a.socket:Shutdown()
    b.socket:Shutdown()
    H.run_until(server.fw, function() return a.done and b.done and server.connections == 0 end)
    assert.equal("127.0.0.1", seen.accept.RemoteAddress.ip)
    assert.equal(server.port, seen.accept.LocalAddress.port)
    assert.is_false(seen.accept.IsSecondary)
    assert.equal(ust and server.fw and seen.peer.port, tonumber(logs.access[1]:match("upstream=[%d.]+:(%d+)")))
    assert.equal(tostring(seen.connect.Address), logs.access[1]:match("upstream=(%S+)"))
    assert.equal("closed", seen.terminating.Reason)
    local count = {}
    for _, l in ipairs(log) do count[l] = (count[l] or 0) + 1 end
    assert.same({ FilterInit = 1, ["AttachToSession 127.0.0.1"] = 1, fwx_AcceptedConnection = 2,
                  fwx_Connect_Tcp = 2, fwx_EstablishedConnection = 2,
                  fwx_ConnectionTerminating = 2, ["session:Detach"] = 1 }, count)
    assert.equal("session:Detach", log[#log]) -- after the last connection's end
    assert.same({ "df:SetSockets", "df:SetSockets", "df:Detach", "df:Detach" }, (function()
      local t = {}
      for _, l in ipairs(df_log) do t[#t + 1] = l end
      table.sort(t, function(x, y) return x:sub(4) > y:sub(4) end)
      return t
    end)())
    local done = false
    server.shutdown(0, function() done = true end)
    assert.is_true(done)
    assert.equal("FilterShutdown", log[#log])
    HH.finish(server, ust)
  end)

  it("pumps a connection no data filter was attached to in the core", function()
    local log = {}
    local server, logs, ust = HH.proxy({ filters = { sdk_filter(fwx.fwx_AcceptedConnection, nil, log) } })
    local st = HH.client(server.fw, server.port, { "through the core" })
    H.run_until(server.fw, function() return st.done and server.connections == 0 end)
    assert.equal("through the core", st.reply)
    HH.finish(server, ust)
    assert.truthy(logs.access[1]:find("request=16 response=16 end=eof", 1, true), logs.access[1])
  end)

  it("Deny refuses the connection before the upstream hears of it; an attached data filter is Detached without SetSockets", function()
    local df_log = {}
    local server, logs, ust = HH.proxy({ filters = { sdk_filter(fwx.fwx_AcceptedConnection, function(event)
      local conn = event.Parameters.Accept.piConnectionAccepted
      conn:AttachDataFilter(relay("df", nil, df_log), fwx.fwx_dfpc_Middle)
      conn:Deny()
    end) } })
    local st = HH.client(server.fw, server.port, { "x" })
    H.run_until(server.fw, function() return st.done and server.connections == 0 end)
    assert.is_true(st.reply == "" or st.err ~= nil)
    assert.equal(0, ust.connections)
    assert.same({ "df:Detach" }, df_log)
    HH.finish(server, ust)
    assert.same({ "refused by the filter" }, ends_of(logs))
  end)

  it("an upstream that refuses: the data filter is Detached without SetSockets, the log says 1225", function()
    local fw = HH.service()
    local ls, port = H.listener(fw)
    ls:Close()
    local df_log = {}
    local server, logs = HH.start(fw, { upstream = ("127.0.0.1:%d"):format(port), filters = {
      attaching(fwx.fwx_dfpc_Middle, function() return relay("df", nil, df_log) end) } })
    local st = HH.client(fw, server.port, { "x" })
    H.run_until(fw, function() return st.done and server.connections == 0 end)
    HH.finish(server)
    assert.same({ "df:Detach" }, df_log)
    assert.truthy(logs.access[1]:find("end=upstream error=1225", 1, true), logs.access[1])
  end)

  it("a raising FirewallEventHandler refuses its connection (failure closed) or is logged (failure open)", function()
    for _, failure in ipairs({ "closed", "open" }) do
      local server, logs, ust = HH.proxy({ failure = failure, filters = {
        sdk_filter(fwx.fwx_AcceptedConnection, function() error("handler broke") end) } })
      local st = HH.client(server.fw, server.port, { "x" })
      H.run_until(server.fw, function() return st.done and server.connections == 0 end)
      HH.finish(server, ust)
      assert.equal(1, #logs.errors)
      assert.truthy(logs.errors[1]:find("FirewallEventHandler raised: .*handler broke"), logs.errors[1])
      if failure == "closed" then
        assert.same({ "filter error" }, ends_of(logs))
        assert.equal(0, ust.connections)
      else
        assert.equal("x", st.reply)
        assert.same({ "eof" }, ends_of(logs))
      end
    end
  end)

  it("a data filter whose notification raises fails its own connection alone", function()
    local server, logs, ust = HH.proxy({ filters = {
      attaching(fwx.fwx_dfpc_NAT, function() return relay("nat") end),
      attaching(fwx.fwx_dfpc_Middle, function()
        return relay("middle", function(direction, buf)
          if tostring(buf) == "boom" then error("the data filter broke") end
          return buf
        end)
      end),
    } })
    local bad = HH.client(server.fw, server.port, { "boom" }, true)
    local good = HH.client(server.fw, server.port, { "fine" })
    H.run_until(server.fw, function() return bad.done and good.done and server.connections == 0 end)
    assert.is_true(bad.reply == "" or bad.err ~= nil)
    assert.equal("fine", good.reply)
    HH.finish(server, ust)
    assert.equal(1, #logs.errors)
    assert.truthy(logs.errors[1]:find("the data filter broke", 1, true), logs.errors[1])
    assert.same({ "closed", "filter error" }, ends_of(logs))
  end)

  it("Kill ends the connection: every pending operation of its data filters ends once with 995, each Detach comes once", function()
    local dfs = {}
    local server, logs, ust
    server, logs, ust = HH.proxy({ filters = {
      attaching(fwx.fwx_dfpc_NAT, function() local d = relay("nat"); dfs[1] = d; return d end),
      attaching(fwx.fwx_dfpc_Middle, function(conn)
        local d = relay("middle", function(_, buf)
          if tostring(buf) == "kill" then -- later, with every receive pending again
            server.fw:SetTimer(10, function() conn:Kill() end)
          end
          return buf
        end)
        dfs[2] = d
        return d
      end),
    } })
    local st = HH.client(server.fw, server.port, { "kill" }, true)
    H.run_until(server.fw, function() return st.done and server.connections == 0 end)
    H.run_for(server.fw, 20)
    HH.finish(server, ust)
    assert.same({ "killed by the filter" }, ends_of(logs))
    for _, d in ipairs(dfs) do
      assert.equal(1, d.detached)
      -- each data filter had a receive pending on each of its sockets
      assert.same({ E.ERROR_OPERATION_ABORTED, E.ERROR_OPERATION_ABORTED }, d.errors)
    end
  end)

  it("an Emulation data filter answers the client itself: no upstream is contacted", function()
    local fw = HH.service()
    local ls, port = H.listener(fw)
    ls:Close() -- an upstream that is not there: contacting it would fail the connection
    local Hello = {}
    function Hello:SetSockets(internal, external)
      assert.is_nil(external)
      internal:Recv(nil, function(ok, _, buf)
        assert.is_true(ok)
        internal:Send("hello, " .. tostring(buf), function()
          internal:Close()
        end)
      end)
    end
    local server, logs = HH.start(fw, { upstream = ("127.0.0.1:%d"):format(port), filters = {
      attaching(fwx.fwx_dfpc_Emulation, function() return setmetatable({}, { __index = Hello }) end) } })
    local st = HH.client(fw, server.port, { "client" }, true)
    H.run_until(fw, function() return st.done and server.connections == 0 end)
    assert.equal("hello, client", st.reply)
    HH.finish(server)
    assert.same({ "closed" }, ends_of(logs))
  end)

  it("ends a chain that moves nothing for idle_timeout_ms, and one that lives past total_timeout_ms", function()
    for _, case in ipairs({ { idle_timeout_ms = 100, reason = "idle timeout" },
                            { idle_timeout_ms = 0, total_timeout_ms = 150, reason = "total timeout" } }) do
      local server, logs, ust = HH.proxy({ idle_timeout_ms = case.idle_timeout_ms,
        total_timeout_ms = case.total_timeout_ms, filters = {
        attaching(fwx.fwx_dfpc_NAT, function() return relay("a") end),
        attaching(fwx.fwx_dfpc_Middle, function() return relay("b") end) } })
      local st = HH.client(server.fw, server.port, { "quiet now" }, true)
      H.run_until(server.fw, function() return st.done and server.connections == 0 end)
      HH.finish(server, ust)
      assert.equal("quiet now", st.reply)
      assert.same({ case.reason }, ends_of(logs))
      assert.truthy(logs.access[1]:find("error=121", 1, true), logs.access[1])
    end
  end)

  -- A data filter that reads the client's first chunk itself, sends it on marked, and
  -- then hands both sockets to the core pump; it closes them when the pump ends.
  local PumpAfterFirst = {}
  PumpAfterFirst.__index = PumpAfterFirst
  function PumpAfterFirst:SetSockets(internal, external)
    self.internal, self.external = internal, external
    self.names = { tostring(internal), tostring(external) }
    -- IFWXSocket's methods only: not a listener's, not a descriptor
    self.hidden = { internal.Bind, internal.Listen, internal.Accept, internal.Connect,
                    internal.SendTo, internal.getfd }
    self.open = not internal:IsClosed() and not external:IsClosed()
    internal:Recv(nil, self)
  end
  function PumpAfterFirst:CompleteAsyncIO(ok, _, buf)
    if not ok or #buf == 0 then self.internal:Close(); self.external:Close(); return end
    self.external:Send("seen:" .. tostring(buf))
    self.fw:Pump(self.internal, self.external, function(_, err, up, down)
      self.pumped = { err, up, down }
      self.internal:Close()
      self.external:Close()
    end)
  end
  local function pumping(dfs)
    local f
    f = attaching(fwx.fwx_dfpc_Middle, function()
      local df = setmetatable({ fw = f.fw }, PumpAfterFirst) -- the service FilterInit had
      if dfs then dfs[#dfs + 1] = df end
      return df
    end)
    return f
  end

  it("hands a data filter the real sockets, with the SDK's methods, which fw:Pump can take over", function()
    local dfs = {}
    local server, logs, ust = HH.proxy({ filters = { pumping(dfs) } })
    local fw = server.fw
    local st = HH.client(fw, server.port, { "first" })
    H.run_until(fw, function() return st.done and server.connections == 0 end)
    assert.equal("seen:first", st.reply) -- the upstream's echo came back through the pump
    local df = dfs[1]
    assert.same({ "fwx.socket client of connection 1", "fwx.socket upstream of connection 1" },
                df.names)
    assert.same({}, df.hidden)
    assert.is_true(df.open)
    assert.same({ 0, 0, 10 }, df.pumped)
    HH.finish(server, ust)
    -- the bytes the filter sent and the pump's, counted by the core
    assert.truthy(logs.access[1]:find("request=10 response=10 end=closed", 1, true), logs.access[1])
    assert.same({}, logs.errors)
  end)

  it("bounds what a data filter that does not wait for its sends holds: past send_limit_bytes, 1450", function()
    local CHUNK = 65536
    local results = {}
    local Flood = {}
    Flood.__index = Flood
    function Flood:SetSockets(_, external, conn)
      self.conn = conn
      local chunk = string.rep("f", CHUNK)
      for i = 1, 40 do external:Send(chunk, function(ok, err) results[i] = { ok, err } end) end
    end
    local Deaf = { SetSockets = function() end } -- never receives from the link
    local server, logs, ust = HH.proxy({ send_limit_bytes = 4 * CHUNK, filters = {
      attaching(fwx.fwx_dfpc_NAT, function() return setmetatable({}, Flood) end),
      attaching(fwx.fwx_dfpc_Middle, function() return Deaf end) } })
    local fw = server.fw
    local st = HH.client(fw, server.port, {}, true)
    H.run_until(fw, function() return results[40] ~= nil end)
    local refused = 0
    for i = 5, 40 do
      if results[i] and not results[i][1] and results[i][2] == E.ERROR_NO_SYSTEM_RESOURCES then refused = refused + 1 end
    end
    assert.equal(36, refused) -- four wait in the link, the rest were refused at once
    for i = 1, 4 do assert.is_nil(results[i]) end
    st.socket:Close()
    server.shutdown(0)
    H.run_until(fw, function() return server.connections == 0 and results[4] ~= nil end)
    for i = 1, 4 do assert.is_false(results[i][1]) end -- ended with the connection, once each
    HH.finish(server, ust)
    assert.same({ "shutdown" }, ends_of(logs))
  end)

  it("keeps a chain that moves bytes alive past its idle limit (by Recv and Send, or by a pump), and ends it once it goes quiet", function()
    local cases = {
      { name = "relays", reply = string.rep("x", 13), filters = function() return {
        attaching(fwx.fwx_dfpc_NAT, function() return relay("a") end),
        attaching(fwx.fwx_dfpc_Middle, function() return relay("b") end) } end },
      -- after the first byte only the pump moves them: its bytes are the activity
      { name = "pump", reply = "seen:x" .. string.rep("x", 12),
        filters = function() return { pumping() } end },
    }
    for _, case in ipairs(cases) do
      local server, logs, ust = HH.proxy({ idle_timeout_ms = 100, filters = case.filters() })
      local fw = server.fw
      local st = HH.client(fw, server.port, {}, true)
      H.run_until(fw, function() return st.socket ~= nil end)
      -- a byte every 30 ms for 400 ms: four limits long, never 100 ms quiet
      local sent, ticker = 0, nil
      ticker = fw:SetTimer(30, function(ok)
        if not ok then return end
        sent = sent + 1
        st.socket:Send("x")
        if sent == 13 then ticker:Cancel() end
      end, nil, 30)
      H.run_until(fw, function() return sent == 13 end)
      assert.equal(1, server.connections, case.name)
      assert.same({}, logs.access, case.name)
      H.run_until(fw, function() return st.done and server.connections == 0 end)
      HH.finish(server, ust)
      assert.equal(case.reply, st.reply, case.name)
      assert.same({ "idle timeout" }, ends_of(logs), case.name)
    end
  end)

  it("refuses bad SDK filters and misuse of AttachDataFilter with a clear error", function()
    local host = require "fwx.host"
    local up = "127.0.0.1:1"
    local function refuses(text, filter)
      filter.upstream = filter.upstream or up
      filter.listen = "127.0.0.1:0"
      local fw = HH.service()
      H.raises(text, host.start, filter, fw)
    end
    refuses("filters must be a non-empty list", { filters = {} })
    refuses("filters[1] has no AttachToSession method", { filters = { {} } })
    refuses("filters[1].FilterInit must be a function", { filters = { { AttachToSession = print, FilterInit = 1 } } })
    refuses("on_data and SDK filters (AttachToSession) do not mix", { on_data = print, filters = { sdk_filter(1) } })
    refuses("filters[1]:FilterInit must return the events it hooks", { filters = { sdk_filter("all") } })
    refuses("send_limit_bytes must be an integer of 0 or more", { send_limit_bytes = 1.5, filters = { sdk_filter(1) } })
    refuses("filters[1]: FilterInit raised: ", { filters = { { AttachToSession = print, FilterInit = function() error("no") end } } })

    local problems = {}
    local server, logs, ust = HH.proxy({ filters = { sdk_filter(fwx.fwx_AcceptedConnection, function(event)
      local conn = event.Parameters.Accept.piConnectionAccepted
      for _, case in ipairs({
        { "data filter with a SetSockets method expected", {}, fwx.fwx_dfpc_Middle },
        { "a priority class, fwx.fwx_dfpc_NAT (0) to fwx.fwx_dfpc_Emulation (6), expected, got 7", relay("x"), 7 },
        { "expected, got nil", relay("x"), nil },
      }) do
        local fine, err = pcall(conn.AttachDataFilter, conn, case[2], case[3])
        if fine or not tostring(err):find(case[1], 1, true) then problems[#problems + 1] = tostring(err) end
      end
    end) } })
    local st = HH.client(server.fw, server.port, { "still served" })
    H.run_until(server.fw, function() return st.done and server.connections == 0 end)
    HH.finish(server, ust)
    assert.same({}, problems)
    assert.equal("still served", st.reply)
    assert.same({}, logs.errors)
  end)

  it("serves the README's SDK filter as it is printed there", function()
    local f = assert(io.open("README.md"))
    local readme = f:read("a")
    f:close()
    local section = readme:match("#### Filters in the SDK's shape.-```lua\n(.-)```")
    assert.truthy(section, "the README's SDK example")
    local fw = HH.service()
    local up, ust = HH.upstream(fw)
    local filter = assert(load(section, "=README.md"))(fw)
    filter.upstream = up
    local server, logs = HH.start(fw, filter)
    local st = HH.client(fw, server.port, { "from the readme" })
    H.run_until(fw, function() return st.done and server.connections == 0 end)
    HH.finish(server, ust)
    assert.equal("FROM THE README", st.reply)
    assert.same({ "closed" }, ends_of(logs))
  end)

  describe("over UDP", function()
    -- The host over UDP with filters, in front of a UDP echo upstream on its service.
    local function udp_proxy(filter)
      local fw = HH.service()
      local up, ust = HH.udp_upstream(fw)
      filter.upstream, filter.protocol = up, "udp"
      local server, logs = HH.start(fw, filter)
      return server, logs, ust, up
    end

    local function finish(server, ust, ...)
      for _, c in ipairs({ ... }) do c.socket:Close() end
      server.shutdown(0)
      ust.close()
      H.run(server.fw)
    end

    it("raises fwx_Udp_Destination per client address; its data filters get each datagram whole, each way", function()
      local log, dfs = {}, {}
      local server, logs, ust, up = udp_proxy({ idle_timeout_ms = 150, filters = {
        sdk_filter(fwx.fwx_Udp_Destination | fwx.fwx_EstablishedConnection | fwx.fwx_ConnectionTerminating,
          function(event)
            local p = event.Parameters
            if p.UdpDest then
              log[#log + 1] = "to " .. tostring(p.UdpDest.Address)
              local df = relay("upper", function(direction, buf)
                if direction == "request" then return tostring(buf):upper() end
                return buf
              end)
              dfs[#dfs + 1] = df
              p.UdpDest.piConnection:AttachDataFilter(df, fwx.fwx_dfpc_Middle)
            elseif p.EstablishedConnection then
              log[#log + 1] = "established " .. p.EstablishedConnection.Protocol
            end
          end, log) } })
      local fw = server.fw
      local a = HH.udp_client(fw, server.port, { "one", "two", "three" })
      H.run_until(fw, function() return #a.got == 3 end)
      local b = HH.udp_client(fw, server.port, { "four" })
      H.run_until(fw, function() return #b.got == 1 end)
      assert.same({ "ONE", "TWO", "THREE" }, a.got) -- each datagram whole, in order
      assert.same({ "FOUR" }, b.got)
      assert.equal(2, server.connections)
      H.run_until(fw, function() return server.connections == 0 end) -- idle
      finish(server, ust, a, b)
      assert.equal(2, #dfs)
      for _, df in ipairs(dfs) do
        assert.equal(1, df.detached)
        assert.truthy(tostring(df.internal):find("link", 1, true), tostring(df.internal))
        assert.equal("fwx.socket upstream of connection " .. (df == dfs[1] and 1 or 2), tostring(df.external))
      end
      assert.same({ "idle timeout", "idle timeout" }, ends_of({ access = logs.access }))
      local lines = table.concat(logs.access, "\n")
      assert.truthy(lines:find("request=11 response=11 end=idle timeout", 1, true), lines)
      assert.truthy(lines:find("request=4 response=4 end=idle timeout", 1, true), lines)
      -- one session filter for the one client address; each session's events in order
      local opened = { "fwx_Udp_Destination", "to " .. up, "fwx_EstablishedConnection", "established udp" }
      assert.same({ "FilterInit", "AttachToSession 127.0.0.1", opened[1], opened[2], opened[3],
                    opened[4], opened[1], opened[2], opened[3], opened[4],
                    "fwx_ConnectionTerminating", "fwx_ConnectionTerminating", "session:Detach",
                    "FilterShutdown" }, log)
      assert.same({}, logs.errors)
    end)

    it("an Emulation data filter answers UDP clients itself; the upstream hears nothing", function()
      local Answer = {}
      Answer.__index = Answer
      function Answer:SetSockets(internal, external)
        self.internal, self.external = internal, external
        internal:Recv(nil, self)
      end
      function Answer:CompleteAsyncIO(ok, _, buf)
        if not ok then return end
        self.internal:Send("pong " .. tostring(buf))
        self.internal:Recv(nil, self)
      end
      local emulators = {}
      local server, logs, ust = udp_proxy({ idle_timeout_ms = 100, filters = {
        sdk_filter(fwx.fwx_Udp_Destination, function(event)
          local df = setmetatable({}, Answer)
          emulators[#emulators + 1] = df
          event.Parameters.UdpDest.piConnection:AttachDataFilter(df, fwx.fwx_dfpc_Emulation)
        end) } })
      local fw = server.fw
      local c = HH.udp_client(fw, server.port, { "a", "b" })
      H.run_until(fw, function() return #c.got == 2 end)
      assert.same({ "pong a", "pong b" }, c.got)
      H.run_until(fw, function() return server.connections == 0 end)
      finish(server, ust, c)
      assert.equal(1, #emulators)
      assert.is_nil(emulators[1].external)
      assert.same({}, ust.received)
      assert.truthy(logs.access[1]:find("request=0 response=12 end=idle timeout", 1, true), logs.access[1])
    end)

    it("a raising SetSockets ends its session alone; the client's next datagram opens a new one", function()
      local calls = 0
      local server, logs, ust = udp_proxy({ idle_timeout_ms = 60000, filters = {
        sdk_filter(fwx.fwx_Udp_Destination, function(event)
          event.Parameters.UdpDest.piConnection:AttachDataFilter({ SetSockets = function()
            calls = calls + 1
            error("no sockets for me")
          end }, fwx.fwx_dfpc_Emulation) -- emulated: SetSockets comes at once
        end) } })
      local fw = server.fw
      local c = HH.udp_client(fw, server.port, { "a" })
      H.run_until(fw, function() return #logs.access == 1 end)
      c.socket:SendTo("b", "127.0.0.1", server.port)
      H.run_until(fw, function() return #logs.access == 2 end)
      assert.equal(2, calls)
      assert.equal(0, server.connections)
      finish(server, ust, c)
      assert.same({ "filter error", "filter error" }, ends_of(logs))
      assert.equal(2, #logs.errors)
    end)

    it("holds at most 64 datagrams for a data filter that does not take them, and drops the rest", function()
      local Late = {}
      Late.__index = Late
      function Late:SetSockets(internal, external) self.internal, self.external = internal, external end
      function Late:CompleteAsyncIO(ok, _, buf)
        if not ok then return end
        self.got = (self.got or 0) + 1
        self.internal:Recv(nil, self)
      end
      local df
      local server, logs, ust = udp_proxy({ idle_timeout_ms = 60000, filters = {
        sdk_filter(fwx.fwx_Udp_Destination, function(event)
          df = setmetatable({}, Late)
          event.Parameters.UdpDest.piConnection:AttachDataFilter(df, fwx.fwx_dfpc_Middle)
        end) } })
      local fw = server.fw
      local list = {}
      for i = 1, 200 do list[i] = "d" .. i end
      local c = HH.udp_client(fw, server.port, list)
      H.run_until(fw, function() return df and df.internal end)
      H.run_for(fw, 100) -- every datagram has come (or been lost on the way)
      df.internal:Recv(nil, df)
      H.run_for(fw, 100)
      assert.equal(64, df.got)
      finish(server, ust, c)
      assert.same({ "shutdown" }, ends_of(logs))
    end)

    it("ends a session once its data filter has closed both ends, or at Kill", function()
      for _, how in ipairs({ "close", "kill" }) do
        local Closer = {}
        Closer.__index = Closer
        function Closer:SetSockets(internal, external, conn)
          self.internal, self.external, self.conn = internal, external, conn
          internal:Recv(nil, self)
        end
        function Closer:CompleteAsyncIO(ok, _, buf)
          if not ok then return end
          self.internal:Send("bye " .. tostring(buf))
          if how == "kill" then return self.conn:Kill() end
          self.internal:Close()
          self.external:Close()
        end
        local server, logs, ust = udp_proxy({ idle_timeout_ms = 60000, filters = {
          sdk_filter(fwx.fwx_Udp_Destination, function(event)
            event.Parameters.UdpDest.piConnection:AttachDataFilter(setmetatable({}, Closer), fwx.fwx_dfpc_Middle)
          end) } })
        local fw = server.fw
        local c = HH.udp_client(fw, server.port, { "x" })
        H.run_until(fw, function() return #logs.access == 1 end)
        if how == "close" then H.run_until(fw, function() return #c.got == 1 end) end
        finish(server, ust, c)
        assert.same({ how == "close" and "closed" or "killed by the filter" }, ends_of(logs), how)
        if how == "close" then assert.same({ "bye x" }, c.got) end
      end
    end)
  end)
end)
