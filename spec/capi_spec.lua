-- The C core without Lua: each program in spec/c/ is compiled against csrc/core alone
-- (no lua.h anywhere in it) and run, under ASan+UBSan when the compiler has them.
local H = require "spec.helper"

-- Compile spec/c/NAME.c with the core's sources and run it; it prints "ok".
local function build_and_run(name)
  local exe = os.tmpname()
  local sources = H.sh("ls csrc/core/*.c | tr '\\n' ' '")
  local flags = "-std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -g -Icsrc/core"
  local san = os.getenv("FWX_SANITIZED") == "1" and "" or " -fsanitize=address,undefined"
  local cmd = ("cc %s%s -o %s spec/c/%s.c %s $(pkg-config --cflags --libs libuv) 2>&1")
    :format(flags, san, exe, name, sources)
  local out = H.sh(cmd)
  if out:match("sanitize") and out:match("cannot find") then
    out = H.sh(cmd:gsub(" %-fsanitize=address,undefined", ""))
  end
  assert.equal("", out)
  -- LD_PRELOAD is cleared: `make asan` preloads the runtime for lua5.4, not for this
  local run = H.sh(("LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1 timeout 20 %s 2>&1; echo \"exit=$?\""):format(exe))
  os.remove(exe)
  assert.equal("ok\nexit=0\n", run)
end

describe("the C core's own API", function()
  it("has no Lua header in it", function()
    assert.is_nil(H.sh("grep -lE '#[[:space:]]*include[[:space:]]*[<\"](lua|lauxlib|lualib)' csrc/core/*.c csrc/core/*.h"):match("%S"),
      "csrc/core includes lua.h")
  end)

  it("builds without Lua and runs an echo, tasks, a cancelled timer and shutdown", function()
    build_and_run("core_test")
  end)

  it("reads at most a budget per poll and defers the rest to later polls, losing nothing", function()
    build_and_run("read_budget_test")
  end)
end)
