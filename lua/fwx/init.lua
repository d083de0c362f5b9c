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

-- The SDK's constants for the host's filters (lua/fwx/host_sdk.lua): the events a
-- filter hooks (FwxFirewallEventType, bit flags) and the priority classes of data
-- filters (FwxDataFilterPriorityClass, in the order of the chain, client side first).
fwx.events = {
  fwx_Connect_Tcp = 0x001, fwx_Udp_Destination = 0x002, fwx_Bind_Tcp = 0x004,
  fwx_Bind_Udp = 0x008, fwx_Listen = 0x010, fwx_AcceptedConnection = 0x020,
  fwx_GetHostByName = 0x040, fwx_GetHostByAddr = 0x080,
  fwx_ConnectionTerminating = 0x100, fwx_EstablishedConnection = 0x200,
}
fwx.priority_classes = {
  fwx_dfpc_NAT = 0, fwx_dfpc_Internal = 1, fwx_dfpc_PostTrust = 2, fwx_dfpc_Middle = 3,
  fwx_dfpc_PreTrust = 4, fwx_dfpc_External = 5, fwx_dfpc_Emulation = 6,
}
for _, names in ipairs({ fwx.events, fwx.priority_classes }) do
  for name, value in pairs(names) do fwx[name] = value end
end

--- fwx.new{ on_error = function(message_with_traceback, object, operation) end }
-- The service (IFWXFirewall): a completion port and its dispatcher in this thread.
function fwx.new(options)
  return core.new(options)
end

--- fwx.serve{ threads = N, script = PATH [, args = {...}] } -> true, or nil, error
-- N worker threads, each with its own Lua state, service and loop (DESIGN.md section
-- 4). PATH is loaded in each and called as chunk(fw, ...args); then the worker runs fw
-- until nothing is pending or it is stopped, and closes it. Scripts start in worker
-- order, each once the previous one has returned; serve returns when all have stopped.
-- fw:PostTaskCompletion(name, value, worker) posts value to another worker's task
-- handler (fw:SetTaskHandler(name, sink) there; sink(value, from_worker)).
function fwx.serve(options)
  return core.serve(options)
end

--- fwx.worker_id(), fwx.worker_count(): where this Lua state runs (1 and 1 outside
-- fwx.serve).
fwx.worker_id = core.worker_id
fwx.worker_count = core.worker_count

--- fwx.store: the state every worker of the process shares (DESIGN.md section 4).
-- store.get(key) -> value or nil; store.set(key, value) -> true (nil deletes; nil,
-- message, 8 when the store is full); store.add(key, value) -> true, or false, "exists";
-- store.incr(key [, delta=1 [, init=0]]) -> the new integer, atomically; store.delete(key)
-- -> whether it was there; store.count(), store.bytes(), store.capacity([bytes]).
-- Keys are strings; values are nil, booleans, numbers, strings and tables of these,
-- stored as copies: a table read back is a new table.
fwx.store = core.store

--- fwx.strerror(code) -> name, message ("ERROR_NETNAME_DELETED", "...").
function fwx.strerror(code)
  return core.strerror(code)
end

-- The await style (fw:spawn, s:recv(), ...) over the callback style's operations.
require("fwx.await").install(core.methods)

-- Tests run the suite with a GC step forced after every notification.
if os.getenv("FWX_DEBUG_GC") == "1" then core._debug_gc(true) end

return fwx
