-- dispatch_fwx.lua: the fwx side of the dispatch micro-benchmark: notifications per
-- second delivered by the fwx dispatcher to a Lua sink.
--
--   lua5.4 bench/dispatch_fwx.lua post_chain|post_batch|timer_chain|timer_batch|
--                                 message_chain|message_batch SECONDS
--
-- post_chain:  fw:PostTaskCompletion; each notification posts the next.
-- post_batch:  BATCH tasks posted at once; the notification that ends a batch posts
--              the next batch.
-- timer_chain: fw:SetTimer(0, ...); each notification sets the next timer.
-- timer_batch: BATCH zero timers set at once, as above.
-- message_chain, message_batch: fw:PostTaskCompletion("m", true, 1), a message to this
--              service's own worker inbox (what workers of fwx.serve post to each
--              other: encoded, copied, woken through uv_async_send) to the handler
--              fw:SetTaskHandler("m", sink) set; chained or in batches, as above.
-- The rate is per second of process CPU time (os.clock), read once every CHECK_EVERY
-- notifications; see dispatch_c.c and dispatch_luv.lua, which this mirrors.
local fwx = require "fwx"

local BATCH, CHECK_EVERY = 1000, 1024
local variant, limit = arg[1], tonumber(arg[2])
local kinds = { post_chain = true, post_batch = true, timer_chain = true, timer_batch = true,
                message_chain = true, message_batch = true }
assert(kinds[variant] and limit,
       "usage: dispatch_fwx.lua post_chain|post_batch|timer_chain|timer_batch|message_chain|message_batch SECONDS")

local fw = fwx.new{}
local clock = os.clock
local count, start, done = 0, clock(), false
local ud = {}

local function time_is_up()
  if clock() - start >= limit then done = true end
  return done
end

-- Task sinks get (userdata); timer sinks get (ok, err, userdata).
if variant == "post_chain" then
  local function sink(u)
    count = count + 1
    if count % CHECK_EVERY == 0 and time_is_up() then return fw:stop() end
    fw:PostTaskCompletion(sink, u)
  end
  start = clock()
  fw:PostTaskCompletion(sink, ud)
elseif variant == "message_chain" then
  local function sink()
    count = count + 1
    if count % CHECK_EVERY == 0 and time_is_up() then return fw:stop() end
    fw:PostTaskCompletion("m", true, 1)
  end
  fw:SetTaskHandler("m", sink)
  start = clock()
  fw:PostTaskCompletion("m", true, 1)
elseif variant == "timer_chain" then
  local function sink(ok, err, u)
    count = count + 1
    if count % CHECK_EVERY == 0 and time_is_up() then return fw:stop() end
    fw:SetTimer(0, sink, u)
  end
  start = clock()
  fw:SetTimer(0, sink, ud)
else
  local timer = variant == "timer_batch"
  local pending = 0
  local sink
  local function arm()
    if timer then
      for _ = 1, BATCH do fw:SetTimer(0, sink, ud) end
    elseif variant == "message_batch" then
      for _ = 1, BATCH do fw:PostTaskCompletion("m", true, 1) end
    else
      for _ = 1, BATCH do fw:PostTaskCompletion(sink, ud) end
    end
    pending = BATCH
  end
  function sink()
    count = count + 1
    pending = pending - 1
    if pending == 0 then
      if time_is_up() then return fw:stop() end
      arm()
    end
  end
  if variant == "message_batch" then fw:SetTaskHandler("m", sink) end
  start = clock()
  arm()
end

fw:run()
local elapsed = clock() - start
fw:Close()
io.write(string.format(
  "RESULT bench=dispatch impl=fwx variant=%s notifs=%d cpu_s=%.3f notif_per_s=%.0f\n",
  variant, count, elapsed, count / elapsed))
