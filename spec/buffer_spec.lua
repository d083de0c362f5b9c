local fwx = require "fwx"
local H = require "spec.helper"

describe("IO buffers (IFWXIOBuffer)", function()
  before_each(H.before)
  after_each(H.after)

  -- A service whose handler errors are collected, so that an assertion failing inside
  -- a sink fails the test instead of being logged and swallowed.
  local function new_fw()
    local errors = {}
    local fw = H.new{ on_error = function(msg) errors[#errors + 1] = msg end }
    return fw, errors
  end

  local function no_errors(errors)
    assert.equal("", table.concat(errors, "\n----\n"))
  end

  -- Run fw for about ms while operations stay pending. The guard timer bounds the run
  -- even if run(ms)'s own deadline misfires (a stale loop clock: see timer_spec).
  local function run_for(fw, ms)
    local guard = fw:SetTimer(ms + 2000, function() end, nil)
    local idle, why = fw:run(ms)
    guard:Cancel()
    return idle, why
  end

  -- The message of the error fn raises.
  local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    return tostring(err)
  end

  local function assert_raises(pattern, fn, ...)
    local msg = error_of(fn, ...)
    assert.truthy(msg:find(pattern, 1, true), ("%q does not contain %q"):format(msg, pattern))
  end

  -- A connected TCP pair on 127.0.0.1: client, server (the accepted socket).
  local function tcp_pair(fw)
    local ls, port = H.listener(fw)
    local server, connected
    ls:Accept(function(ok, err, l, accepted) if ok then server = accepted end end, nil)
    local client = fw:CreateNetworkSocket("tcp")
    client:Connect("127.0.0.1", port, function(ok) connected = ok end, nil)
    H.run(fw)
    ls:Close()
    assert.is_true(connected)
    assert.is_not_nil(server)
    return client, server
  end

  -- Receive exactly `size` bytes on s, one Recv at a time; returns a record.
  local function drain(fw, s, size, expect)
    local rec = { bytes = 0, calls = 0, bad = {} }
    local function on_recv(ok, err, buf, ud)
      rec.calls = rec.calls + 1
      if not ok or err ~= 0 or ud ~= "drain" or #buf == 0 then
        rec.bad[#rec.bad + 1] = ("recv %d: %s %s %s"):format(rec.calls, tostring(ok), tostring(err), tostring(ud))
        return
      end
      if expect and expect:sub(rec.bytes + 1, rec.bytes + #buf) ~= tostring(buf) then
        rec.bad[#rec.bad + 1] = "wrong bytes at " .. rec.bytes
      end
      rec.bytes = rec.bytes + #buf
      if rec.bytes < size then s:Recv(nil, on_recv, "drain") end
    end
    s:Recv(nil, on_recv, "drain")
    H.run(fw)
    return rec
  end

  describe("CreateBuffer", function()
    it("makes an empty buffer of the given capacity", function()
      local fw = H.new()
      local b = fw:CreateBuffer(16)
      local cap, size = b:GetBufferSizes()
      assert.equal(16, cap)
      assert.equal(0, size)
      assert.equal(0, #b)
      assert.equal("", tostring(b))
      local data, n = b:GetBufferAndSize()
      assert.equal("", data)
      assert.equal(0, n)
      assert.is_false(b:IsLent())
    end)

    it("accepts a capacity of 0", function()
      local fw = H.new()
      local b = fw:CreateBuffer(0)
      assert.same({ 0, 0 }, { b:GetBufferSizes() })
      local n, full = b:Append("x")
      assert.equal(0, n)
      assert.equal("FWX_E_BUFFERFULL", full)
    end)

    it("raises on a negative or absurd size, naming the argument", function()
      local fw = H.new()
      assert_raises("bad argument #1 to 'CreateBuffer'", function() fw:CreateBuffer(-1) end)
      assert_raises("bad argument #1 to 'CreateBuffer'", function() fw:CreateBuffer(1 << 40) end)
      assert_raises("bad argument #1 to 'CreateBuffer'", function() fw:CreateBuffer("ten") end)
      assert_raises("bad argument #1 to 'CreateBuffer'", function() fw:CreateBuffer(1.5) end)
      assert_raises("bad argument #1 to 'CreateBuffer'", function() fw:CreateBuffer() end)
    end)
  end)

  describe("Append", function()
    it("returns the count written, and FWX_E_BUFFERFULL when short", function()
      local fw = H.new()
      local b = fw:CreateBuffer(8)
      assert.same({ 5, n = 1 }, table.pack(b:Append("hello")))
      assert.same({ 3, "FWX_E_BUFFERFULL", n = 2 }, table.pack(b:Append("world")))
      assert.equal("hellowor", tostring(b))
      assert.same({ 8, 8 }, { b:GetBufferSizes() })
      assert.same({ 0, "FWX_E_BUFFERFULL", n = 2 }, table.pack(b:Append("!")))
      assert.equal("hellowor", tostring(b))
    end)

    it("appends an empty string as 0 bytes, not as a full buffer", function()
      local fw = H.new()
      local b = fw:CreateBuffer(2)
      assert.same({ 0, n = 1 }, table.pack(b:Append("")))
      assert.same({ 2, n = 1 }, table.pack(b:Append("ab")))
      assert.same({ 0, n = 1 }, table.pack(b:Append("")))
    end)

    it("keeps binary bytes, NULs included", function()
      local fw = H.new()
      local s = "a\0b\255\0"
      local b = fw:CreateBuffer(#s)
      assert.equal(#s, b:Append(s))
      assert.equal(s, tostring(b))
      assert.equal(5, #b)
      assert.equal(0, b:byte(2))
      assert.equal(255, b:byte(4))
    end)

    it("raises on a value that is not a string", function()
      local fw = H.new()
      local b = fw:CreateBuffer(8)
      assert_raises("bad argument #1 to 'Append'", function() b:Append({}) end)
      assert_raises("bad argument #1 to 'Append'", function() b:Append() end)
      assert.equal(0, #b)
    end)
  end)

  describe("SetDataSize", function()
    it("sets the valid size within the capacity", function()
      local fw = H.new()
      local b = fw:CreateBuffer(10)
      b:Append("0123456789")
      assert.is_true(b:SetDataSize(4))
      assert.equal("0123", tostring(b))
      assert.same({ 10, 4 }, { b:GetBufferSizes() })
      assert.is_true(b:SetDataSize(0))
      assert.equal(0, #b)
      assert.is_true(b:SetDataSize(10))
      assert.equal(10, #b)
      -- appending goes on from the valid size
      b:SetDataSize(2)
      assert.equal(3, b:Append("abc"))
      assert.equal("01abc", tostring(b))
    end)

    it("raises on a negative size or one beyond the capacity, naming the argument", function()
      local fw = H.new()
      local b = fw:CreateBuffer(4)
      b:Append("abcd")
      assert_raises("bad argument #1 to 'SetDataSize'", function() b:SetDataSize(-1) end)
      assert_raises("bad argument #1 to 'SetDataSize'", function() b:SetDataSize(5) end)
      assert_raises("bad argument #1 to 'SetDataSize'", function() b:SetDataSize("x") end)
      assert.equal("abcd", tostring(b))
    end)
  end)

  describe("ReadAt", function()
    it("copies bytes from a 0-based offset", function()
      local fw = H.new()
      local b = fw:CreateBuffer(16)
      b:Append("hello world")
      assert.equal("hello", b:ReadAt(0, 5))
      assert.equal("world", b:ReadAt(6, 5))
      assert.equal("o w", b:ReadAt(4, 3))
      assert.equal("world", b:ReadAt(6))           -- to the end of the data
      assert.equal("world", b:ReadAt(6, 100))      -- never past the valid data
      assert.equal("", b:ReadAt(11, 1))            -- at the end: nothing
      assert.equal("", b:ReadAt(3, 0))
    end)

    it("raises on an offset beyond the data or a negative one, naming the argument", function()
      local fw = H.new()
      local b = fw:CreateBuffer(16)
      b:Append("hello")
      assert_raises("bad argument #1 to 'ReadAt'", function() b:ReadAt(6, 1) end)
      assert_raises("offset beyond the data", function() b:ReadAt(6, 1) end)
      assert_raises("bad argument #1 to 'ReadAt'", function() b:ReadAt(-1, 1) end)
      assert_raises("bad argument #2 to 'ReadAt'", function() b:ReadAt(0, -1) end)
    end)
  end)

  describe("SendToBuffer", function()
    it("appends a 0-based range to another buffer and returns the count", function()
      local fw = H.new()
      local src = fw:CreateBuffer(16)
      src:Append("hello world")
      local dst = fw:CreateBuffer(16)
      dst:Append(">")
      assert.same({ 5, n = 1 }, table.pack(src:SendToBuffer(dst, 6, 5)))
      assert.equal(">world", tostring(dst))
      assert.same({ 5, n = 1 }, table.pack(src:SendToBuffer(dst, 0, 5)))
      assert.equal(">worldhello", tostring(dst))
      assert.equal("hello world", tostring(src)) -- the source is unchanged
    end)

    it("copies what fits and says FWX_E_BUFFERFULL", function()
      local fw = H.new()
      local src = fw:CreateConstBuffer("abcdefgh")
      local dst = fw:CreateBuffer(3)
      assert.same({ 3, "FWX_E_BUFFERFULL", n = 2 }, table.pack(src:SendToBuffer(dst, 2, 5)))
      assert.equal("cde", tostring(dst))
      assert.same({ 0, "FWX_E_BUFFERFULL", n = 2 }, table.pack(src:SendToBuffer(dst, 0, 1)))
    end)

    it("raises on ranges beyond the data and on a bad destination, naming the argument", function()
      local fw = H.new()
      local src = fw:CreateConstBuffer("abc")
      local dst = fw:CreateBuffer(8)
      assert_raises("bad argument #2 to 'SendToBuffer'", function() src:SendToBuffer(dst, 4, 0) end)
      assert_raises("bad argument #3 to 'SendToBuffer'", function() src:SendToBuffer(dst, 1, 3) end)
      assert_raises("bad argument #3 to 'SendToBuffer'", function() src:SendToBuffer(dst, 0, -1) end)
      assert_raises("bad argument #1 to 'SendToBuffer'", function() src:SendToBuffer("dst", 0, 1) end)
      local own = fw:CreateBuffer(8)
      own:Append("xy")
      assert.has_error(function() own:SendToBuffer(own, 0, 1) end)
      assert.has_error(function() dst:SendToBuffer(src, 0, 0) end) -- a constant destination
      assert.equal(0, #dst)
      assert.equal("xy", tostring(own))
    end)
  end)

  describe("GetBufferAndSize, #, tostring", function()
    it("give the valid bytes and their count", function()
      local fw = H.new()
      local b = fw:CreateBuffer(32)
      b:Append("abc")
      local data, size = b:GetBufferAndSize()
      assert.equal("abc", data)
      assert.equal(3, size)
      assert.equal(3, #b)
      assert.equal("abc", tostring(b))
      assert.same({ 32, 3 }, { b:GetBufferSizes() })
    end)
  end)

  describe("find, sub, byte", function()
    it("find is 1-based and plain, with an optional init", function()
      local fw = H.new()
      local b = fw:CreateConstBuffer("GET /a.b HTTP/1.1\r\n\r\n")
      local s = tostring(b)
      assert.same({ 1, 3 }, { b:find("GET") })
      assert.same({ 6, 8 }, { b:find("a.b") })
      assert.same({ s:find("\r\n\r\n", 1, true) }, { b:find("\r\n\r\n") })
      assert.is_nil(b:find("a%.b"))            -- plain: no patterns
      assert.is_nil(b:find("x.b"))             -- '.' is not a wildcard
      assert.is_nil(b:find("POST"))
      assert.same({ 18, 19 }, { b:find("\r\n", 10) })
      assert.same({ 20, 21 }, { b:find("\r\n", 19) })
      assert.is_nil(b:find("GET", 2))
      assert.same({ s:find("\r\n", -4, true) }, { b:find("\r\n", -4) })
      assert.same({ s:find("", 3, true) }, { b:find("", 3) })
      assert.same({ s:find("", #s + 1, true) }, { b:find("", #s + 1) })
      assert.is_nil(b:find("", #s + 2))
      assert.is_nil(b:find("GET", 100))
    end)

    it("find looks only at the valid data", function()
      local fw = H.new()
      local b = fw:CreateBuffer(16)
      b:Append("abcdef")
      b:SetDataSize(3)
      assert.is_nil(b:find("def"))
      assert.same({ 2, 3 }, { b:find("bc") })
    end)

    it("sub follows string.sub", function()
      local fw = H.new()
      local s = "hello world"
      local b = fw:CreateConstBuffer(s)
      for _, args in ipairs({ { 1 }, { 7 }, { 1, 5 }, { -5 }, { -5, -2 }, { 0 }, { 3, 2 },
                              { 12 }, { -100, 3 }, { 2, 100 }, { 5, -100 }, { 1, 0 } }) do
        assert.equal(s:sub(table.unpack(args)), b:sub(table.unpack(args)),
          "sub(" .. table.concat(args, ", ") .. ")")
      end
      assert.equal(s, b:sub())
    end)

    it("byte follows string.byte for one position", function()
      local fw = H.new()
      local b = fw:CreateConstBuffer("AZ")
      assert.equal(65, b:byte())
      assert.equal(65, b:byte(1))
      assert.equal(90, b:byte(2))
      assert.equal(90, b:byte(-1))
      assert.equal(0, select("#", b:byte(3)))
      assert.equal(0, select("#", b:byte(0)))
      assert.equal(0, select("#", b:byte(-3)))
    end)

    it("byte(i, j) returns the range, as string.byte does", function()
      local fw = H.new()
      local b = fw:CreateConstBuffer("ABCD")
      assert.same({ 66, 67, 68 }, { b:byte(2, 4) })
      assert.same({ 65, 66, 67, 68 }, { b:byte(1, -1) })
      assert.same({}, { b:byte(3, 2) })
    end)
  end)

  describe("CreateConstBuffer", function()
    it("holds the string's bytes, full", function()
      local fw = H.new()
      local b = fw:CreateConstBuffer("const")
      assert.equal("const", tostring(b))
      assert.same({ 5, 5 }, { b:GetBufferSizes() })
      assert.equal("ons", b:ReadAt(1, 3))
    end)

    it("cannot be modified: every writer raises", function()
      local fw = H.new()
      local b = fw:CreateConstBuffer("const")
      assert_raises("constant", function() b:Append("x") end)
      assert_raises("constant", function() b:SetDataSize(0) end)
      local src = fw:CreateConstBuffer("x")
      assert.has_error(function() src:SendToBuffer(b, 0, 1) end)
      assert.equal("const", tostring(b))
      assert.same({ 5, 5 }, { b:GetBufferSizes() })
    end)

    it("cannot be a receive buffer", function()
      local fw = H.new()
      local s = fw:CreateNetworkSocket("udp")
      assert.is_true(s:Bind("127.0.0.1", 0))
      local b = fw:CreateConstBuffer("const")
      assert_raises("bad argument #1 to 'Recv'", function() s:Recv(b, function() end, nil) end)
      assert.equal(0, fw:pending())
      s:Close()
    end)

    it("raises on a value that is not a string", function()
      local fw = H.new()
      assert_raises("bad argument #1 to 'CreateConstBuffer'", function() fw:CreateConstBuffer({}) end)
      assert_raises("bad argument #1 to 'CreateConstBuffer'", function() fw:CreateConstBuffer() end)
    end)
  end)

  describe("CreateWindowBuffer", function()
    it("is a window onto the other buffer's bytes (0-based offset, length)", function()
      local fw = H.new()
      local base = fw:CreateBuffer(10)
      base:Append("0123456789")
      local w = fw:CreateWindowBuffer(base, 2, 4)
      assert.equal("2345", tostring(w))
      assert.same({ 4, 4 }, { w:GetBufferSizes() })
      assert.equal("34", w:ReadAt(1, 2))
      assert.same({ 2, 3 }, { w:find("34") })
      -- it shares the bytes: writing through the window changes the base
      w:SetDataSize(0)
      assert.equal(2, w:Append("ab"))
      assert.equal("ab", tostring(w))
      assert.equal("01ab456789", tostring(base))
    end)

    it("shows only the base's valid bytes that fall inside it", function()
      local fw = H.new()
      local base = fw:CreateBuffer(10)
      base:Append("0123")
      local w = fw:CreateWindowBuffer(base, 2, 6)
      assert.same({ 6, 2 }, { w:GetBufferSizes() })
      assert.equal("23", tostring(w))
      local empty = fw:CreateWindowBuffer(base, 10, 0)
      assert.same({ 0, 0 }, { empty:GetBufferSizes() })
    end)

    it("keeps its base alive when the base is dropped", function()
      local fw = H.new()
      local base = fw:CreateBuffer(8)
      base:Append("abcdefgh")
      local w = fw:CreateWindowBuffer(base, 4, 4)
      base = nil -- luacheck: ignore
      for _ = 1, 3 do collectgarbage() end
      assert.equal("efgh", tostring(w))
      local ww = fw:CreateWindowBuffer(w, 1, 2)
      w = nil -- luacheck: ignore
      for _ = 1, 3 do collectgarbage() end
      assert.equal("fg", tostring(ww))
    end)

    it("on a constant buffer is constant", function()
      local fw = H.new()
      local w = fw:CreateWindowBuffer(fw:CreateConstBuffer("constant"), 1, 3)
      assert.equal("ons", tostring(w))
      assert_raises("constant", function() w:Append("x") end)
      assert_raises("constant", function() w:SetDataSize(0) end)
    end)

    it("raises on an offset or a window beyond the buffer, naming the argument", function()
      local fw = H.new()
      local base = fw:CreateBuffer(8)
      assert_raises("bad argument #2 to 'CreateWindowBuffer'", function() fw:CreateWindowBuffer(base, 9, 0) end)
      assert_raises("bad argument #2 to 'CreateWindowBuffer'", function() fw:CreateWindowBuffer(base, -1, 1) end)
      assert_raises("bad argument #3 to 'CreateWindowBuffer'", function() fw:CreateWindowBuffer(base, 4, 5) end)
      assert_raises("window beyond the buffer", function() fw:CreateWindowBuffer(base, 4, 5) end)
      assert_raises("bad argument #3 to 'CreateWindowBuffer'", function() fw:CreateWindowBuffer(base, 0, -1) end)
      assert_raises("bad argument #1 to 'CreateWindowBuffer'", function() fw:CreateWindowBuffer("base", 0, 1) end)
    end)
  end)

  describe("snake_case aliases", function()
    it("exist for every buffer method and the factories", function()
      local fw = H.new()
      local b = fw:CreateBuffer(4)
      local pairs_ = {
        get_buffer_and_size = "GetBufferAndSize", set_data_size = "SetDataSize",
        append = "Append", read_at = "ReadAt", send_to_buffer = "SendToBuffer",
        get_buffer_sizes = "GetBufferSizes", is_lent = "IsLent",
      }
      for snake, pascal in pairs(pairs_) do
        assert.is_function(b[pascal], pascal)
        assert.equal(b[pascal], b[snake], snake)
      end
      assert.equal(fw.CreateBuffer, fw.create_buffer)
      assert.equal(fw.CreateConstBuffer, fw.create_const_buffer)
      assert.equal(fw.CreateWindowBuffer, fw.create_window_buffer)
    end)

    it("work as the SDK names do", function()
      local fw = H.new()
      local b = fw:create_buffer(8)
      assert.equal(5, b:append("hello"))
      assert.equal("ell", b:read_at(1, 3))
      assert.is_true(b:set_data_size(4))
      assert.same({ 8, 4 }, { b:get_buffer_sizes() })
      assert.same({ "hell", 4 }, { b:get_buffer_and_size() })
      local dst = fw:create_buffer(2)
      assert.same({ 2, "FWX_E_BUFFERFULL" }, { b:send_to_buffer(dst, 1, 3) })
      assert.equal("el", tostring(dst))
      assert.equal("ll", tostring(fw:create_window_buffer(b, 2, 2)))
      assert.equal("k", tostring(fw:create_const_buffer("k")))
      assert.is_false(b:is_lent())
    end)
  end)

  describe("lent to a pending Send", function()
    local SIZE = 16 * 1024 * 1024
    local PATTERN = "0123456789abcdef"

    it("cannot be modified until the Send's notification, then is writable again", function()
      local fw, errors = new_fw()
      local client, server = tcp_pair(fw)
      local payload = PATTERN:rep(SIZE // #PATTERN)
      local b = fw:CreateBuffer(SIZE)
      assert.equal(SIZE, b:Append(payload))

      local sends, lent_in_sink, append_in_sink = {}, nil, nil
      client:Send(b, function(...)
        sends[#sends + 1] = table.pack(...)
        lent_in_sink = b:IsLent()
        append_in_sink = table.pack(pcall(b.SetDataSize, b, SIZE - 1))
      end, "send-ud")
      assert.equal(0, #sends)         -- never inline
      assert.is_true(b:IsLent())

      -- The receiver does not read: the Send stays pending.
      local idle, why = run_for(fw, 300)
      assert.is_false(idle)
      assert.equal("timeout", why)
      assert.equal(0, #sends)
      assert.is_true(b:IsLent())
      assert_raises("lent", function() b:Append("x") end)
      assert_raises("lent", function() b:SetDataSize(0) end)
      assert_raises("lent", function() fw:CreateConstBuffer("x"):SendToBuffer(b, 0, 1) end)
      assert_raises("bad argument #1 to 'Recv'", function() server:Recv(b, function() end, nil) end)
      -- a window onto it is lent as well
      local w = fw:CreateWindowBuffer(b, 0, 16)
      assert.is_true(w:IsLent())
      assert_raises("lent", function() w:SetDataSize(0) end)
      -- reading is fine, and nothing changed
      assert.equal(SIZE, #b)
      assert.equal(PATTERN, b:ReadAt(SIZE - 16, 16))
      assert.same({ 1, 4 }, { b:find("0123") })

      -- Now the receiver reads everything; the Send completes.
      local rec = drain(fw, server, SIZE, payload)
      no_errors(errors)
      assert.same({}, rec.bad)
      assert.equal(SIZE, rec.bytes)
      assert.equal(1, #sends)
      local c = sends[1]
      assert.is_true(c[1])
      assert.equal(0, c[2])
      assert.is_true(rawequal(b, c[3]))
      assert.equal("send-ud", c[4])
      assert.is_nil(c[5])
      assert.is_false(lent_in_sink)
      assert.is_true(append_in_sink[1], tostring(append_in_sink[2]))

      assert.is_false(b:IsLent())
      assert.is_false(w:IsLent())
      assert.is_true(b:SetDataSize(0))
      assert.equal(3, b:Append("new"))
      assert.equal("new", tostring(b))
      client:Close()
      server:Close()
    end)

    it("lends the base of a window that is sent", function()
      local fw, errors = new_fw()
      local client, server = tcp_pair(fw)
      local base = fw:CreateBuffer(SIZE + 8)
      base:Append("HEADER..")
      base:Append(PATTERN:rep(SIZE // #PATTERN))
      local w = fw:CreateWindowBuffer(base, 8, SIZE)
      assert.equal(SIZE, #w)
      local sink, sends = H.recorder()
      client:Send(w, sink, 7)
      assert.equal(0, #sends)
      local idle = run_for(fw, 200)
      assert.is_false(idle)
      assert.is_true(w:IsLent())
      assert.is_true(base:IsLent())
      assert_raises("lent", function() base:SetDataSize(0) end)
      assert_raises("lent", function() w:Append("x") end)

      local rec = drain(fw, server, SIZE)
      no_errors(errors)
      assert.same({}, rec.bad)
      assert.equal(SIZE, rec.bytes)
      assert.equal(1, #sends)
      assert.is_true(sends[1][1])
      assert.equal(0, sends[1][2])
      assert.is_true(rawequal(w, sends[1][3]))
      assert.equal(7, sends[1][4])
      assert.is_false(base:IsLent())
      assert.is_true(base:SetDataSize(8))
      assert.equal("HEADER..", tostring(base))
      client:Close()
      server:Close()
    end)

    it("stays lent until the notification even when the send finishes at once", function()
      local fw, errors = new_fw()
      local client, server = tcp_pair(fw)
      local b = fw:CreateBuffer(5)
      b:Append("small")
      local sink, sends = H.recorder()
      client:Send(b, sink, "s")
      assert.equal(0, #sends)
      assert.is_true(b:IsLent())
      assert_raises("lent", function() b:SetDataSize(0) end)
      local rec = drain(fw, server, 5, "small")
      no_errors(errors)
      assert.same({}, rec.bad)
      assert.equal(1, #sends)
      assert.is_true(sends[1][1])
      assert.is_true(rawequal(b, sends[1][3]))
      assert.is_false(b:IsLent())
      assert.is_true(b:SetDataSize(0))
      client:Close()
      server:Close()
    end)
  end)
end)
