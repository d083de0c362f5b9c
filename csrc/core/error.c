/* error.c: libuv status -> the Win32 code a real completion port would deliver
 * (ISA-SDK.md §5.6, IOCP column), and the names and messages of those codes. */
#include "fwx-int.h"

static const fwx_error_info_t table[] = {
  {"ERROR_SUCCESS", 0, "The operation completed successfully."},
  {"ERROR_INVALID_FUNCTION", 1, "Incorrect function."},
  {"ERROR_FILE_NOT_FOUND", 2, "The system cannot find the file specified."},
  {"ERROR_TOO_MANY_OPEN_FILES", 4, "The system cannot open the file (too many open files)."},
  {"ERROR_ACCESS_DENIED", 5, "Access is denied."},
  {"ERROR_INVALID_HANDLE", 6, "The handle is invalid."},
  {"ERROR_NOT_ENOUGH_MEMORY", 8, "Not enough memory resources are available."},
  {"ERROR_INVALID_DATA", 13, "The data is invalid."},
  {"ERROR_OUTOFMEMORY", 14, "Not enough memory resources are available to complete this operation."},
  {"ERROR_HANDLE_EOF", 38, "Reached the end of the file."},
  {"ERROR_NOT_SUPPORTED", 50, "The request is not supported."},
  {"ERROR_DUP_NAME", 52, "A duplicate name exists on the network."},
  {"ERROR_BAD_NETPATH", 53, "The network path was not found."},
  {"ERROR_UNEXP_NET_ERR", 59, "An unexpected network error occurred."},
  {"ERROR_NETNAME_DELETED", 64, "The specified network name is no longer available (connection reset)."},
  {"ERROR_NETWORK_ACCESS_DENIED", 65, "Network access is denied."},
  {"ERROR_INVALID_PARAMETER", 87, "The parameter is incorrect."},
  {"ERROR_BROKEN_PIPE", 109, "The pipe has been ended."},
  {"ERROR_DISK_FULL", 112, "There is not enough space on the disk."},
  {"ERROR_SEM_TIMEOUT", 121, "The semaphore timeout period has expired (operation timed out)."},
  {"ERROR_INSUFFICIENT_BUFFER", 122, "The data area passed to a system call is too small."},
  {"ERROR_ALREADY_EXISTS", 183, "Cannot create a file when that file already exists."},
  {"ERROR_NO_DATA", 232, "The pipe is being closed."},
  {"ERROR_MORE_DATA", 234, "More data is available (datagram truncated)."},
  {"WAIT_TIMEOUT", 258, "The wait operation timed out."},
  {"ERROR_INVALID_ADDRESS", 487, "Attempt to access invalid address."},
  {"ERROR_ABANDONED_WAIT_0", 735, "The completion port was closed while waiting."},
  {"ERROR_OPERATION_ABORTED", 995, "The I/O operation has been aborted (cancel, close or shutdown)."},
  {"ERROR_IO_INCOMPLETE", 996, "Overlapped I/O event is not in a signaled state."},
  {"ERROR_IO_PENDING", 997, "Overlapped I/O operation is in progress."},
  {"ERROR_NOACCESS", 998, "Invalid access to memory location."},
  {"ERROR_SERVICE_NOT_ACTIVE", 1062, "The service has not been started (a worker that has stopped)."},
  {"ERROR_SHUTDOWN_IN_PROGRESS", 1115, "A system shutdown is in progress."},
  {"ERROR_NOT_FOUND", 1168, "Element not found."},
  {"ERROR_INVALID_NETNAME", 1214, "The format of the specified network name is invalid."},
  {"ERROR_CANCELLED", 1223, "The operation was canceled by the user."},
  {"ERROR_CONNECTION_REFUSED", 1225, "The remote computer refused the network connection."},
  {"ERROR_GRACEFUL_DISCONNECT", 1226, "The network connection was gracefully closed."},
  {"ERROR_ADDRESS_ALREADY_ASSOCIATED", 1227, "The network transport endpoint already has an address associated with it."},
  {"ERROR_ADDRESS_NOT_ASSOCIATED", 1228, "An address has not yet been associated with the network endpoint."},
  {"ERROR_CONNECTION_INVALID", 1229, "An operation was attempted on a nonexistent network connection."},
  {"ERROR_CONNECTION_ACTIVE", 1230, "An invalid operation was attempted on an active network connection."},
  {"ERROR_NETWORK_UNREACHABLE", 1231, "The network location cannot be reached."},
  {"ERROR_HOST_UNREACHABLE", 1232, "The remote system is not reachable by the transport."},
  {"ERROR_PROTOCOL_UNREACHABLE", 1233, "The remote system does not support the transport protocol."},
  {"ERROR_PORT_UNREACHABLE", 1234, "No service is operating at the destination network endpoint."},
  {"ERROR_REQUEST_ABORTED", 1235, "The request was aborted."},
  {"ERROR_CONNECTION_ABORTED", 1236, "The network connection was aborted by the local system."},
  {"ERROR_CONNECTION_COUNT_LIMIT", 1238, "A connection to the server could not be made because the limit on the number of concurrent connections has been reached."},
  {"ERROR_HOST_DOWN", 1256, "The remote system is not available."},
  {"ERROR_NO_SYSTEM_RESOURCES", 1450, "Insufficient system resources exist to complete the requested service."},
  {"ERROR_TIMEOUT", 1460, "This operation returned because the timeout period expired."},
  {"ERROR_INVALID_USER_BUFFER", 1784, "The supplied user buffer is not valid for the requested operation."},
  {"ERROR_NOT_CONNECTED", 2250, "This network connection does not exist."},
  {"WSAEINTR", 10004, "A blocking operation was interrupted."},
  {"WSAEBADF", 10009, "The file handle supplied is not valid."},
  {"WSAEACCES", 10013, "An attempt was made to access a socket in a way forbidden by its access permissions."},
  {"WSAEFAULT", 10014, "The system detected an invalid pointer address."},
  {"WSAEINVAL", 10022, "An invalid argument was supplied."},
  {"WSAEMFILE", 10024, "Too many open sockets."},
  {"WSAEWOULDBLOCK", 10035, "A non-blocking socket operation could not be completed immediately."},
  {"WSAEINPROGRESS", 10036, "A blocking operation is currently executing."},
  {"WSAEALREADY", 10037, "An operation was attempted on a non-blocking socket that already had an operation in progress."},
  {"WSAENOTSOCK", 10038, "An operation was attempted on something that is not a socket."},
  {"WSAEDESTADDRREQ", 10039, "A required address was omitted from an operation on a socket."},
  {"WSAEMSGSIZE", 10040, "A message sent on a datagram socket was larger than the internal buffer."},
  {"WSAEPROTOTYPE", 10041, "A protocol was specified that does not support the semantics of the socket type."},
  {"WSAENOPROTOOPT", 10042, "An unknown, invalid, or unsupported option or level was specified."},
  {"WSAEPROTONOSUPPORT", 10043, "The requested protocol is not supported."},
  {"WSAESOCKTNOSUPPORT", 10044, "The support for the specified socket type does not exist."},
  {"WSAEOPNOTSUPP", 10045, "The operation is not supported for this type of object."},
  {"WSAEPFNOSUPPORT", 10046, "The protocol family has not been configured or no implementation exists."},
  {"WSAEAFNOSUPPORT", 10047, "An address incompatible with the requested protocol was used."},
  {"WSAEADDRINUSE", 10048, "Only one usage of each socket address is normally permitted (address in use)."},
  {"WSAEADDRNOTAVAIL", 10049, "The requested address is not valid in its context."},
  {"WSAENETDOWN", 10050, "The network is down."},
  {"WSAENETUNREACH", 10051, "A socket operation was attempted to an unreachable network."},
  {"WSAENETRESET", 10052, "The connection has been broken due to keep-alive activity."},
  {"WSAECONNABORTED", 10053, "An established connection was aborted by the software in your host machine."},
  {"WSAECONNRESET", 10054, "An existing connection was forcibly closed by the remote host."},
  {"WSAENOBUFS", 10055, "No buffer space is available."},
  {"WSAEISCONN", 10056, "The socket is already connected."},
  {"WSAENOTCONN", 10057, "The socket is not connected."},
  {"WSAESHUTDOWN", 10058, "Cannot send after the socket has been shut down."},
  {"WSAETOOMANYREFS", 10059, "Too many references to some kernel object."},
  {"WSAETIMEDOUT", 10060, "The connection attempt timed out."},
  {"WSAECONNREFUSED", 10061, "The target machine actively refused the connection."},
  {"WSAELOOP", 10062, "Cannot translate name."},
  {"WSAENAMETOOLONG", 10063, "Name component or name was too long."},
  {"WSAEHOSTDOWN", 10064, "The destination host is down."},
  {"WSAEHOSTUNREACH", 10065, "No route to host."},
  {"WSANOTINITIALISED", 10093, "Winsock has not been initialised."},
  {"WSAEDISCON", 10101, "A graceful shutdown is in progress (message-oriented socket)."},
  {"WSAECANCELLED", 10103, "A call was cancelled."},
  {"WSAHOST_NOT_FOUND", 11001, "No such host is known."},
  {"WSATRY_AGAIN", 11002, "Temporary failure in name resolution; try again."},
  {"WSANO_RECOVERY", 11003, "A non-recoverable error occurred during a database lookup."},
  {"WSANO_DATA", 11004, "The requested name is valid, but no data of the requested type was found."},
};

const fwx_error_info_t *fwx_error_table(size_t *count) {
  *count = sizeof table / sizeof table[0];
  return table;
}

static const fwx_error_info_t *find(int code) {
  size_t i;
  for (i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].code == code) return &table[i];
  return NULL;
}

const char *fwx_win32_name(int code) {
  const fwx_error_info_t *e = find(code);
  return e ? e->name : NULL;
}

const char *fwx_win32_message(int code) {
  const fwx_error_info_t *e = find(code);
  return e ? e->message : NULL;
}

/* Used for completions and synchronous refusals alike; where the IOCP path and
 * Winsock differ (§5.6), completions carry the IOCP code (reset 64, refused 1225). */
int fwx_win32_error(int status) {
  switch (status) {
  case 0: return 0;
  case UV_ECANCELED: return 995;
  case UV_ECONNRESET: return 64;
  case UV_EPIPE: return 64;           /* the peer is gone: as a reset on the IOCP path */
  case UV_ECONNABORTED: return 1236;
  case UV_ECONNREFUSED: return 1225;
  case UV_ETIMEDOUT: return 121;
  case UV_EHOSTUNREACH: return 1232;
  case UV_ENETUNREACH: return 1231;
  case UV_ENETDOWN: return 59;
  case UV_EHOSTDOWN: return 1256;
  case UV_EADDRINUSE: return 10048;
  case UV_EADDRNOTAVAIL: return 10049;
  case UV_ENOTCONN: return 2250;
  case UV_EMSGSIZE: return 234;
  case UV_ESHUTDOWN: return 10058;    /* Send after our own Shutdown */
  case UV_ENOBUFS: return 1450;
  case UV_ENOMEM: return 8;
  case UV_EINVAL: return 87;
  case UV_EBADF: return 6;
  case UV_ENOTSOCK: return 10038;
  case UV_EISCONN: return 10056;
  case UV_EALREADY: return 10037;
  case UV_EACCES: return 10013;
  case UV_EPERM: return 5;
  case UV_EMFILE: return 4;
  case UV_ENFILE: return 4;
  case UV_EAFNOSUPPORT: return 10047;
  case UV_EPROTONOSUPPORT: return 10043;
  case UV_ENOTSUP: return 50;
  case UV_EINTR: return 10004;
  case UV_EFAULT: return 998;
  case UV_EAGAIN: return 10035;
  case UV_ENOENT: return 2;
  case UV_EEXIST: return 183;
  case UV_ENOSPC: return 112;
  case UV_EOF: return 38;
  case UV_EAI_NONAME: return 11001;
  case UV_EAI_AGAIN: return 11002;
  case UV_EAI_FAIL: return 11003;
  case UV_EAI_NODATA: return 11004;
  case UV_EAI_ADDRFAMILY: return 11004;
  case UV_EAI_FAMILY: return 10047;
  case UV_EAI_MEMORY: return 8;
  case UV_EAI_CANCELED: return 995;
  default: return 59;                 /* ERROR_UNEXP_NET_ERR */
  }
}

/* The completion's (ok, error) pair. A graceful close is a successful 0-byte receive;
 * the end of a hooked pipe is ERROR_BROKEN_PIPE and of a file ERROR_HANDLE_EOF, as
 * ReadFile reports them. */
int fwx__completion_error(fwx_op_kind_t kind, int status, int *ok) {
  if (status == 0) {
    *ok = 1;
    return 0;
  }
  if (status == UV_EOF) {
    if (kind == FWX_OP_RECV) {
      *ok = 1;
      return 0;
    }
    *ok = 0;
    return kind == FWX_OP_READ ? 109 : 38;
  }
  *ok = 0;
  return fwx_win32_error(status);
}

const char *fwx_strerror(int err) {
  switch (err) {
  case FWX_ECLOSED: return "object is closed";
  case FWX_EBUSY: return "an operation is already pending";
  case FWX_EINVAL: return "argument out of range";
  case FWX_ELOCKED: return "buffer is lent to a pending operation";
  case FWX_ESTATE: return "operation not valid in this state";
  case FWX_EPUMPING: return "socket is being pumped";
  default: return uv_strerror(err);
  }
}
