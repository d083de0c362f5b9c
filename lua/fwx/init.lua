--- fwx: the Firewall-service completion model for Lua 5.4 on libuv.
-- The C core (fwx.core) does the I/O; this module is its public face: the service
-- constructor, the error table and the SDK's constants.
local core = require "fwx.core"

local fwx = {
  version = core.version,
  libuv_version = core.libuv_version,
  errors = core.errors,          -- name -> Win32 code, e.g. errors.ERROR_OPERATION_ABORTED == 995
  FWX_PROTOCOL_TCP = "tcp",
  FWX_PROTOCOL_UDP = "udp",
}

--- fwx.new{ on_error = function(message_with_traceback, object, operation) end }
-- The service (IFWXFirewall): a completion port and its dispatcher in this thread.
function fwx.new(options)
  return core.new(options)
end

--- fwx.strerror(code) -> name, message ("ERROR_NETNAME_DELETED", "...").
function fwx.strerror(code)
  return core.strerror(code)
end

-- The await style (fw:spawn, s:recv(), ...) over the callback style's operations.
require("fwx.await").install(core.methods)

-- Tests run the suite with a GC step forced after every notification.
if os.getenv("FWX_DEBUG_GC") == "1" then core._debug_gc(true) end

return fwx
