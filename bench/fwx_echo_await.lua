-- fwx_echo_await.lua: the echo server written with the fwx API in await style (one
-- coroutine per connection, DESIGN.md section 3), the "fwx_await" column.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/fwx_echo_await.lua PORT [TIMEOUT_MS]    (0 = any free port)
--
-- With TIMEOUT_MS (the "fwx_await_to" column), each connection's socket has
-- s:settimeout(TIMEOUT_MS), as a server that drops idle clients would set it: every
-- receive and send then has a deadline.
-- Listens on 127.0.0.1 and prints "PORT n" once listening; the runner ends it with
-- SIGTERM. The send is awaited as an await-style user would write it, which costs
-- one more notification per message than fwx_echo.lua's fire-and-forget Send.
local fwx = require "fwx"

local port = tonumber(arg[1]) or error("usage: fwx_echo_await.lua PORT [TIMEOUT_MS]")
local timeout = tonumber(arg[2])
local fw = fwx.new{}
local ls = fw:CreateNetworkSocket("tcp")
assert(ls:Bind("127.0.0.1", port))
assert(ls:Listen(511))

local function serve(s)
  if timeout then s:settimeout(timeout) end
  while true do
    local ok, _, buf = s:recv()
    if not ok or #buf == 0 then break end
    if not s:send(buf) then break end
  end
  s:Close()
end

fw:spawn(function()
  while true do
    local ok, err, accepted = ls:accept()
    if ok then
      fw:spawn(function() serve(accepted) end)
    elseif err == 995 then
      break                     -- the listening socket was closed
    end
  end
end)

io.stdout:write("PORT ", ls:GetSockName().port, "\n")
io.stdout:flush()
fw:run()
