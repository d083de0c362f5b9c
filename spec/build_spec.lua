-- The specs test the build they were started for: `make asan` and `make tsan` must
-- load their instrumented module, not a plain one that happens to come first on the
-- path (or one installed system-wide).
describe("the module under test", function()
  it("is the one from the build directory tools/test.sh was given", function()
    local want = os.getenv("FWX_BUILD_UNDER_TEST")
    if want == nil then return end -- busted run by hand: any build will do
    require "fwx"
    local found = package.searchpath("fwx.core", package.cpath)
    assert.equal(want .. "/fwx/core.so", found)
  end)
end)

describe("the rockspec", function()
  it("builds every C source file there is (luarocks make compiles only what it lists)", function()
    local f = assert(io.open("rockspec/fwx-scm-1.rockspec"))
    local text = f:read("a")
    f:close()
    local listed = {}
    for path in text:gmatch('"(csrc/[%w_/%-]+%.c)"') do listed[path] = true end
    local p = assert(io.popen("ls csrc/core/*.c csrc/lua/*.c"))
    local missing = {}
    for path in p:lines() do
      if not listed[path] then missing[#missing + 1] = path end
      listed[path] = nil
    end
    p:close()
    assert.same({}, missing)
    assert.same({}, listed) -- and nothing listed that is gone
  end)

  it("installs every Lua module there is", function()
    local f = assert(io.open("rockspec/fwx-scm-1.rockspec"))
    local text = f:read("a")
    f:close()
    local listed = {}
    for path in text:gmatch('"(lua/[%w_/%-]+%.lua)"') do listed[path] = true end
    local p = assert(io.popen("ls lua/fwx/*.lua"))
    local missing = {}
    for path in p:lines() do
      if not listed[path] then missing[#missing + 1] = path end
      listed[path] = nil
    end
    p:close()
    assert.same({}, missing)
    assert.same({}, listed)
  end)
end)
