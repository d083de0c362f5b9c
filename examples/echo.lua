-- An echo server in the callback style: Accept, Recv and Send with Lua sinks.
--   lua5.4 examples/echo.lua [port]      (make run)
local fwx = require "fwx"
local fw = fwx.new{}

local listener = fw:CreateNetworkSocket("tcp")
assert(listener:Bind("127.0.0.1", tonumber(arg and arg[1]) or 7000))
assert(listener:Listen(128))

local function on_recv(ok, err, buf, conn)
  if not ok or #buf == 0 then            -- error, or the peer closed (0 bytes)
    conn:Close()
    return
  end
  conn:Send(buf)                         -- no sink: nobody needs telling
  conn:Recv(nil, on_recv, conn)          -- nil: the service supplies the buffer
end

local function on_accept(ok, err, listening, conn, remote)
  listening:Accept(on_accept)            -- one connection per Accept: re-arm
  if not ok then return end
  print("connection from " .. tostring(remote))
  conn:Recv(nil, on_recv, conn)
end

listener:Accept(on_accept)
print(("echo server on %s; try:  nc 127.0.0.1 %d"):format(
  tostring(listener:GetSockName()), listener:GetSockName().port))
fw:run()
