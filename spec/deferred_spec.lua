-- A poll reads at most its read budget (256 KiB) into the arena; a socket read past it
-- is queued and done with read(2) before the next poll (csrc/core/deferred.c). These
-- make many sockets ready at once, so that most of their reads are queued, and attack
-- the queue: every byte in order and each receive notified once, handlers that re-arm
-- late (the queued read then lands in the socket's held chunk), sockets closed while
-- their read waits, peers that reset, and the service closed with reads queued.
local H = require "spec.helper"
local core = require "fwx.core"

local N = 24 -- sockets ready at once: 24 x 64 KiB is six times the budget

local function deferred_reads(fw)
  return select(3, core._arena_stats(fw))
end

-- A service with N connected pairs, and its count of queued reads so far.
local function setup()
  local fw = H.new()
  local servers, clients = H.pairs(fw, N)
  return fw, servers, clients, deferred_reads(fw)
end

-- Close every socket of the lists given and let the closes finish.
local function close_all(fw, ...)
  for _, list in ipairs({ ... }) do
    for _, s in ipairs(list) do s:Close() end
  end
  H.run(fw)
end

-- Each client sends its id, then size bytes of its pattern, all before the service
-- runs again: every accepted socket is ready in the same poll.
local function send_all(clients, size, shutdown)
  for id, c in ipairs(clients) do
    c:Send(string.char(id) .. H.pattern(id, 0, size))
    if shutdown then c:Shutdown() end
  end
end

describe("reads past the read budget", function()
  before_each(H.before)
  after_each(H.after)

  -- Receive on every socket of servers until each peer's stream ends, checking every
  -- byte against the pattern its first byte names; rearm(s, on_recv) starts each next
  -- receive. Returns the bytes per stream id, the receives started, the notifications.
  local function receive_streams(fw, servers, rearm)
    local seen, eofs, recvs, notes = {}, 0, 0, 0
    for _, s in ipairs(servers) do
      local id, pos
      local function on_recv(ok, err, b)
        notes = notes + 1
        assert(ok, err)
        if #b == 0 then eofs = eofs + 1; s:Close(); return end
        local data = tostring(b)
        if id == nil then
          id, pos, data = data:byte(1), 0, data:sub(2)
          assert(seen[id] == nil, "two sockets got stream " .. id)
        end
        assert(data == H.pattern(id, pos, #data), "stream " .. id .. ": wrong bytes at " .. pos)
        pos = pos + #data
        seen[id] = pos
        recvs = recvs + 1
        rearm(s, on_recv)
      end
      recvs = recvs + 1
      s:Recv(nil, on_recv)
    end
    H.run_until(fw, function() return eofs == #servers end, math.max(20000, 10 * H.TIMEOUT_MS))
    return seen, recvs, notes
  end

  it("are done before the next poll: every byte in order, every receive notified once", function()
    local SIZE = 160 * 1024
    local fw, servers, clients, before = setup()
    send_all(clients, SIZE, true)
    local seen, recvs, notes = receive_streams(fw, servers, function(s, on_recv) s:Recv(nil, on_recv) end)
    for id = 1, N do assert.equal(SIZE, seen[id], "stream " .. id) end
    assert.equal(recvs, notes)
    assert.is_true(deferred_reads(fw) - before >= N / 2,
                   (deferred_reads(fw) - before) .. " reads were queued")
    close_all(fw, clients)
  end)

  it("keep the bytes of a socket whose handler re-arms later, in its held chunk", function()
    local SIZE = 200 * 1024
    local fw, servers, clients, before = setup()
    send_all(clients, SIZE, true)
    -- No receive pending until the task runs: what the queue reads meanwhile is held
    -- by the socket, and reading pauses.
    local seen = receive_streams(fw, servers, function(s, on_recv)
      fw:PostTaskCompletion(function() s:Recv(nil, on_recv) end)
    end)
    for id = 1, N do assert.equal(SIZE, seen[id], "stream " .. id) end
    assert.is_true(deferred_reads(fw) > before, "no read was queued")
    close_all(fw, clients)
  end)

  it("end once, with 995, for sockets closed while their read waits in the queue", function()
    local fw, servers, clients, before = setup()
    local notes, aborted, read = {}, 0, 0
    for i, s in ipairs(servers) do
      s:Recv(nil, function(ok, err, b)
        notes[i] = (notes[i] or 0) + 1
        if ok then
          read = read + 1
          assert.is_true(#b > 0)
          if read == 1 then
            -- The first socket served closes every other: most of them have their
            -- read queued now (the poll read only the budget's worth).
            for j, other in ipairs(servers) do if j ~= i then other:Close() end end
          end
        else
          assert.equal(995, err)
          aborted = aborted + 1
        end
      end)
    end
    send_all(clients, 64 * 1024)
    H.run(fw)
    for i = 1, N do assert.equal(1, notes[i], "socket " .. i .. " notified " .. tostring(notes[i]) .. " times") end
    assert.is_true(deferred_reads(fw) > before, "no read was queued")
    assert.is_true(aborted > 0, "no socket was closed before its read")
    assert.equal(N, read + aborted)
    close_all(fw, servers, clients)
  end)

  it("report a peer's reset through the queue as through the poll", function()
    local fw, servers, clients, before = setup()
    local resets, eofs, bytes = 0, 0, 0
    for _, s in ipairs(servers) do
      local function on_recv(ok, err, b)
        if not ok then
          assert.equal(64, err) -- ERROR_NETNAME_DELETED
          resets = resets + 1
          return s:Close()
        end
        if #b == 0 then eofs = eofs + 1; return s:Close() end
        bytes = bytes + #b
        s:Recv(nil, on_recv)
      end
      s:Recv(nil, on_recv)
    end
    -- Half the peers send 64 KiB and end; the other half, after them, reset with
    -- nothing sent: their sockets are ready with only the error, past the budget the
    -- others took, so their reads are queued and the queue's read(2) meets the reset.
    for id, c in ipairs(clients) do
      if id % 2 == 1 then c:Send(H.pattern(id, 0, 64 * 1024)); c:Shutdown() end
    end
    for id, c in ipairs(clients) do if id % 2 == 0 then c:Close(true) end end
    H.run_until(fw, function() return resets + eofs == N end, math.max(20000, 10 * H.TIMEOUT_MS))
    assert.equal(N / 2, resets)
    assert.equal(N / 2, eofs)
    assert.equal(N / 2 * 64 * 1024, bytes)
    assert.is_true(deferred_reads(fw) - before > N / 2, "the resets were not queued")
    close_all(fw, clients)
  end)

  it("are let go when the service closes with reads queued; each receive ends once", function()
    local fw, servers, clients, before = setup()
    local notes, served = {}, 0
    for i, s in ipairs(servers) do
      s:Recv(nil, function(ok, err)
        notes[i] = (notes[i] or 0) + 1
        if ok then served = served + 1; fw:stop() else assert.equal(995, err) end
      end)
    end
    send_all(clients, 64 * 1024)
    H.run_until(fw, function() return served > 0 end)
    assert.is_true(deferred_reads(fw) > before, "no read was queued")
    fw:Close()
    for i = 1, N do assert.equal(1, notes[i], "socket " .. i .. " notified " .. tostring(notes[i]) .. " times") end
  end)
end)
