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
