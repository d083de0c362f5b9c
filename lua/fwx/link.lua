--- fwx.link: the sockets between two data filters of one connection (DESIGN.md
-- section 5: "data filters form a chain ordered by priority class"), for the host's
-- chains (lua/fwx/host_sdk.lua).
--
-- In the SDK, the internal and external sockets a data filter is given by SetSockets
-- "may be another data filter in the chain, not a real socket": filter k's external
-- socket and filter k+1's internal socket are the two ends of a link. An end (class
-- "fwx.link", csrc/lua/link.c over csrc/core/link.c) has the socket's methods (Recv,
-- Send, Shutdown, Close, CancelIo, GetSockName, GetPeerName, and the await style's
-- recv and send) and behaves as a connected TCP socket would:
--
-- * Send copies the bytes and queues them for the other end; its notification comes
--   once the other end's Recv has taken all of them ("a send completion only means the
--   next filter took the buffer", ISA-SDK.md 3.1), so a filter that waits for it is
--   pushed back on.
-- * Recv takes what is queued, in order: with no buffer of its own, a buffer of the
--   bytes of one Send (what is left of it); with one, as much as fits. After Shutdown
--   or a graceful Close of the other end, and once the queue is empty, Recv succeeds
--   with 0 bytes (the end of the stream); after an abortive Close it fails with 64
--   (ERROR_NETNAME_DELETED), as after a reset.
-- * Close ends this end's receive with 995 and fails, with 64, the sends queued
--   towards it that it did not take; what it sent itself stays to be taken, unless
--   the close is abortive (then those end with 995). A Send after Shutdown fails with
--   10058 (WSAESHUTDOWN), towards an end that is closed with 64, as a socket's do.
--
-- The operations are the port's own (packets of kind Recv and Send), so every
-- invariant of DESIGN.md section 2 holds as for a socket: one notification each, never
-- inside the call, 995 at Close, CancelIo and fw:Close(), nothing collected while one
-- is pending, and misuse raised at the call.
local core = require "fwx.core"

local M = {}

local link_meta = debug.getregistry()["fwx.link"]

--- link.pair(fw [, a_name, b_name]) -> a, b: the two ends of a new link on fw.
-- a:GetSockName() is a_name and a:GetPeerName() b_name; b's the other way round.
function M.pair(fw, a_name, b_name)
  return core.link_pair(fw, a_name, b_name)
end

--- link.is_link(value) -> whether value is an end of a link.
function M.is_link(value)
  return getmetatable(value) == link_meta
end

return M
