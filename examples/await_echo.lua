-- An echo server in the await style: one coroutine per connection, awaited
-- operations instead of sinks (the same operations underneath), and an idle timeout.
--   lua5.4 examples/await_echo.lua [port]
local fwx = require "fwx"
local fw = fwx.new{}

local IDLE_MS = 30000                      -- a connection silent this long is closed

local listener = fw:CreateNetworkSocket("tcp")
assert(listener:Bind("127.0.0.1", tonumber(arg and arg[1]) or 7000))
assert(listener:Listen(128))

local function serve(conn)
  conn:settimeout(IDLE_MS)                 -- the default of every awaited call on it
  while true do
    local ok, err, buf = conn:recv()       -- nil buffer: the service supplies one
    if not ok or #buf == 0 then            -- error (121: idle too long), or peer closed
      if not ok and err == fwx.errors.ERROR_SEM_TIMEOUT then print("idle, closing") end
      break
    end
    if not conn:send(buf) then break end
  end
  conn:Close()
end

fw:spawn(function()
  while true do
    local ok, err, conn, remote = listener:accept()
    if ok then
      print("connection from " .. tostring(remote))
      fw:spawn(serve, conn)
    elseif err == fwx.errors.ERROR_OPERATION_ABORTED then
      break                                -- the listener was closed
    end
  end
end)

print(("await echo server on %s; try:  nc 127.0.0.1 %d"):format(
  tostring(listener:GetSockName()), listener:GetSockName().port))
fw:run()
