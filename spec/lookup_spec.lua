local fwx = require "fwx"
local H = require "spec.helper"

describe("GetHostByName", function()
  before_each(H.before)
  after_each(H.after)

  local new_fw, no_errors, assert_raises = H.collecting, H.no_errors, H.raises

  -- Name look-ups may wait on a resolver; give them more time than the default.
  local LOOKUP_MS = 20000

  -- Check an address list: a non-empty array of address values; returns their ips.
  local function check_addresses(list)
    assert.is_table(list)
    assert.is_true(#list > 0, "no addresses")
    local ips = {}
    for i, a in ipairs(list) do
      assert.is_not_nil(a.ip, "address " .. i)
      assert.truthy(a.family == "inet" or a.family == "inet6", tostring(a.family))
      assert.equal(0, a.port)
      if a.family == "inet6" then
        assert.equal("[" .. a.ip .. "]:0", tostring(a))
      else
        assert.equal(a.ip .. ":0", tostring(a))
      end
      ips[#ips + 1] = a.ip
    end
    return ips
  end

  local function has(list, value)
    for _, v in ipairs(list) do if v == value then return true end end
    return false
  end

  it("resolves localhost to 127.0.0.1 or ::1, with (true, 0, addresses, userdata), not inline", function()
    local fw, errors = new_fw()
    local sink, calls = H.recorder()
    fw:GetHostByName("localhost", sink, "ud")
    assert.equal(0, #calls)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(1, #calls)
    local c = calls[1]
    assert.equal(4, c.n)
    assert.is_true(c[1])
    assert.equal(0, c[2])
    local ips = check_addresses(c[3])
    assert.truthy(has(ips, "127.0.0.1") or has(ips, "::1"), table.concat(ips, " "))
    assert.equal("ud", c[4])
  end)

  it("lists each address once", function()
    local fw, errors = new_fw()
    local sink, calls = H.recorder()
    fw:GetHostByName("localhost", sink, nil)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(1, #calls)
    local seen = {}
    for _, ip in ipairs(check_addresses(calls[1][3])) do
      assert.is_nil(seen[ip], "listed twice: " .. ip)
      seen[ip] = true
    end
  end)

  it("resolves an IPv4 literal to exactly that address", function()
    local fw, errors = new_fw()
    local sink, calls = H.recorder()
    fw:GetHostByName("127.0.0.1", sink, 4)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(1, #calls)
    assert.is_true(calls[1][1])
    assert.equal(0, calls[1][2])
    assert.same({ "127.0.0.1" }, check_addresses(calls[1][3]))
    assert.equal("inet", calls[1][3][1].family)
    assert.equal(4, calls[1][4])
  end)

  it("resolves an IPv6 literal to exactly that address", function()
    local fw, errors = new_fw()
    local sink, calls = H.recorder()
    fw:GetHostByName("::1", sink, 6)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(1, #calls)
    if not calls[1][1] then
      pending("this machine's resolver does not return IPv6 addresses")
      return
    end
    assert.equal(0, calls[1][2])
    assert.same({ "::1" }, check_addresses(calls[1][3]))
    assert.equal("inet6", calls[1][3][1].family)
    assert.equal("[::1]:0", tostring(calls[1][3][1]))
    assert.equal(6, calls[1][4])
  end)

  it("a resolved address can be connected to", function()
    local fw, errors = new_fw()
    local ls, port = H.listener(fw)
    local accepted, connected
    ls:Accept(function(ok, err, l, s) accepted = ok; if s then s:Close() end end, nil)
    local client = fw:CreateNetworkSocket("tcp")
    fw:GetHostByName("127.0.0.1", function(ok, err, addrs)
      client:Connect(addrs[1], port, function(cok, cerr) connected = { cok, cerr } end, nil)
    end, nil)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.is_true(accepted)
    assert.same({ true, 0 }, connected)
    client:Close()
    ls:Close()
  end)

  it("a name that cannot exist fails with WSAHOST_NOT_FOUND (or 11002/11004)", function()
    local fw, errors = new_fw()
    local sink, calls = H.recorder()
    fw:GetHostByName("no-such-host.invalid", sink, "nx")
    assert.equal(0, #calls)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(1, #calls)
    local c = calls[1]
    assert.equal(4, c.n)
    assert.is_false(c[1])
    assert.truthy(c[2] == 11001 or c[2] == 11002 or c[2] == 11004, "err " .. tostring(c[2]))
    assert.truthy(c[3] == nil or (type(c[3]) == "table" and #c[3] == 0), "addresses on failure")
    assert.equal("nx", c[4])
    assert.equal(11001, fwx.errors.WSAHOST_NOT_FOUND)
  end)

  it("calls CompleteGetHostByName(self, ok, err, addresses, userdata) on an object sink", function()
    local fw, errors = new_fw()
    local obj = { calls = {} }
    function obj:CompleteGetHostByName(...) self.calls[#self.calls + 1] = table.pack(self, ...) end
    fw:GetHostByName("127.0.0.1", obj, "o")
    fw:get_host_by_name("no-such-host.invalid", obj, "bad")
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(2, #obj.calls)
    table.sort(obj.calls, function(a, b) return a[5] > b[5] end) -- "o" before "bad"
    local good, bad = obj.calls[1], obj.calls[2]
    assert.equal(5, good.n)
    assert.is_true(rawequal(obj, good[1]))
    assert.is_true(good[2])
    assert.equal(0, good[3])
    assert.same({ "127.0.0.1" }, check_addresses(good[4]))
    assert.equal("o", good[5])
    assert.is_true(rawequal(obj, bad[1]))
    assert.is_false(bad[2])
    assert.truthy(bad[3] == 11001 or bad[3] == 11002 or bad[3] == 11004, "err " .. tostring(bad[3]))
    assert.equal("bad", bad[5])
  end)

  it("many look-ups at once each notify exactly once with their own user data", function()
    local fw, errors = new_fw()
    local got = {}
    for i = 1, 20 do
      fw:GetHostByName(i % 2 == 0 and "localhost" or "127.0.0.1", function(ok, err, addrs, ud)
        got[#got + 1] = { ok, err, ud }
      end, i)
    end
    assert.equal(0, #got)
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    assert.equal(20, #got)
    local seen = {}
    for _, c in ipairs(got) do
      assert.is_true(c[1])
      assert.equal(0, c[2])
      assert.is_nil(seen[c[3]])
      seen[c[3]] = true
    end
    for i = 1, 20 do assert.is_true(seen[i]) end
  end)

  it("dropping every reference while look-ups are pending loses nothing", function()
    local fw, errors = new_fw()
    local got = {}
    for i = 1, 5 do
      fw:GetHostByName("127.0.0.1", function(ok, err, addrs, ud) got[#got + 1] = ud.n end, { n = i })
    end
    local rounds = 0
    repeat
      collectgarbage()
      rounds = rounds + 1
      fw:run(5)
    until #got == 5 or rounds > 4000
    H.run(fw, LOOKUP_MS)
    no_errors(errors)
    table.sort(got)
    assert.same({ 1, 2, 3, 4, 5 }, got)
  end)

  it("fw:Close() with look-ups pending gives each exactly one notification before it returns", function()
    local fw, errors = new_fw()
    local got = {}
    for i = 1, 10 do
      fw:GetHostByName("localhost", function(ok, err, addrs, ud)
        got[#got + 1] = { ok, err, addrs, ud }
      end, i)
    end
    fw:Close()
    no_errors(errors)
    assert.equal(10, #got)
    local seen = {}
    for _, c in ipairs(got) do
      -- ended by the shutdown: 995, whether or not the resolver had finished
      assert.is_false(c[1])
      assert.equal(995, c[2])
      assert.is_nil(c[3])
      assert.is_nil(seen[c[4]])
      seen[c[4]] = true
    end
    for i = 1, 10 do assert.is_true(seen[i]) end
  end)

  describe("bad arguments raise, naming the argument, and start nothing", function()
    it("the name", function()
      local fw = H.new()
      local f = function() end
      assert_raises("bad argument #1 to 'GetHostByName'", function() fw:GetHostByName("", f) end)
      assert_raises("bad argument #1 to 'GetHostByName'", function() fw:GetHostByName(("a"):rep(254), f) end)
      assert_raises("bad argument #1 to 'GetHostByName'", function() fw:GetHostByName("local\0host", f) end)
      assert_raises("bad argument #1 to 'GetHostByName'", function() fw:GetHostByName(nil, f) end)
      assert_raises("bad argument #1 to 'GetHostByName'", function() fw:GetHostByName({}, f) end)
      assert.equal(0, fw:pending())
      assert.equal(0, fw:anchored())
    end)

    it("the sink", function()
      local fw = H.new()
      assert_raises("bad argument #2 to 'GetHostByName'", function() fw:GetHostByName("localhost") end)
      assert_raises("bad argument #2 to 'GetHostByName'", function() fw:GetHostByName("localhost", {}) end)
      assert_raises("CompleteGetHostByName", function() fw:GetHostByName("localhost", { CompleteTask = print }) end)
      assert_raises("bad argument #2 to 'GetHostByName'", function() fw:GetHostByName("localhost", 42) end)
      assert.equal(0, fw:pending())
      assert.equal(0, fw:anchored())
    end)

    it("a closed service", function()
      local fw = H.new()
      fw:Close()
      assert_raises("closed", function() fw:GetHostByName("localhost", function() end) end)
    end)
  end)
end)
