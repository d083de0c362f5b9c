-- The binding's cache of small freed blocks (csrc/lua/alloc.c), from the side of the
-- allocator it sits in front of: a C program embeds Lua with an allocator that checks
-- every block comes back with the size it was given, loads fwx, churns buffers and
-- closes the state (spec/c/alloc_cache_test.c).
local H = require "spec.helper"

describe("the allocation cache", function()
  it("gives every block back to the state's own allocator with its own size, and spares it most allocations", function()
    local build = os.getenv("FWX_BUILD_UNDER_TEST") or "build"
    -- Sanitizer builds and FWX_ALLOC_CACHE=0 (make valgrind) run without the cache.
    local sanitizer = build:match("asan") or build:match("tsan")
    local want = not sanitizer and os.getenv("FWX_ALLOC_CACHE") ~= "0"
    local exe = os.tmpname()
    local tsan = build:match("tsan") and " -fsanitize=thread" or ""
    local out = H.sh(("cc -std=c99 -Wall -Wextra -Werror -g%s -o %s spec/c/alloc_cache_test.c $(pkg-config --cflags --libs lua5.4) 2>&1")
      :format(tsan, exe))
    assert.equal("", out)
    local run = H.sh(("LUA_PATH=%q LUA_CPATH=%q timeout 60 %s %d 2>&1; echo \"exit=$?\"")
      :format(package.path, package.cpath, exe, want and 1 or 0))
    os.remove(exe)
    assert.equal("ok\nexit=0\n", run)
  end)
end)
