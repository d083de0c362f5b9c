-- Copy a file through the completion port: HookToCompletionPort, overlapped objects
-- with their notification interfaces, Read and Write at explicit 0-based offsets.
--   lua5.4 examples/copy.lua FROM TO
local fwx = require "fwx"

local from, to = arg[1], arg[2]
assert(from and to, "usage: copy.lua FROM TO")
local fw = fwx.new{}
-- The port hooks its own duplicates of the descriptors: the Lua files may be closed.
local src = fw:HookToCompletionPort(assert(io.open(from, "rb")))
local dst = fw:HookToCompletionPort(assert(io.open(to, "wb")))

local buf = fw:CreateBuffer(64 * 1024)
local reader, writer = fw:CreateOverlapped(), fw:CreateOverlapped()
local offset, failed = 0, nil

-- IFWXExternalIOCompletion: (ok, bytes, err, overlapped, userdata)
reader:SetNotificationInterface(function(ok, bytes, err)
  if not ok then
    -- the end of the file is a failed read, as ReadFile reports it
    if err ~= fwx.errors.ERROR_HANDLE_EOF then failed = select(2, fwx.strerror(err)) end
    return
  end
  dst:Write(buf, writer, offset)
end)

writer:SetNotificationInterface(function(ok, bytes, err)
  if not ok then failed = select(2, fwx.strerror(err)) return end
  offset = offset + bytes
  src:Read(buf, reader, offset) -- the buffer is free again: read the next chunk
end)

src:Read(buf, reader, 0)
fw:run()
src:Close(); dst:Close(); fw:Close()
if failed then
  io.stderr:write("copy failed: ", failed, "\n")
  os.exit(1)
end
print(("copied %d bytes"):format(offset))
