-- A UDP filter: each datagram a client sends reaches the upstream in upper case; the
-- upstream's answers come back as they are. A session per client address, ended
-- after 30 s without a datagram either way.
--   lua5.4 examples/udp_echo.lua 7001 &
--   fwx run examples/filters/udp_uppercase.lua --upstream 127.0.0.1:7001
--   printf 'hello' | nc -u -w1 127.0.0.1 7000
return {
  protocol = "udp",
  listen = "127.0.0.1:7000",
  upstream = "127.0.0.1:7001",
  idle_timeout_ms = 30000,
  on_data = function(conn, direction, buf)
    if direction == "request" then return tostring(buf):upper() end
  end,
}
