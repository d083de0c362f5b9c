-- The C core without Lua: spec/c/core_test.c is compiled against csrc/core alone (no
-- lua.h anywhere in it) and run, under ASan+UBSan when the compiler has them.
local H = require "spec.helper"

describe("the C core's own API", function()
  it("builds without Lua and runs an echo, tasks, a cancelled timer and shutdown", function()
    local exe = os.tmpname()
    local sources = H.sh("ls csrc/core/*.c | tr '\\n' ' '")
    assert.is_nil(H.sh("grep -lE '#[[:space:]]*include[[:space:]]*[<\"](lua|lauxlib|lualib)' csrc/core/*.c csrc/core/*.h"):match("%S"),
      "csrc/core includes lua.h")
    local flags = "-std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -g -Icsrc/core"
    local san = os.getenv("FWX_SANITIZED") == "1" and "" or " -fsanitize=address,undefined"
    local cmd = ("cc %s%s -o %s spec/c/core_test.c %s $(pkg-config --cflags --libs libuv) 2>&1")
      :format(flags, san, exe, sources)
    local out = H.sh(cmd)
    if out:match("sanitize") and out:match("cannot find") then
      out = H.sh(cmd:gsub(" %-fsanitize=address,undefined", ""))
    end
    assert.equal("", out)
    -- LD_PRELOAD is cleared: `make asan` preloads the runtime for lua5.4, not for this
    local run = H.sh(("LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1 timeout 20 %s 2>&1; echo \"exit=$?\""):format(exe))
    os.remove(exe)
    assert.equal("ok\nexit=0\n", run)
  end)
end)
