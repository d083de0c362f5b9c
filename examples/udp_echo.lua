-- A UDP echo server: each Recv's notification carries the sender's address, and SendTo
-- answers it.   lua5.4 examples/udp_echo.lua [port]    (then: nc -u 127.0.0.1 PORT)
local fwx = require "fwx"
local fw = fwx.new{}

local s = fw:CreateNetworkSocket("udp")
assert(s:Bind("127.0.0.1", tonumber(arg and arg[1]) or 7001))

-- CompleteAsyncIO(ok, err, buffer, userdata, address)
local function on_datagram(ok, err, buf, ud, from)
  if ok then
    s:SendTo(buf, from) -- an address value stands for host and port
  else
    io.stderr:write("receive failed: ", select(2, fwx.strerror(err)), "\n")
  end
  s:Recv(nil, on_datagram)
end

s:Recv(nil, on_datagram)
print(("udp echo on %s; try:  nc -u 127.0.0.1 %d"):format(tostring(s:GetSockName()),
  s:GetSockName().port))
io.stdout:flush()
fw:run()
