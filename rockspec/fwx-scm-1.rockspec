rockspec_format = "3.0"
package = "fwx"
version = "scm-1"
source = {
  url = "git+file:///dev/null", -- built in place with `luarocks make`
}
description = {
  summary = "The Firewall-service completion model (IOCP, overlapped objects, notification sinks) for Lua 5.4 on libuv",
  detailed = [[
    A C core on libuv with a completion port, overlapped records, sockets and
    buffers; a Lua module exposing the ISA Server filter SDK's names, whose
    completion handlers are Lua functions called by a dispatcher, never from
    inside a libuv callback.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
}
build = {
  type = "builtin",
  install = {
    bin = { fwx = "bin/fwx" },
  },
  modules = {
    fwx = "lua/fwx/init.lua",
    ["fwx.await"] = "lua/fwx/await.lua",
    ["fwx.host"] = "lua/fwx/host.lua",
    ["fwx.host_worker"] = "lua/fwx/host_worker.lua",
    ["fwx.host_metrics"] = "lua/fwx/host_metrics.lua",
    ["fwx.host_udp"] = "lua/fwx/host_udp.lua",
    ["fwx.host_sdk"] = "lua/fwx/host_sdk.lua",
    ["fwx.link"] = "lua/fwx/link.lua",
    ["fwx.core"] = {
      sources = {
        "csrc/core/arena.c", "csrc/core/buffer.c", "csrc/core/deadline.c", "csrc/core/deferred.c",
        "csrc/core/error.c",
        "csrc/core/handle.c", "csrc/core/link.c",
        "csrc/core/lookup.c", "csrc/core/overlapped.c", "csrc/core/port.c",
        "csrc/core/pump.c", "csrc/core/socket.c", "csrc/core/store.c", "csrc/core/stream.c",
        "csrc/core/timer.c",
        "csrc/core/udp.c", "csrc/core/workers.c",
        "csrc/lua/address.c", "csrc/lua/alloc.c", "csrc/lua/buffer.c", "csrc/lua/dispatch.c",
        "csrc/lua/fwx.c", "csrc/lua/handle.c", "csrc/lua/link.c", "csrc/lua/overlapped.c",
        "csrc/lua/pump.c", "csrc/lua/received.c", "csrc/lua/relay.c", "csrc/lua/resume.c", "csrc/lua/ring.c", "csrc/lua/service.c",
        "csrc/lua/serialize.c", "csrc/lua/socket.c", "csrc/lua/store.c", "csrc/lua/timer.c",
        "csrc/lua/workers.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "csrc/core", "$(LIBUV_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)" },
      libraries = { "uv", "pthread" },
    },
  },
}
