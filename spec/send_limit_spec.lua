-- A send limit (s:setsendlimit(bytes), e:setsendlimit(bytes) on a link's end): a Send
-- that finds that many bytes still queued moves nothing and fails with 1450, so that a
-- sender that does not wait for its completions holds a bounded amount (DESIGN.md 2.7),
-- as the host's data filters' sockets are limited. Real sockets on 127.0.0.1 with small
-- kernel buffers, and links. Each case tries to break the bound or exactly-once: every
-- Send gets one notification, and no refused byte ever arrives.
local fwx = require "fwx"
local H = require "spec.helper"
local link = require "fwx.link"

local E = fwx.errors
local CHUNK = 65536

-- A connected pair whose kernel buffers are small: the sender's send buffer and the
-- receiver's receive buffer, set before the connection exists.
local function small_pair(fw)
  local ls = fw:CreateNetworkSocket("tcp")
  assert(ls:SetSockOpt("rcvbuf", 16384))
  assert(ls:Bind("127.0.0.1", 0))
  assert(ls:Listen(4))
  local receiver
  ls:Accept(function(ok, err, l, s) assert(ok, err); receiver = s; l:Close() end)
  local sender = fw:CreateNetworkSocket("tcp")
  assert(sender:SetSockOpt("sndbuf", 16384))
  local connected
  sender:Connect("127.0.0.1", ls:GetSockName().port, function(ok, err) assert(ok, err); connected = true end)
  H.run_until(fw, function() return receiver and connected end)
  return sender, receiver
end

-- n Sends of CHUNK bytes on s, each recording its notification in results[i].
local function flood(s, n, results)
  local chunk = string.rep("f", CHUNK)
  for i = 1, n do
    s:Send(chunk, function(ok, err) results[i] = { ok, err } end)
  end
end

local function tally(results, n)
  local ok, refused, other = 0, 0, 0
  for i = 1, n do
    local r = results[i]
    if r == nil then other = other + 1
    elseif r[1] then ok = ok + 1
    elseif r[2] == E.ERROR_NO_SYSTEM_RESOURCES then refused = refused + 1
    else other = other + 1 end
  end
  return ok, refused, other
end

-- Read everything from s until want bytes came; returns the count.
local function read_all(fw, s, want)
  local got = 0
  local function on_recv(ok, _, buf)
    if not ok or #buf == 0 then return end
    got = got + #buf
    if got < want then s:Recv(nil, on_recv) end
  end
  s:Recv(nil, on_recv)
  H.run_until(fw, function() return got >= want end, 20000)
  return got
end

describe("a send limit", function()
  before_each(H.before)
  after_each(H.after)

  it("refuses a socket's Sends with 1450 once that much is queued, and moves none of their bytes", function()
    local fw = H.new()
    local sender, receiver = small_pair(fw)
    assert.is_true(sender:setsendlimit(4 * CHUNK))
    local results, n = {}, 200
    flood(sender, n, results) -- 12.5 MiB at once towards a peer that does not read yet
    H.run_for(fw, 20)
    local ok, refused = tally(results, n)
    assert.is_true(refused > 0, "no Send was refused")
    assert.is_true(refused < n, "every Send was refused")
    local accepted = n - refused -- refused ones were notified, the rest are pending or done
    -- the receiver gets exactly the accepted Sends' bytes, and each of those succeeds
    assert.equal(accepted * CHUNK, read_all(fw, receiver, accepted * CHUNK))
    H.run_until(fw, function() return select(1, tally(results, n)) == accepted end)
    ok, refused = tally(results, n)
    assert.equal(n, ok + refused)
    -- without the limit, the same flood is queued whole
    assert.is_true(sender:setsendlimit(0))
    local again = {}
    flood(sender, 50, again)
    assert.equal(50 * CHUNK, read_all(fw, receiver, 50 * CHUNK))
    H.run_until(fw, function() return select(1, tally(again, 50)) == 50 end)
    sender:Close()
    receiver:Close()
  end)

  it("refuses a link end's Sends once the other end has that much untaken", function()
    local fw = H.new()
    local a, b = link.pair(fw)
    assert.is_true(a:setsendlimit(4 * CHUNK))
    local results = {}
    flood(a, 10, results)
    H.run_for(fw, 50) -- nothing takes them: the first four wait, the other six are refused
    local ok, refused, waiting = tally(results, 10)
    assert.same({ 0, 6, 4 }, { ok, refused, waiting })
    for i = 5, 10 do assert.same({ false, E.ERROR_NO_SYSTEM_RESOURCES }, results[i]) end
    local got = 0
    local function on_recv(rok, _, buf)
      if not rok or #buf == 0 then return end
      got = got + #buf
      b:Recv(nil, on_recv)
    end
    b:Recv(nil, on_recv)
    H.run_until(fw, function() return select(1, tally(results, 10)) == 4 end)
    assert.equal(4 * CHUNK, got) -- the refused ones' bytes never arrive
    -- room again once taken
    local later = {}
    flood(a, 1, later)
    H.run_until(fw, function() return later[1] ~= nil end)
    assert.same({ true, 0 }, later[1])
    a:Close()
    b:Close()
    H.run(fw)
  end)

  it("raises for a bad limit or a closed socket, and starts nothing", function()
    local fw = H.new()
    local s = fw:CreateNetworkSocket("tcp")
    local a, b = link.pair(fw)
    H.raises("bytes must be 0 or more", s.setsendlimit, s, -1)
    H.raises("number expected, got string", s.setsendlimit, s, "lots")
    H.raises("bytes must be 0 or more", a.setsendlimit, a, -5)
    s:Close()
    a:Close()
    H.raises("socket is closed", s.setsendlimit, s, 10)
    H.raises("socket is closed", a.setsendlimit, a, 10)
    b:Close()
    assert.equal(0, fw:pending())
  end)
end)
