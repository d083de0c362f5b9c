-- fwx_echo.lua: the echo server written with the fwx API in callback style (the
-- "fwx" column of the benchmarks), exactly as DESIGN.md section 3 has it.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_echo.lua PORT          (0 = any free port)
--
-- Listens on 127.0.0.1 and prints "PORT n" once listening. It watches no signal
-- (fw:SetSignal), so the runner's SIGTERM ends it by the default action.
local fwx = require "fwx"

local port = tonumber(arg[1]) or error("usage: fwx_echo.lua PORT")
local fw = fwx.new{}
local ls = fw:CreateNetworkSocket("tcp")
assert(ls:Bind("127.0.0.1", port))
assert(ls:Listen(511))

-- sink(ok, err, buffer, userdata, address): echo what came, then ask for more. The
-- send has no sink: nobody needs to hear that it completed.
local function on_recv(ok, err, buf, s)
  if not ok or #buf == 0 then s:Close() return end
  s:Send(buf)
  s:Recv(nil, on_recv, s)       -- nil buffer: the service supplies one
end

-- sink(ok, err, listening, accepted, remote, local, userdata): re-arm the accept
-- first so the next client is not kept waiting.
local function on_accept(ok, err, listening, accepted)
  listening:Accept(on_accept)
  if ok then accepted:Recv(nil, on_recv, accepted) end
end

ls:Accept(on_accept)
io.stdout:write("PORT ", ls:GetSockName().port, "\n")
io.stdout:flush()
fw:run()
