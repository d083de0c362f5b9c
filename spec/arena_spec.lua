-- Service receives are read into the port's arena; at delivery they are copied into
-- Lua buffers, or kept where they lie (below). This attacks the arena's block reuse:
-- many connections and datagrams, packets held queued across many block switches (the
-- dispatcher is stopped in the middle of batches), and every byte checked against
-- what was sent.
local H = require "spec.helper"
local fwx = require "fwx"

local pattern = H.pattern

describe("the receive arena", function()
  before_each(H.before)
  after_each(H.after)

  it("keeps every received byte right while packets queue across many blocks", function()
    local fw = H.new()
    local ls, port = H.listener(fw, 1024)
    local N, PER, CHUNK = 16, 48, 3000  -- 16 streams of 144 000 bytes
    local got, bad, streams_done, accepted = {}, {}, 0, 0
    -- Stop the dispatcher every few receives, so that packets stay queued while reads
    -- go on into the arena.
    local recvs, stops, finished = 0, 0, false
    local function maybe_stop()
      recvs = recvs + 1
      if recvs % 5 == 0 and not finished then stops = stops + 1; fw:stop() end
    end
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
        maybe_stop()
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
      maybe_stop()
      if dgrams % 10 == 0 and dgrams < 200 then burst(dgrams + 1) end
      if dgrams < 200 then u2:Recv(nil, on_dgram) end
    end
    u2:Recv(nil, on_dgram)
    burst(1)
    local ok, err = pcall(H.run_until, fw, function() return streams_done == N and dgrams == 200 end, math.max(20000, 10 * H.TIMEOUT_MS))
    assert(ok, ("%s: %d of %d streams done, %d datagrams"):format(tostring(err), streams_done, N, dgrams))
    finished = true
    u1:Close(); u2:Close()
    H.run(fw)
    assert.same({}, bad)
    for id = 1, N do assert.equal(PER * CHUNK, got[id], "stream " .. id) end
    assert.equal(0, dgrams_bad)
    assert.is_true(stops > 10)
  end)
end)

-- Receives of 1 KiB and more are handed out where they were read: the buffer is a
-- view of the arena, and its arena block goes back once the collector has every
-- buffer of it (csrc/lua/received.c). These attack that: bytes kept for long, more
-- kept than the port may hold, buffers that outlive their service.
describe("receive buffers kept in the arena", function()
  local core = require "fwx.core"
  local KEPT_MAX = 4 -- FWX__ARENA_KEPT_BLOCKS

  before_each(H.before)
  after_each(H.after)

  -- A connected pair in fw: the accepted socket and the client socket.
  local function pair(fw)
    local ls, port = H.listener(fw)
    local server, client
    ls:Accept(function(ok, err, l, s) assert(ok, err); server = s; l:Close() end)
    local c = fw:CreateNetworkSocket("tcp")
    c:Connect("127.0.0.1", port, function(ok, err, s) assert(ok, err); client = s end)
    H.run_until(fw, function() return server and client end)
    return server, client
  end

  local function is_kept(b) return type(debug.getuservalue(b, 1)) == "userdata" end

  -- Send 8 MiB (8 times the 1 MiB kept blocks may take) from c to s in 4 KiB sends and
  -- receive it with Recv(nil), calling each(buffer); returns the bytes received and the
  -- most blocks kept at any notification.
  local function stream(fw, s, c, id, each)
    local CHUNK, TOTAL = 4096, 8 * 1024 * 1024
    local got, most, eof = 0, 0, false
    local function on_recv(ok, err, b)
      assert(ok, err)
      if #b == 0 then eof = true; return end
      each(b)
      got = got + #b
      most = math.max(most, (core._arena_stats(fw)))
      s:Recv(nil, on_recv)
    end
    s:Recv(nil, on_recv)
    for i = 0, TOTAL / CHUNK - 1 do c:Send(pattern(id, i * CHUNK, CHUNK)) end
    c:Shutdown()
    H.run_until(fw, function() return eof end, math.max(20000, 10 * H.TIMEOUT_MS))
    assert.equal(TOTAL, got)
    assert.is_true(most >= 1 and most <= KEPT_MAX, most .. " blocks kept")
  end

  it("keeps every byte right while a program keeps more buffers than the arena may hold", function()
    local fw = H.new()
    local s, c = pair(fw)
    local bufs = {}
    stream(fw, s, c, 5, function(b) bufs[#bufs + 1] = b end)
    local kept, copied, pos = 0, 0, 0
    for _, b in ipairs(bufs) do
      if is_kept(b) then kept = kept + 1 else copied = copied + 1 end
      assert.equal(pattern(5, pos, #b), tostring(b), "bytes " .. pos .. " on")
      pos = pos + #b
    end
    assert.is_true(kept > 0, "no receive was kept in place")
    assert.is_true(copied > 0, "past the limit, receives must be copied")
    -- Every block but the one the service holds goes back with its buffers.
    bufs = nil
    collectgarbage(); collectgarbage()
    assert.is_true(core._arena_stats(fw) <= 1)
    s:Close(); c:Close()
    H.run(fw)
    fw:Close()
    collectgarbage(); collectgarbage()
    assert.equal(0, (core._arena_stats(fw)))
  end)

  it("gives blocks back as their buffers are collected, when nothing keeps them", function()
    local fw = H.new()
    local s, c = pair(fw)
    stream(fw, s, c, 6, function() end)
    collectgarbage(); collectgarbage()
    local kept, spares = core._arena_stats(fw)
    assert.is_true(kept <= 1, kept .. " blocks kept")
    assert.is_true(spares <= 16, spares .. " spare blocks")
    s:Close(); c:Close()
    H.run(fw)
  end)

  -- Kept bytes add no collector debt, so at the bound the service asks the collector
  -- for a step before it copies (received.c). The stress pass's step after every
  -- notification ages each buffer into the old generation, which a young collection
  -- does not look at: these turn it off for their stream, which runs with the
  -- collector in generational mode (as lua5.4 and fwx.serve's workers run it).
  -- fn(fw, s, c) gets a new service and a connected pair in it.
  local function without_debug_gc(fn)
    local mode = collectgarbage("generational")
    local ok, err = pcall(function()
      core._debug_gc(false)
      local fw = H.new()
      fn(fw, pair(fw))
    end)
    core._debug_gc(os.getenv("FWX_DEBUG_GC") == "1")
    collectgarbage("restart")
    collectgarbage(mode)
    assert(ok, err)
  end

  it("asks the collector for the blocks of dropped buffers at the bound, instead of copying", function()
    without_debug_gc(function(fw, s, c)
      local kept, copied = 0, 0
      stream(fw, s, c, 12, function(b)
        if is_kept(b) then kept = kept + 1 elseif #b >= 1024 then copied = copied + 1 end
      end)
      -- 8 MiB is 8 times what the bound lets the blocks hold.
      assert.equal(0, copied, copied .. " receives copied, " .. kept .. " kept")
      s:Close(); c:Close()
      H.run(fw)
    end)
  end)

  it("keeps every byte right when a finalizer closes the service at the bound", function()
    without_debug_gc(function(fw, s, c)
      local bufs, armed, closed_in_gc, got = {}, false, false, 0
      local function on_recv(ok, err, b)
        if not ok or #b == 0 then return end
        bufs[#bufs + 1] = b -- held: at the bound the step gives no block back
        got = got + #b
        -- At the bound, drop a finalizable object: the step the next receive asks
        -- for finds it, and the service closes in the middle of that delivery.
        if not armed and core._arena_stats(fw) == KEPT_MAX then
          armed = true
          setmetatable({}, { __gc = function() closed_in_gc = true; fw:Close() end })
        end
        if not closed_in_gc then s:Recv(nil, on_recv) end
      end
      s:Recv(nil, on_recv)
      for i = 0, 2047 do c:Send(pattern(14, i * 4096, 4096)) end
      local ok, err = pcall(H.run_until, fw, function() return closed_in_gc end,
                            math.max(20000, 10 * H.TIMEOUT_MS))
      assert(ok or closed_in_gc, err)
      assert.is_true(closed_in_gc)
      fw, s, c = nil, nil, nil
      collectgarbage(); collectgarbage()
      local pos = 0
      for _, b in ipairs(bufs) do
        assert.equal(pattern(14, pos, #b), tostring(b), "bytes " .. pos .. " on")
        pos = pos + #b
      end
      assert.equal(got, pos)
      bufs = nil
      collectgarbage(); collectgarbage() -- the last blocks go, and the port with them
    end)
  end)

  it("leaves a stopped collector alone at the bound, and copies", function()
    without_debug_gc(function(fw, s, c)
      local copied = 0
      collectgarbage("stop")
      stream(fw, s, c, 13, function(b) if not is_kept(b) then copied = copied + 1 end end)
      assert.is_false(collectgarbage("isrunning"))
      assert.is_true(copied > 0, "no receive was copied: the stopped collector ran")
      collectgarbage("restart")
      s:Close(); c:Close()
      H.run(fw)
    end)
  end)

  it("is a buffer like any other: written, windowed, searched and sent", function()
    local fw = H.new()
    local s, c = pair(fw)
    local data = pattern(9, 0, 3000)
    local b
    s:Recv(nil, function(ok, err, buf) assert(ok, err); b = buf end)
    c:Send(data)
    H.run_until(fw, function() return b end)
    assert.is_true(is_kept(b))
    assert.equal(data, tostring(b))
    assert.equal(3000, #b)
    assert.same({ 3000, 3000 }, { b:GetBufferSizes() })
    assert.same({ 0, "FWX_E_BUFFERFULL" }, { b:Append("x") })
    local w = fw:CreateWindowBuffer(b, 100, 50)
    assert.equal(data:sub(101, 150), tostring(w))
    assert.equal(data:find(data:sub(200, 220), 1, true), (b:find(data:sub(200, 220))))
    assert.equal(data:byte(3000), b:byte(-1))
    -- Sent back while lent, then changed once the send is done.
    local sent, echoed = false, {}
    s:Send(b, function(ok, err) assert(ok, err); sent = true end)
    H.raises("lent", b.SetDataSize, b, 10)
    local function on_echo(ok, err, e)
      assert(ok, err)
      echoed[#echoed + 1] = tostring(e)
      if #table.concat(echoed) < #data then c:Recv(nil, on_echo) end
    end
    c:Recv(nil, on_echo)
    H.run_until(fw, function() return sent and #table.concat(echoed) == #data end)
    assert.equal(data, table.concat(echoed))
    assert.is_true(b:SetDataSize(10))
    assert.equal(data:sub(1, 10), tostring(b))
    -- The block object is not for calling by hand.
    assert.is_false(getmetatable(debug.getuservalue(b, 1)))
    s:Close(); c:Close()
    H.run(fw)
  end)

  it("outlives its service: the bytes stay right after the service is closed and collected", function()
    local fw = fwx.new{}
    local s, c = pair(fw)
    local data = pattern(11, 0, 5000)
    local bufs, got = {}, 0
    local function on_recv(ok, err, b)
      assert(ok, err)
      bufs[#bufs + 1] = b
      got = got + #b
      if got < #data then s:Recv(nil, on_recv) end
    end
    s:Recv(nil, on_recv)
    c:Send(data)
    H.run_until(fw, function() return got == #data end)
    assert.is_true(is_kept(bufs[1]))
    fw:Close()
    fw, s, c = nil, nil, nil
    collectgarbage(); collectgarbage()
    local parts = {}
    for i, b in ipairs(bufs) do parts[i] = tostring(b) end
    assert.equal(data, table.concat(parts))
    bufs = nil
    collectgarbage(); collectgarbage() -- the last block goes, and the port with it
  end)
end)
