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
  -- The paths the rockspec lists that match pattern, against what `ls` lists: what is
  -- missing from it, and what it lists that is gone.
  local function compare(pattern, ls)
    local f = assert(io.open("rockspec/fwx-scm-1.rockspec"))
    local text = f:read("a")
    f:close()
    local listed = {}
    for path in text:gmatch(pattern) do listed[path] = true end
    local p = assert(io.popen("ls " .. ls))
    local missing = {}
    for path in p:lines() do
      if not listed[path] then missing[#missing + 1] = path end
      listed[path] = nil
    end
    p:close()
    return missing, listed
  end

  it("builds every C source file there is (luarocks make compiles only what it lists)", function()
    local missing, gone = compare('"(csrc/[%w_/%-]+%.c)"', "csrc/core/*.c csrc/lua/*.c")
    assert.same({}, missing)
    assert.same({}, gone)
  end)

  it("installs every Lua module there is", function()
    local missing, gone = compare('"(lua/[%w_/%-]+%.lua)"', "lua/fwx/*.lua")
    assert.same({}, missing)
    assert.same({}, gone)
  end)
end)
