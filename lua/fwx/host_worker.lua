--- fwx.host_worker: the script each worker of `fwx run` with threads runs
-- (fwx.serve calls it with the worker's service and the command line's file and
-- overrides; lua/fwx/host.lua does the rest).
local fw, path, listen, upstream, metrics_listen = ...
require("fwx.host").worker(fw, path, listen, upstream, metrics_listen)
