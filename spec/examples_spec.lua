-- The examples people copy, run as they would run them, with real clients.
local H = require "spec.helper"


-- Start an example server in the background on port 0; return its port and a stopper.
local function start(script)
  local out = os.tmpname()
  local pidfile = os.tmpname()
  os.execute(("timeout 20 env %s %s 0 > %s 2>&1 & echo $! > %s"):format(H.lua_command(), script, out, pidfile))
  local port
  for _ = 1, 100 do
    local f = io.open(out); local text = f:read("*a"); f:close()
    port = text:match("127%.0%.0%.1:(%d+)")
    if port then break end
    os.execute("sleep 0.05")
  end
  local f = io.open(pidfile); local pid = f:read("*l"); f:close()
  return tonumber(port), function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.remove(out); os.remove(pidfile)
  end
end

describe("examples", function()
  it("echo.lua echoes to nc over TCP", function()
    local port, stop = start("examples/echo.lua")
    assert.is_number(port)
    local got = H.sh(("printf 'tcp echo' | timeout 5 nc -N 127.0.0.1 %d"):format(port))
    stop()
    assert.equal("tcp echo", got)
  end)

  it("await_echo.lua echoes to nc over TCP, one coroutine per connection", function()
    local port, stop = start("examples/await_echo.lua")
    assert.is_number(port)
    local got = {}
    for i = 1, 2 do -- two connections in turn: the accepting coroutine goes on
      got[i] = H.sh(("printf 'await echo %d' | timeout 5 nc -N 127.0.0.1 %d"):format(i, port))
    end
    stop()
    assert.same({ "await echo 1", "await echo 2" }, got)
  end)

  it("udp_echo.lua answers each datagram to its sender", function()
    local port, stop = start("examples/udp_echo.lua")
    assert.is_number(port)
    local got = H.sh(("printf 'udp echo' | timeout 5 nc -u -w1 127.0.0.1 %d"):format(port))
    stop()
    assert.equal("udp echo", got)
  end)

  it("copy.lua copies a file through hooked handles, byte for byte", function()
    local from, to = os.tmpname(), os.tmpname()
    os.execute("head -c 1000003 /dev/urandom > " .. from)
    local out = H.sh(("timeout 20 env %s examples/copy.lua %s %s 2>&1"):format(H.lua_command(), from, to))
    local same = os.execute(("cmp -s %s %s"):format(from, to))
    os.remove(from); os.remove(to)
    assert.equal("copied 1000003 bytes\n", out)
    assert.is_true(same)
  end)
end)
