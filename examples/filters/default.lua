-- The default filter (`make run`): forwards 127.0.0.1:7000 to 127.0.0.1:7001. It has
-- no on_data, so the C core pumps each connection (splice, no Lua per chunk); it
-- says who connects, and the host logs a line per connection when it ends.
--   fwx run examples/filters/default.lua [--listen HOST:PORT] [--upstream HOST:PORT]
return {
  listen = "127.0.0.1:7000",
  upstream = "127.0.0.1:7001",
  on_accept = function(conn)
    print(("connection %d from %s"):format(conn.id, tostring(conn.client)))
  end,
}
