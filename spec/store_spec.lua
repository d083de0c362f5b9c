-- The shared store (core.store, fwx.store) and the serializer its values cross Lua
-- states with (core._encode, core._decode). Threads sharing the store are the
-- workers' specs; these test what one state sees.
local fwx = require "fwx"
local core = require "fwx.core"
local H = require "spec.helper"

local store = core.store
local encode, decode = core._encode, core._decode

-- A float's bits, so that NaNs and -0.0 compare exactly.
local function bits(x) return string.pack("<d", x) end

local function round_trip(v)
  return decode(encode(v))
end

-- Deep equality that also follows keys that are tables (busted's assert.same
-- compares table keys by identity) and compares floats by their bits.
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    return math.type(a) == "integer" and a == b or bits(a) == bits(b)
  end
  if type(a) ~= "table" then return a == b end
  local n = 0
  for k, v in pairs(a) do
    n = n + 1
    if type(k) == "table" then
      local found = false
      for k2, v2 in pairs(b) do
        if type(k2) == "table" and same(k, k2) and same(v, v2) then found = true end
      end
      if not found then return false end
    elseif not same(v, rawget(b, k)) then
      return false
    end
  end
  for _ in pairs(b) do n = n - 1 end
  return n == 0
end

local function nested(depth)
  local root = {}
  local t = root
  for _ = 2, depth do
    t.next = {}
    t = t.next
  end
  return root
end

describe("the serializer", function()
  before_each(H.before)
  after_each(H.after)

  it("round-trips nil and booleans", function()
    assert.is_nil(round_trip(nil))
    assert.is_true(round_trip(true))
    assert.is_false(round_trip(false))
    assert.equal(1, select("#", encode(nil)))
    assert.equal(1, select("#", decode(encode(nil))))
  end)

  it("keeps integers integers and floats floats", function()
    for _, i in ipairs { 0, 1, -1, 63, 64, -64, -65, 127, 128, 300, (1 << 53) + 1,
                         math.maxinteger, math.mininteger, math.maxinteger - 1,
                         math.mininteger + 1 } do
      local v = round_trip(i)
      assert.equal("integer", math.type(v))
      assert.equal(i, v)
    end
    assert.equal("integer", math.type(round_trip(3)))
    assert.equal("float", math.type(round_trip(3.0)))
    assert.equal(3.0, round_trip(3.0))
  end)

  it("keeps every float's bits, NaN, infinities and -0.0 included", function()
    local floats = { 0.5, -2.25, 1e308, -1e-308, 5e-324, math.pi, math.huge, -math.huge,
                     0.0, -0.0, 0 / 0, -(0 / 0), (string.unpack("<d", "\1\0\0\0\0\0\248\127")) }
    for _, x in ipairs(floats) do
      local v = round_trip(x)
      assert.equal("float", math.type(v))
      assert.equal(bits(x), bits(v))
    end
    assert.equal(-math.huge, 1 / round_trip(-0.0))
    local nan = round_trip(0 / 0)
    assert.is_true(nan ~= nan)
  end)

  it("keeps strings byte for byte, NULs and all 256 bytes included", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    for _, s in ipairs { "", "\0", "a\0b\0", table.concat(all), ("xyz\0"):rep(50000) } do
      assert.equal(s, round_trip(s))
    end
  end)

  it("round-trips nested tables with mixed keys, holes and table keys", function()
    local v = {
      1, 2, "three", 4.0, nil, 6,
      [10] = "ten", [0] = "zero", [-1] = "minus one", [2.5] = "float key",
      [math.huge] = "inf key", [true] = "yes", [false] = { deep = { deeper = { 1 } } },
      ["1"] = "string one", ["with\0nul"] = "\0",
      [{ "a table", "as key" }] = { x = 1 },
      empty = {},
      list = { { 1 }, { 2, { 3 } } },
    }
    local got = round_trip(v)
    assert.is_true(same(v, got))
    assert.equal("float", math.type(got[4]))
    assert.equal("integer", math.type(got[6]))
    assert.is_nil(got[5])
    assert.equal("string one", got["1"])
    assert.equal("zero", got[0])
  end)

  it("round-trips the empty table and large tables", function()
    assert.is_true(same({}, round_trip({})))
    local t = {}
    for i = 1, 5000 do t[i] = i * 2 end
    for i = 1, 5000 do t["k" .. i] = { i } end
    assert.is_true(same(t, round_trip(t)))
  end)

  it("reads tables raw and leaves their metatables behind", function()
    local mt = {
      __index = function() error("__index consulted") end,
      __newindex = function() error("__newindex consulted") end,
      __pairs = function() error("__pairs consulted") end,
      __len = function() error("__len consulted") end,
    }
    local v = setmetatable({ 1, 2, a = "b" }, mt)
    local got = round_trip(v)
    assert.is_nil(getmetatable(got))
    assert.is_true(same({ 1, 2, a = "b" }, got))
  end)

  it("copies a table reached twice without a cycle, twice", function()
    local shared = { 1, 2 }
    local got = round_trip({ shared, shared, x = shared })
    assert.is_true(same(shared, got[1]))
    assert.is_true(same(shared, got.x))
    assert.are_not.equal(got[1], got[2])
  end)

  it("refuses functions, userdata and coroutines, naming them and where they are", function()
    H.raises("cannot encode a function (at value)", encode, print)
    H.raises("cannot encode a function (at value.a.b[2])", encode, { a = { b = { 1, print } } })
    H.raises("cannot encode a userdata (at value.out)", encode, { out = io.stdout })
    H.raises("cannot encode a thread (at value[\"not a name\"])", encode,
      { ["not a name"] = coroutine.create(print) })
    H.raises("cannot encode a function (a key in value.t)", encode, { t = { [print] = 1 } })
  end)

  it("refuses cycles, naming where the table comes back", function()
    local t = { child = {} }
    t.child.parent = t
    H.raises("cannot encode a table that contains itself (at value.child.parent)", encode, t)
    local self = {}
    self[1] = self
    H.raises("cannot encode a table that contains itself (at value[1])", encode, self)
    local key = {}
    key[key] = true
    H.raises("cannot encode a table that contains itself (a key in value)", encode, key)
  end)

  it("encodes tables nested 100 deep and refuses 101", function()
    local ok = round_trip(nested(100))
    local depth = 0
    while ok do depth, ok = depth + 1, ok.next end
    assert.equal(100, depth)
    H.raises("cannot encode tables nested more than 100 deep", encode, nested(101))
  end)

  it("refuses every strict prefix of a valid encoding", function()
    local values = { true, 300, -5, 1.5, "hello\0world", { 1, { 2, x = "y" }, [true] = 3.5 },
                     { [{ "key" }] = { "value" } }, nested(5) }
    for _, v in ipairs(values) do
      local s = encode(v)
      for n = 0, #s - 1 do
        local ok, err = pcall(decode, s:sub(1, n))
        assert.is_false(ok, ("prefix %d of %q decoded"):format(n, s))
        assert.matches("malformed encoded value", err, 1, true)
      end
      assert.is_true(same(v, decode(s)))
    end
  end)

  it("refuses trailing bytes, unknown tags and impossible lengths", function()
    local bad = {
      encode(1) .. "\0",                            -- a value and more
      "\7", "\255",                                 -- no such tag
      "\3" .. ("\255"):rep(10) .. "\1",             -- a varint past 64 bits
      "\3" .. ("\255"):rep(9) .. "\2",              -- the tenth byte holds more than bit 63
      "\5\255\255\255\255\255\255\255\255\127",     -- a string longer than the input
      "\6\255\255\255\255\255\255\255\255\127",     -- a table with more items than bytes
      "\6\0\4" .. ("\0"):rep(6) .. "\248\127\1\0",  -- a NaN key
      ("\6\1"):rep(101) .. "\0" .. ("\0"):rep(101), -- 101 tables deep
    }
    for _, s in ipairs(bad) do
      local ok, err = pcall(decode, s)
      assert.is_false(ok, ("%q decoded"):format(s))
      assert.matches("malformed encoded value", err, 1, true)
    end
    -- 100 deep is what the encoder makes, so the decoder takes it
    assert.is_table(decode(("\6\1"):rep(100) .. "\0" .. ("\0"):rep(100)))
  end)

  it("decodes random and mutated bytes to a value or a clean error", function()
    math.randomseed(12345)
    local sample = encode({ 1, "two", { three = 3.0 }, [false] = -4 })
    for _ = 1, 3000 do
      local s
      if math.random() < 0.5 then
        local t = {}
        for i = 1, math.random(0, 24) do t[i] = string.char(math.random(0, 255)) end
        s = table.concat(t)
      else
        local i = math.random(1, #sample)
        s = sample:sub(1, i - 1) .. string.char(math.random(0, 255)) .. sample:sub(i + 1)
      end
      local ok, err = pcall(decode, s)
      if not ok then assert.matches("malformed encoded value", err, 1, true) end
    end
  end)
end)

describe("core.store", function()
  local capacity

  before_each(function()
    H.before()
    capacity = store.capacity()
    store._clear()
  end)

  after_each(function()
    store._clear()
    store.capacity(capacity)
    H.after()
  end)

  it("is fwx.store, with a capacity of 64 MiB unless set", function()
    assert.equal(store, fwx.store)
    assert.equal(64 * 1024 * 1024, capacity)
  end)

  it("gets what was set, as a copy, and nil for what was not", function()
    assert.is_nil(store.get("missing"))
    local v = { list = { 1, 2, 3 }, name = "x" }
    assert.is_true(store.set("t", v))
    local got = store.get("t")
    assert.is_true(same(v, got))
    got.list[1] = "changed"
    assert.equal(1, store.get("t").list[1])
    assert.are_not.equal(store.get("t"), store.get("t"))
    for _, x in ipairs { true, false, "s\0s", 2.5, 0 / 0, -0.0, 7, math.mininteger } do
      assert.is_true(store.set("x", x))
      assert.is_true(same(x, store.get("x")))
    end
  end)

  it("keeps integers and floats apart", function()
    store.set("i", 3)
    store.set("f", 3.0)
    assert.equal("integer", math.type(store.get("i")))
    assert.equal("float", math.type(store.get("f")))
  end)

  it("gets values larger than its first try's room", function()
    local big = ("0123456789"):rep(10000)
    local t = {}
    for i = 1, 2000 do t[i] = "item" .. i end
    store.set("big", big)
    store.set("table", t)
    assert.equal(big, store.get("big"))
    assert.is_true(same(t, store.get("table")))
  end)

  it("deletes on set(key, nil) and on delete(key), saying whether it was there", function()
    store.set("a", 1)
    store.set("b", "two")
    assert.equal(2, store.count())
    assert.is_true(store.set("a", nil))
    assert.is_nil(store.get("a"))
    assert.equal(1, store.count())
    assert.is_true(store.set("a", nil))
    assert.is_true(store.delete("b"))
    assert.is_false(store.delete("b"))
    assert.equal(0, store.count())
    assert.equal(0, store.bytes())
  end)

  it("adds only what is absent", function()
    assert.is_true(store.add("k", { 1 }))
    local ok, why = store.add("k", "other")
    assert.is_false(ok)
    assert.equal("exists", why)
    assert.is_true(same({ 1 }, store.get("k")))
    assert.is_false((store.add("k", 5)))
    store.delete("k")
    assert.is_true(store.add("k", 5))
    assert.equal(5, store.get("k"))
  end)

  it("increments integers, starting absent keys at init", function()
    assert.equal(1, store.incr("n"))
    assert.equal(2, store.incr("n"))
    assert.equal(12, store.incr("n", 10))
    assert.equal(2, store.incr("n", -10))
    assert.equal(105, store.incr("m", 5, 100))
    assert.equal(106, store.incr("m", 1, 1000))
    store.set("s", 40)
    assert.equal(42, store.incr("s", 2))
    assert.equal("integer", math.type(store.get("s")))
  end)

  it("refuses to increment what is not an integer, naming the argument", function()
    store.set("str", "10")
    store.set("float", 10.0)
    H.raises("bad argument #1", store.incr, "str")
    H.raises("the entry is not an integer", store.incr, "float")
    assert.equal(10.0, store.get("float"))
    H.raises("bad argument #2", store.incr, "n", 1.5)
    assert.is_nil(store.get("n"))
  end)

  it("refuses an increment that overflows, keeping the value", function()
    store.set("big", math.maxinteger)
    H.raises("overflows", store.incr, "big")
    assert.equal(math.maxinteger, store.get("big"))
    H.raises("overflows", store.incr, "new", -1, math.mininteger)
    assert.is_nil(store.get("new"))
    assert.equal(-1, store.incr("big", math.mininteger))
  end)

  it("takes only string keys, binary ones included, naming argument 1", function()
    for _, f in ipairs { store.get, store.set, store.add, store.incr, store.delete } do
      H.raises("bad argument #1", f, 1, 2)
      H.raises("string expected", f, nil, 2)
      H.raises("string expected", f, {}, 2)
    end
    store.set("a\0b", 1)
    store.set("a\0c", 2)
    store.set("", 3)
    assert.equal(1, store.get("a\0b"))
    assert.equal(2, store.get("a\0c"))
    assert.equal(3, store.get(""))
    assert.is_nil(store.get("a"))
  end)

  it("takes keys up to 64 KiB", function()
    local key = ("k"):rep(65536)
    assert.is_true(store.set(key, 1))
    assert.equal(1, store.get(key))
    H.raises("key longer than 65536 bytes", store.set, key .. "k", 1)
    H.raises("key longer than 65536 bytes", store.get, key .. "k")
  end)

  it("refuses a missing value and values it cannot encode, storing nothing", function()
    H.raises("bad argument #2", store.set, "k")
    H.raises("bad argument #2", store.add, "k", nil)
    H.raises("cannot encode a function (at value.f)", store.set, "k", { f = print })
    assert.equal(0, store.count())
    store.set("k", "kept")
    H.raises("cannot encode a thread", store.set, "k", coroutine.create(print))
    assert.equal("kept", store.get("k"))
  end)

  it("holds many keys", function()
    for i = 1, 20000 do store.set("key" .. i, i) end
    assert.equal(20000, store.count())
    for i = 1, 20000 do assert.equal(i, store.get("key" .. i)) end
    for i = 1, 20000, 2 do store.delete("key" .. i) end
    assert.equal(10000, store.count())
    assert.is_nil(store.get("key1"))
    assert.equal(20000, store.get("key20000"))
  end)

  it("sets its capacity, refusing negative ones", function()
    assert.equal(4096, store.capacity(4096))
    assert.equal(4096, store.capacity())
    H.raises("bad argument #1", store.capacity, -1)
    H.raises("number has no integer representation", store.capacity, 1.5)
  end)

  it("refuses a write past its capacity with nil, message, 8 and loses nothing", function()
    store.capacity(20000)
    local stored = {}
    local i = 0
    while true do
      i = i + 1
      local ok, msg, code = store.set("key" .. i, { i, ("v"):rep(100) })
      if not ok then
        assert.is_nil(ok)
        assert.matches("not enough memory", msg, 1, true)
        assert.equal(8, code)
        assert.equal(fwx.errors.ERROR_NOT_ENOUGH_MEMORY, code)
        break
      end
      stored[i] = true
      assert.is_true(i < 1000, "the capacity never refused a write")
    end
    assert.is_true(i > 10)
    assert.is_true(store.bytes() <= 20000)
    assert.equal(i - 1, store.count())
    assert.is_nil(store.get("key" .. i))
    for k in pairs(stored) do assert.is_true(same({ k, ("v"):rep(100) }, store.get("key" .. k))) end
    -- add and incr of a new key are refused alike
    local ok, msg, code = store.add("another", { ("v"):rep(100) })
    assert.same({ nil, 8 }, { ok, code })
    assert.is_string(msg)
    local filler = 0
    while store.set("small" .. filler, 1) do filler = filler + 1 end
    ok, msg, code = store.incr("counter")
    assert.same({ nil, 8 }, { ok, code })
    assert.is_string(msg)
    -- deletions make room again
    assert.is_true(store.delete("key1"))
    assert.is_true(store.delete("key2"))
    assert.is_true(store.set("key" .. i, { i, ("v"):rep(100) }))
  end)

  it("refuses a replacement that grows past the capacity, keeping the old value", function()
    store.capacity(store.bytes() + 1000)
    assert.is_true(store.set("k", "small"))
    local ok, _, code = store.set("k", ("x"):rep(2000))
    assert.is_nil(ok)
    assert.equal(8, code)
    assert.equal("small", store.get("k"))
  end)

  it("refuses a value larger than the whole store", function()
    store.capacity(1000)
    local ok, _, code = store.set("k", ("x"):rep(100000))
    assert.is_nil(ok)
    assert.equal(8, code)
    assert.equal(0, store.count())
    assert.equal(0, store.bytes())
  end)

  it("evicts nothing when the capacity drops below what it holds", function()
    for i = 1, 10 do store.set("k" .. i, ("v"):rep(100)) end
    local used = store.bytes()
    store.capacity(used // 2)
    assert.equal(10, store.count())
    assert.equal(used, store.bytes())
    assert.is_nil((store.set("k11", 1)))
    assert.is_nil((store.set("k1", ("v"):rep(200))))
    -- a replacement that does not grow the store still goes through
    assert.is_true(store.set("k1", ("v"):rep(50)))
    assert.equal(("v"):rep(50), store.get("k1"))
  end)

  it("counts bytes back to the same figure after set, replace and delete", function()
    store.set("other", "x")
    local before = store.bytes()
    assert.is_true(before > 0)
    store.set("k", "short")
    local one = store.bytes()
    assert.is_true(one > before)
    store.set("k", ("long"):rep(1000))
    assert.is_true(store.bytes() >= one + 3990)
    store.set("k", "short")
    assert.equal(one, store.bytes())
    store.set("k", 12345)
    store.incr("k", 1)
    store.set("k", "short")
    assert.equal(one, store.bytes())
    store.delete("k")
    assert.equal(before, store.bytes())
    store.incr("c")
    store.set("c", nil)
    assert.equal(before, store.bytes())
  end)

  it("clears everything with _clear", function()
    for i = 1, 100 do store.set("k" .. i, i) end
    store._clear()
    assert.equal(0, store.count())
    assert.equal(0, store.bytes())
    assert.is_nil(store.get("k1"))
    assert.is_true(store.set("k1", 1))
  end)
end)
