-- dispatch_luv.lua: the luv side of the dispatch micro-benchmark: callbacks per second
-- delivered by luv to a Lua function through zero-timeout timers.
--
--   lua5.4 bench/dispatch_luv.lua chain|batch SECONDS
--
-- chain: one timer; each callback counts and re-arms it.
-- batch: BATCH timers armed at once; the callback that ends a batch arms the next.
-- The rate is per second of process CPU time (os.clock), read once every CHECK_EVERY
-- callbacks; see dispatch_c.c, which this mirrors line for line.
local uv = require "luv"

local BATCH, CHECK_EVERY = 1000, 1024
local variant, limit = arg[1], tonumber(arg[2])
assert((variant == "chain" or variant == "batch") and limit,
       "usage: dispatch_luv.lua chain|batch SECONDS")

local clock = os.clock
local count, start, done = 0, clock(), false

local function time_is_up()
  if clock() - start >= limit then done = true end
  return done
end

local timers = {}
if variant == "chain" then
  local t = uv.new_timer()
  timers[1] = t
  local function cb()
    count = count + 1
    if count % CHECK_EVERY == 0 and time_is_up() then return end
    t:start(0, 0, cb)
  end
  start = clock()
  t:start(0, 0, cb)
else
  local pending = 0
  local cb
  local function arm()
    for i = 1, BATCH do timers[i]:start(0, 0, cb) end
    pending = BATCH
  end
  function cb()
    count = count + 1
    pending = pending - 1
    if pending == 0 and not time_is_up() then arm() end
  end
  for i = 1, BATCH do timers[i] = uv.new_timer() end
  start = clock()
  arm()
end

uv.run()
local elapsed = clock() - start
for _, t in ipairs(timers) do t:close() end
uv.run()
io.write(string.format(
  "RESULT bench=dispatch impl=luv variant=%s notifs=%d cpu_s=%.3f notif_per_s=%.0f\n",
  variant, count, elapsed, count / elapsed))
