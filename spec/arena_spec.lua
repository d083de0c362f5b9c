-- Service receives are read into the port's arena and copied into Lua buffers at
-- delivery. This attacks the arena's block reuse: many connections and datagrams,
-- packets held queued across many block switches (the dispatcher is stopped in the
-- middle of batches), and every byte checked against what was sent.
local H = require "spec.helper"

-- The byte a sender puts at position i (0-based) of stream `id`.
local function pattern(id, from, n)
  local t = {}
  for i = from, from + n - 1 do t[#t + 1] = string.char((id * 31 + i) % 251) end
  return table.concat(t)
end

describe("the receive arena", function()
  before_each(H.before)
  after_each(H.after)

  it("keeps every received byte right while packets queue across many blocks", function()
    local fw = H.new()
    local ls, port = H.listener(fw, 1024)
    local N, PER, CHUNK = 16, 48, 3000  -- 16 streams of 144 000 bytes
    local got, bad, streams_done, accepted = {}, {}, 0, 0
    local on_accept
    function on_accept(ok, err, l, s)
      local id, pos = nil, 0
      local function on_recv(rok, rerr, b)
        assert(rok, rerr)
        if #b == 0 then s:Close(); streams_done = streams_done + 1; return end
        local data = tostring(b)
        if id == nil then id = data:byte(1); data = data:sub(2) end -- first byte: the stream id
        if #data > 0 and data ~= pattern(id, pos, #data) then bad[#bad + 1] = id end
        pos = pos + #data
        got[id] = pos
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
      accepted = accepted + 1
      if accepted < N then l:Accept(on_accept) else l:Close() end
    end
    ls:Accept(on_accept)
    for id = 1, N do
      local c = fw:CreateNetworkSocket("tcp")
      c:Connect("127.0.0.1", port, function(ok, err, s)
        assert(ok, err)
        s:Send(string.char(id))
        for k = 0, PER - 1 do s:Send(pattern(id, k * CHUNK, CHUNK)) end
        s:Shutdown()
        s:Recv(nil, function() s:Close() end)
      end)
    end
    -- A UDP pair beside them, with datagrams of varied sizes.
    local u1, u2 = fw:CreateNetworkSocket("udp"), fw:CreateNetworkSocket("udp")
    assert(u1:Bind("127.0.0.1", 0)); assert(u2:Bind("127.0.0.1", 0))
    local uport = u2:GetSockName().port
    local dgrams, dgrams_bad = 0, 0
    -- bursts of 10, each sent when the last is in: UDP may drop what overflows
    local function burst(first)
      for i = first, first + 9 do
        local n = (i * 97) % 1400 + 1
        u1:SendTo(pattern(7, n, n), "127.0.0.1", uport)
      end
    end
    local function on_dgram(ok, err, b)
      assert(ok, err)
      local n = #b
      if tostring(b) ~= pattern(7, n, n) then dgrams_bad = dgrams_bad + 1 end
      dgrams = dgrams + 1
      if dgrams % 10 == 0 and dgrams < 200 then burst(dgrams + 1) end
      if dgrams < 200 then u2:Recv(nil, on_dgram) end
    end
    u2:Recv(nil, on_dgram)
    burst(1)
    -- Stop the dispatcher often, so that packets stay queued while reads go on.
    local stops, finished = 0, false
    local ticker = fw:SetTimer(1, function(ok)
      if ok and not finished then stops = stops + 1; fw:stop() end
    end, nil, 1)
    local ok, err = pcall(H.run_until, fw, function() return streams_done == N and dgrams == 200 end, math.max(20000, 10 * H.TIMEOUT_MS))
    assert(ok, ("%s: %d of %d streams done, %d datagrams"):format(tostring(err), streams_done, N, dgrams))
    finished = true
    ticker:Cancel()
    u1:Close(); u2:Close()
    H.run(fw)
    assert.same({}, bad)
    for id = 1, N do assert.equal(PER * CHUNK, got[id], "stream " .. id) end
    assert.equal(0, dgrams_bad)
    assert.is_true(stops > 10)
  end)
end)
