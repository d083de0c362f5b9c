local fwx = require "fwx"
local H = require "spec.helper"

describe("fwx.errors and fwx.strerror", function()
  before_each(H.before)
  after_each(H.after)

  -- The Win32 codes a completion can carry (ISA-SDK.md §5.6, both columns) and the
  -- ones the brief names: these must all be in fwx.errors, with these values.
  local REQUIRED = {
    ERROR_SUCCESS = 0,
    ERROR_ACCESS_DENIED = 5,
    ERROR_INVALID_HANDLE = 6,
    ERROR_NOT_ENOUGH_MEMORY = 8,
    ERROR_HANDLE_EOF = 38,
    ERROR_NOT_SUPPORTED = 50,
    ERROR_UNEXP_NET_ERR = 59,
    ERROR_NETNAME_DELETED = 64,
    ERROR_INVALID_PARAMETER = 87,
    ERROR_BROKEN_PIPE = 109,
    ERROR_SEM_TIMEOUT = 121,
    ERROR_MORE_DATA = 234,
    ERROR_OPERATION_ABORTED = 995,
    ERROR_IO_PENDING = 997,
    ERROR_NOACCESS = 998,
    ERROR_NOT_FOUND = 1168,
    ERROR_CONNECTION_REFUSED = 1225,
    ERROR_GRACEFUL_DISCONNECT = 1226,
    ERROR_ADDRESS_ALREADY_ASSOCIATED = 1227,
    ERROR_CONNECTION_INVALID = 1229,
    ERROR_NETWORK_UNREACHABLE = 1231,
    ERROR_HOST_UNREACHABLE = 1232,
    ERROR_PORT_UNREACHABLE = 1234,
    ERROR_CONNECTION_ABORTED = 1236,
    ERROR_HOST_DOWN = 1256,
    ERROR_NO_SYSTEM_RESOURCES = 1450,
    ERROR_TIMEOUT = 1460,
    ERROR_NOT_CONNECTED = 2250,
    WSAEINTR = 10004,
    WSAEACCES = 10013,
    WSAEINVAL = 10022,
    WSAEMFILE = 10024,
    WSAEWOULDBLOCK = 10035,
    WSAEALREADY = 10037,
    WSAENOTSOCK = 10038,
    WSAEMSGSIZE = 10040,
    WSAEPROTONOSUPPORT = 10043,
    WSAEOPNOTSUPP = 10045,
    WSAEAFNOSUPPORT = 10047,
    WSAEADDRINUSE = 10048,
    WSAEADDRNOTAVAIL = 10049,
    WSAENETDOWN = 10050,
    WSAENETUNREACH = 10051,
    WSAECONNABORTED = 10053,
    WSAECONNRESET = 10054,
    WSAENOBUFS = 10055,
    WSAEISCONN = 10056,
    WSAENOTCONN = 10057,
    WSAESHUTDOWN = 10058,
    WSAETIMEDOUT = 10060,
    WSAECONNREFUSED = 10061,
    WSAEHOSTDOWN = 10064,
    WSAEHOSTUNREACH = 10065,
    WSAHOST_NOT_FOUND = 11001,
    WSATRY_AGAIN = 11002,
    WSANO_RECOVERY = 11003,
    WSANO_DATA = 11004,
  }

  -- The rest of the SDK's tables (ISA-SDK.md §5.1 and §5.2): the names a user of the
  -- SDK knows, whether or not this implementation ever delivers them.
  local SDK_TABLES = {
    ERROR_INVALID_FUNCTION = 1,
    ERROR_INVALID_DATA = 13,
    ERROR_OUTOFMEMORY = 14,
    ERROR_DUP_NAME = 52,
    ERROR_BAD_NETPATH = 53,
    ERROR_NETWORK_ACCESS_DENIED = 65,
    ERROR_INSUFFICIENT_BUFFER = 122,
    ERROR_ALREADY_EXISTS = 183,
    ERROR_NO_DATA = 232,
    WAIT_TIMEOUT = 258,
    ERROR_INVALID_ADDRESS = 487,
    ERROR_ABANDONED_WAIT_0 = 735,
    ERROR_IO_INCOMPLETE = 996,
    ERROR_SHUTDOWN_IN_PROGRESS = 1115,
    ERROR_INVALID_NETNAME = 1214,
    ERROR_CANCELLED = 1223,
    ERROR_ADDRESS_NOT_ASSOCIATED = 1228,
    ERROR_CONNECTION_ACTIVE = 1230,
    ERROR_PROTOCOL_UNREACHABLE = 1233,
    ERROR_REQUEST_ABORTED = 1235,
    ERROR_CONNECTION_COUNT_LIMIT = 1238,
    ERROR_INVALID_USER_BUFFER = 1784,
    WSAEBADF = 10009,
    WSAEFAULT = 10014,
    WSAEINPROGRESS = 10036,
    WSAEDESTADDRREQ = 10039,
    WSAEPROTOTYPE = 10041,
    WSAENOPROTOOPT = 10042,
    WSAESOCKTNOSUPPORT = 10044,
    WSAEPFNOSUPPORT = 10046,
    WSAENETRESET = 10052,
    WSAETOOMANYREFS = 10059,
    WSAELOOP = 10062,
    WSAENAMETOOLONG = 10063,
    WSANOTINITIALISED = 10093,
    WSAEDISCON = 10101,
    WSAECANCELLED = 10103,
  }

  local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end

  it("maps every name a completion can carry to its Win32 code", function()
    assert.is_table(fwx.errors)
    local wrong = {}
    for _, name in ipairs(sorted_keys(REQUIRED)) do
      if fwx.errors[name] ~= REQUIRED[name] then
        wrong[#wrong + 1] = ("%s = %s (want %d)"):format(name, tostring(fwx.errors[name]), REQUIRED[name])
      end
    end
    assert.equal("", table.concat(wrong, ", "))
  end)

  it("has the remaining names of the SDK's error tables (ISA-SDK.md §5.1, §5.2)", function()
    local wrong = {}
    for _, name in ipairs(sorted_keys(SDK_TABLES)) do
      if fwx.errors[name] ~= SDK_TABLES[name] then
        wrong[#wrong + 1] = ("%s = %s (want %d)"):format(name, tostring(fwx.errors[name]), SDK_TABLES[name])
      end
    end
    assert.equal("", table.concat(wrong, ", "))
  end)

  it("holds only integer codes under upper-case names", function()
    local n = 0
    for name, code in pairs(fwx.errors) do
      n = n + 1
      assert.is_string(name)
      assert.truthy(name:match("^[A-Z][A-Z0-9_]*$"), name)
      assert.equal("integer", math.type(code), name)
      assert.is_true(code >= 0, name)
    end
    assert.is_true(n >= 60, "only " .. n .. " names")
  end)

  it("strerror gives the name and a message of every code in the table", function()
    for _, name in ipairs(sorted_keys(fwx.errors)) do
      local code = fwx.errors[name]
      local got, msg = fwx.strerror(code)
      assert.is_string(got)
      -- Aliases share a code: strerror picks one name, but it names the same code.
      assert.equal(code, fwx.errors[got], ("strerror(%d) = %s"):format(code, got))
      assert.is_string(msg)
      assert.is_true(#msg > 0, name)
    end
  end)

  it("strerror names the codes the brief lists", function()
    local expect = {
      [0] = "ERROR_SUCCESS",
      [995] = "ERROR_OPERATION_ABORTED",
      [64] = "ERROR_NETNAME_DELETED",
      [1225] = "ERROR_CONNECTION_REFUSED",
      [121] = "ERROR_SEM_TIMEOUT",
      [234] = "ERROR_MORE_DATA",
      [38] = "ERROR_HANDLE_EOF",
      [10048] = "WSAEADDRINUSE",
      [11001] = "WSAHOST_NOT_FOUND",
    }
    for code, name in pairs(expect) do
      local got, msg = fwx.strerror(code)
      assert.equal(name, got)
      assert.is_string(msg)
      assert.is_true(#msg > 0)
      assert.are_not.equal(got, msg)
    end
    assert.equal(2, select("#", fwx.strerror(995)))
  end)

  it("strerror of an unknown code returns a made-up name and message and does not raise", function()
    for _, code in ipairs({ 12345, 7, 99999, -1, 2147483647 }) do
      local known = false
      for _, c in pairs(fwx.errors) do if c == code then known = true end end
      assert.is_false(known, "test code " .. code .. " is in the table")
      local name, msg = fwx.strerror(code)
      assert.is_string(name)
      assert.is_string(msg)
      assert.is_nil(fwx.errors[name], "unknown code " .. code .. " got a real name " .. name)
      assert.truthy(name:find(tostring(code), 1, true), name)
      assert.truthy(msg:find(tostring(code), 1, true), msg)
    end
  end)

  it("strerror raises on a code that is not an integer, naming the argument", function()
    assert.has_error(function() fwx.strerror("abc") end)
    local ok, err = pcall(fwx.strerror, "abc")
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1 to '[%w_.]*strerror'"), err)
    ok, err = pcall(fwx.strerror, 1.5)
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1", 1, true), err)
    ok, err = pcall(fwx.strerror)
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1", 1, true), err)
  end)

  it("a synchronous refusal returns nil, a message and errors.WSAEADDRINUSE", function()
    local fw = H.new()
    local a = fw:CreateNetworkSocket("udp")
    assert.is_true(a:Bind("127.0.0.1", 0))
    local port = a:GetSockName().port
    local b = fw:CreateNetworkSocket("udp")
    local r, msg, code = b:Bind("127.0.0.1", port)
    assert.is_nil(r)
    assert.is_string(msg)
    assert.equal(fwx.errors.WSAEADDRINUSE, code)
    assert.equal(10048, code)
    assert.equal("WSAEADDRINUSE", (fwx.strerror(code)))
    a:Close()
    b:Close()
  end)

  it("a TCP address in use is refused by Bind or Listen with WSAEADDRINUSE", function()
    local fw = H.new()
    local ls, port = H.listener(fw)
    local b = fw:CreateNetworkSocket("tcp")
    local r, msg, code = b:Bind("127.0.0.1", port)
    if r then r, msg, code = b:Listen(16) end
    assert.is_nil(r)
    assert.is_string(msg)
    assert.equal(10048, code)
    ls:Close()
    b:Close()
  end)

  it("a completion carries the code fwx.errors names (refused connect: 1225)", function()
    local fw = H.new()
    -- A port nobody listens on: bind one, note it, close it.
    local probe = fw:CreateNetworkSocket("tcp")
    assert.is_true(probe:Bind("127.0.0.1", 0))
    local port = probe:GetSockName().port
    probe:Close()
    local s = fw:CreateNetworkSocket("tcp")
    local sink, calls = H.recorder()
    s:Connect("127.0.0.1", port, sink, "ud")
    assert.equal(0, #calls)
    H.run(fw)
    assert.equal(1, #calls)
    local c = calls[1]
    assert.equal(4, c.n)
    assert.is_false(c[1])
    assert.equal(fwx.errors.ERROR_CONNECTION_REFUSED, c[2])
    assert.equal(1225, c[2])
    assert.equal(s, c[3])
    assert.equal("ud", c[4])
    assert.equal("ERROR_CONNECTION_REFUSED", (fwx.strerror(c[2])))
    s:Close()
  end)

  it("a cancelled operation carries errors.ERROR_OPERATION_ABORTED", function()
    local fw = H.new()
    local sink, calls = H.recorder()
    local t = fw:SetTimer(60000, sink, "t")
    assert.is_true(t:Cancel())
    H.run(fw)
    assert.equal(1, #calls)
    assert.is_false(calls[1][1])
    assert.equal(fwx.errors.ERROR_OPERATION_ABORTED, calls[1][2])
    assert.equal("t", calls[1][3])
  end)
end)
