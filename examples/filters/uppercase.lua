-- A data filter: the client's bytes reach the upstream in upper case; the upstream's
-- come back as they are. Every chunk passes through on_data.
--   fwx run examples/filters/uppercase.lua --upstream 127.0.0.1:7001
return {
  listen = "127.0.0.1:7000",
  upstream = "127.0.0.1:7001",
  on_accept = function(conn)
    io.stderr:write("connection ", conn.id, " from ", tostring(conn.client), "\n")
  end,
  on_data = function(conn, direction, buf)
    if direction == "request" then return tostring(buf):upper() end
  end,
}
