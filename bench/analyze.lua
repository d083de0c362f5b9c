-- analyze.lua: turns bench/results.csv into bench/RESULTS.md and the ratio chart.
--
--   lua5.4 bench/analyze.lua RESULTS_CSV META WORKLOADS OUT_MD OUT_PNG WORKDIR
--
-- RESULTS_CSV  rows rep,workload,server,status,metric,value (written by run.sh);
--              status is ok, missing or failed (then metric is "reason").
-- META         key=value lines describing the run.
-- WORKLOADS    name|group|kind|servers|description; the first server of a group is
--              the baseline.
-- A ratio is always taken within one repetition: value(server, rep) divided by
-- value(baseline, rep), so that a machine that is slower in one repetition slows
-- both sides of the ratio. The tables give the median and the min-max over the
-- repetitions, of the raw values and of the ratios.

local csv_path, meta_path, wl_path, md_path, png_path, workdir = table.unpack(arg)
assert(workdir, "usage: analyze.lua RESULTS_CSV META WORKLOADS OUT_MD OUT_PNG WORKDIR")

-- What each kind of run measures: key, column title, which direction is better.
local METRICS = {
  pingpong = {
    { "msgs_per_s", "msgs/s", "higher" },
    { "cpu_us_per_msg", "server CPU µs/msg", "lower" },
    { "p50_us", "p50 µs", "lower" },
    { "p99_us", "p99 µs", "lower" },
  },
  bulk = {
    { "mb_per_s", "MB/s", "higher" },
    { "cpu_us_per_mb", "server CPU µs/MB", "lower" },
  },
  bulksend = {
    { "mb_per_s", "MB/s", "higher" },
    { "cpu_us_per_mb", "server CPU µs/MB", "lower" },
  },
  connrate = {
    { "conns_per_s", "conns/s", "higher" },
    { "cpu_us_per_conn", "server CPU µs/conn", "lower" },
  },
  idle = {
    { "rss_per_conn_b", "RSS B/conn", "lower" },
  },
  dispatch = {
    { "notif_per_s", "notifs/CPU-s", "higher" },
  },
  ir = {
    { "ir_per_op", "instructions/op", "lower" },
  },
}

-- Issue 3's targets: workload, metric, server, comparison, bound, what is bounded.
local TARGETS = {
  { "echo ping-pong c=50 m=64: server CPU per message", "pp_c50_m64", "cpu_us_per_msg",
    "fwx", "<=", 1.10, "ratio", "1.47×" },
  { "echo ping-pong c=500 m=4096: throughput", "pp_c500_m4096", "msgs_per_s",
    "fwx", ">=", 0.95, "ratio", "0.68×" },
  { "proxy, identity Lua data filter, c=50 m=64: server CPU per message",
    "proxy_pp_c50_m64", "cpu_us_per_msg", "fwx_host_lua", "<=", 1.15, "ratio", "1.40×" },
  { "proxy, no data filter (core pump): bulk MB/s", "proxy_bulk", "mb_per_s",
    "fwx_host", ">=", 1.2, "ratio", "—" },
  -- The same two targets measured on the parts the host is built from: fw:Pump with
  -- an identity filter (what the host runs for on_data), and the core pump alone; and
  -- the first on the same loop written by hand in Lua with Recv and Send.
  { "proxy, filtered pump (fw:Pump with an identity filter, no host), c=50 m=64: server CPU per message",
    "proxy_pp_c50_m64", "cpu_us_per_msg", "fwx_filter", "<=", 1.15, "ratio", "1.40×" },
  { "proxy, the loop by hand in Lua (Recv, Send; no host), c=50 m=64: server CPU per message",
    "proxy_pp_c50_m64", "cpu_us_per_msg", "fwx", "<=", 1.15, "ratio", "1.40×" },
  { "proxy, core pump (fw:Pump directly, no host): bulk MB/s", "proxy_bulk", "mb_per_s",
    "fwx_pump", ">=", 1.2, "ratio", "—" },
  { "idle memory per accepted connection: ratio", "idle", "rss_per_conn_b",
    "fwx", "<=", 2.0, "ratio", "2.9×" },
  { "idle memory per accepted connection: bytes", "idle", "rss_per_conn_b",
    "fwx", "<=", 600, "value", "836 B" },
  { "notifications per second to an empty Lua sink (posted tasks, chain)",
    "dispatch_chain", "notif_per_s", "fwx_post", ">=", 6e6, "value", "≈ 2.2–3.1 M/s" },
}

-- ------------------------------------------------------------------ reading
local function lines(path)
  local f = assert(io.open(path, "r"))
  local t = {}
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local meta = {}
for _, l in ipairs(lines(meta_path)) do
  local k, v = l:match("^([%w_]+)=(.*)$")
  if k then meta[k] = v end
end

local workloads = {}
for _, l in ipairs(lines(wl_path)) do
  local name, group, kind, servers, desc = l:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
  if name then
    local list = {}
    for s in servers:gmatch("%S+") do list[#list + 1] = s end
    workloads[#workloads + 1] = { name = name, group = group, kind = kind,
                                  servers = list, desc = desc }
  end
end

-- values[workload][server][metric][rep] = number; notes[workload][server] = {...}
local values, notes, reps_seen = {}, {}, {}
local function slot(t, ...)
  for _, k in ipairs{ ... } do
    t[k] = t[k] or {}
    t = t[k]
  end
  return t
end

for i, l in ipairs(lines(csv_path)) do
  if i > 1 and l ~= "" then
    local rep, wl, srv, status, metric, value = l:match("^(%d+),([^,]*),([^,]*),([^,]*),([^,]*),(.*)$")
    if rep then
      rep = tonumber(rep)
      reps_seen[rep] = true
      if status == "ok" then
        slot(values, wl, srv, metric)[rep] = tonumber(value)
      else
        local n = slot(notes, wl, srv)
        local key = status .. ": " .. value
        n[key] = (n[key] or 0) + 1
      end
    end
  end
end

-- --------------------------------------------------------------- statistics
local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  local m = (#list + 1) // 2
  if #list % 2 == 1 then return list[m] end
  return (list[m] + list[m + 1]) / 2
end

local function summary(list)
  if #list == 0 then return nil end
  local copy = { table.unpack(list) }
  local med = median(copy)
  return { median = med, min = copy[1], max = copy[#copy], n = #copy }
end

local function raw_stats(wl, srv, metric)
  local per_rep = values[wl] and values[wl][srv] and values[wl][srv][metric]
  if not per_rep then return nil end
  local list = {}
  for _, v in pairs(per_rep) do list[#list + 1] = v end
  return summary(list)
end

-- Ratios against the baseline of the same repetition only.
local function ratio_stats(wl, base, srv, metric)
  local a = values[wl] and values[wl][srv] and values[wl][srv][metric]
  local b = values[wl] and values[wl][base] and values[wl][base][metric]
  if not a or not b then return nil end
  local list = {}
  for rep, v in pairs(a) do
    if b[rep] and b[rep] ~= 0 then list[#list + 1] = v / b[rep] end
  end
  return summary(list)
end

-- ---------------------------------------------------------------- formatting
local function num(v)
  if v == nil then return "—" end
  local a = math.abs(v)
  if a >= 1e6 then return string.format("%.2f M", v / 1e6) end
  if a >= 1000 then
    -- thousands separated by a thin space, for legibility
    local s = string.format("%.0f", v)
    return (s:reverse():gsub("(%d%d%d)", "%1 "):reverse():gsub("^ ", ""))
  end
  if a >= 100 then return string.format("%.0f", v) end
  if a >= 10 then return string.format("%.1f", v) end
  return string.format("%.2f", v)
end

local function fmt_stats(st, f)
  if not st then return "—" end
  f = f or num
  if st.n == 1 then return f(st.median) end
  return string.format("%s (%s–%s)", f(st.median), f(st.min), f(st.max))
end

local function fmt_ratio(x) return string.format("%.2f×", x) end

local out = {}
local function w(...) out[#out + 1] = table.concat({ ... }) end

local nreps = 0
for _ in pairs(reps_seen) do nreps = nreps + 1 end

-- ------------------------------------------------------------------- header
w("# fwx benchmarks: results")
w("")
w("Generated by `bench/run.sh` (`make bench`) on ", meta.date or "?", ". Do not edit: rerun.")
w("")
w("| | |")
w("|---|---|")
w("| machine | ", meta.cpu or "?", ", ", meta.ncpu or "?", " CPUs, Linux ", meta.kernel or "?", " |")
w("| software | libuv ", meta.libuv or "?", ", ", meta.lua or "?", ", luv ", meta.luv or "?",
  ", commit ", meta.commit or "?", " |")
w("| run | ", meta.reps or "?", " repetitions × ", meta.seconds or "?", " s per run (after ",
  meta.warmup or "?", " s warm-up), idle ", meta.idle_conns or "?", " connections, dispatch ",
  meta.dispatch_seconds or "?", " CPU-s per run", (meta.quick ~= "0" and ", **quick mode**" or ""),
  "; took ", meta.elapsed or "?", " s |")
w("| pinning | server (or dispatch program) on CPU ", meta.server_cpu or "?",
  ", load generator (and a proxy's upstream echo server) on CPU ", meta.loadgen_cpu or "?", " |")
w("")
w("How to read: every figure is the **median (min–max)** over the repetitions. A ratio ",
  "divides a server's figure by the baseline's (`c`: plain C libuv) figure **from the same ",
  "repetition**, then the median and range of those ratios are shown. For throughput ",
  "(msgs/s, MB/s, conns/s, notifs/s) higher is better; for server CPU per operation, ",
  "latency and memory, lower is better. Server CPU per operation is user+system time of ",
  "the server process over the measurement window divided by the work done: it does not ",
  "depend on which side saturated first, so it is the figure to compare on this 2-core ",
  "machine. Latency is measured by the load generator, which shares the machine.")
w("")
w("The `ir_` workloads count the server's **user-space instructions per operation** under ",
  "callgrind (`valgrind --tool=callgrind`), once: from a run and one twice as long, the ",
  "difference in instructions divided by the difference in operations, so that start-up ",
  "cancels. They do not move with the machine's load, so they are the figure to judge a ",
  "small change by. They leave out the kernel, where the C servers spend almost all ",
  "their time, so their baseline is luv, not `c`.")
w("")

-- -------------------------------------------------------------- missing list
local problems = {}
for _, wl in ipairs(workloads) do
  for _, srv in ipairs(wl.servers) do
    local n = notes[wl.name] and notes[wl.name][srv]
    if n then
      local keys = {}
      for k in pairs(n) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        problems[#problems + 1] = string.format("| %s | %s | %s | %d of %d |",
          wl.name, srv, k, n[k], wl.kind == "ir" and 1 or nreps)
      end
    end
  end
end

-- ------------------------------------------------------------------- targets
w("## Targets (issue 3)")
w("")
w("| figure | luv | fwx | target | status |")
w("|---|---|---|---|---|")
local wl_by_name = {}
for _, wl in ipairs(workloads) do wl_by_name[wl.name] = wl end
for _, t in ipairs(TARGETS) do
  local label, wlname, metric, srv, cmp, bound, what, luv_issue = table.unpack(t)
  local wl = wl_by_name[wlname]
  local luv_cell, fwx_cell, status = "—", "—", "not measured"
  if wl then
    local base = wl.servers[1]
    local function cell(s)
      if what == "ratio" then
        local st = ratio_stats(wlname, base, s, metric)
        return st and fmt_stats(st, fmt_ratio), st
      end
      local st = raw_stats(wlname, s, metric)
      return st and fmt_stats(st), st
    end
    luv_cell = cell("luv") or "—"
    local c, st = cell(srv)
    if st then
      fwx_cell = c
      local ok = (cmp == "<=" and st.median <= bound) or (cmp == ">=" and st.median >= bound)
      status = ok and "met" or "**not met**"
    else
      fwx_cell = "missing"
      status = "missing"
    end
  end
  local bound_s = what == "ratio" and fmt_ratio(bound) or num(bound)
  w("| ", label, " | ", luv_cell, " (issue: ", luv_issue, ") | ", fwx_cell, " (`", srv, "`) | ",
    cmp == "<=" and "≤ " or "≥ ", bound_s, " | ", status, " |")
end
w("")

if #problems > 0 then
  w("## Missing or failed")
  w("")
  w("These servers produced no figure for the runs listed; they appear as — in the tables.")
  w("")
  w("| workload | server | status: reason | repetitions |")
  w("|---|---|---|---|")
  for _, p in ipairs(problems) do w(p) end
  w("")
end

w("## Chart")
w("")
local have_gnuplot = meta.gnuplot and meta.gnuplot ~= ""
if have_gnuplot then
  w("![ratios to the C baseline](results.png)")
  w("")
  w("Top: throughput ratios (higher is better). Bottom: server CPU per operation and ",
    "memory per connection (lower is better). Bars are medians, whiskers the min–max over ",
    "the repetitions; the line at 1 is the C baseline.")
else
  w("Not generated: gnuplot is not installed (`apt-get install gnuplot-nox`).")
end
w("")

-- ---------------------------------------------------------------- per workload
w("## Workloads")
w("")
for _, wl in ipairs(workloads) do
  local metrics = METRICS[wl.kind] or {}
  local base = wl.servers[1]
  w("### ", wl.name, ": ", wl.desc)
  w("")
  local head, rule = { "| server" }, { "|---" }
  for _, m in ipairs(metrics) do
    head[#head + 1] = " | " .. m[2] .. " | ratio"
    rule[#rule + 1] = "|---:|---:"
  end
  w(table.concat(head), " | errors |")
  w(table.concat(rule), "|---:|")
  for _, srv in ipairs(wl.servers) do
    local row = { "| ", srv == base and (srv .. " (baseline)") or srv }
    local any = false
    for _, m in ipairs(metrics) do
      local st = raw_stats(wl.name, srv, m[1])
      any = any or st ~= nil
      row[#row + 1] = " | " .. fmt_stats(st)
      if srv == base then
        row[#row + 1] = " | " .. (st and "1" or "—")
      else
        row[#row + 1] = " | " .. fmt_stats(ratio_stats(wl.name, base, srv, m[1]), fmt_ratio)
      end
    end
    local err = raw_stats(wl.name, srv, wl.kind == "idle" and "lost" or "errors")
    local errs = 0
    if err then
      for _, v in pairs(values[wl.name][srv][wl.kind == "idle" and "lost" or "errors"]) do
        errs = errs + v
      end
    end
    row[#row + 1] = " | " .. (err and tostring(math.tointeger(errs) or errs) or "—")
    if not any then
      local n = notes[wl.name] and notes[wl.name][srv]
      local why = "missing"
      if n then
        for k in pairs(n) do why = k:match("^(%w+)") or why break end
      end
      row[2] = row[2] .. " (" .. why .. ")"
    end
    w(table.concat(row), " |")
  end
  w("")
end

w("## Raw data")
w("")
w("`bench/results.csv` has one row per repetition, workload, server and figure ",
  "(`status` ok, or missing/failed with the reason). The load generator's and the ",
  "servers' own output of the last run is in `bench/build/logs/`.")
w("")

local f = assert(io.open(md_path, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()

-- ---------------------------------------------------------------------- chart
if not have_gnuplot then return end

-- One panel is a list of rows (workload and metric); a row holds the ratio summary
-- of each non-baseline server that has one. Bars are placed by hand rather than with
-- gnuplot's histogram style, so that each row packs only the servers it has and
-- every bar can carry its value as a label (dispatch ratios of a few percent would
-- otherwise be unreadable next to ratios near 1).
local function chart_rows(pick)
  local rows = {}
  for _, wl in ipairs(workloads) do
    for _, m in ipairs(METRICS[wl.kind] or {}) do
      if pick(wl, m) then
        local row = { label = wl.name, bars = {} }
        for i = 2, #wl.servers do
          local srv = wl.servers[i]
          local st = ratio_stats(wl.name, wl.servers[1], srv, m[1])
          if st then row.bars[#row.bars + 1] = { srv = srv, st = st } end
        end
        rows[#rows + 1] = row
      end
    end
  end
  return rows
end

local top_rows = chart_rows(function(_, m) return m[3] == "higher" end)
local bot_rows = chart_rows(function(_, m)
  return m[1]:match("^cpu_us_per") ~= nil or m[1] == "rss_per_conn_b"
end)

-- Series (servers) in a stable order, so both panels use the same colours.
local all_series, pos = {}, {}
for _, rows in ipairs{ top_rows, bot_rows } do
  for _, r in ipairs(rows) do
    for _, b in ipairs(r.bars) do
      if not pos[b.srv] then all_series[#all_series + 1] = b.srv; pos[b.srv] = #all_series end
    end
  end
end

-- Servers that never produced a ratio are named in the title, so the chart does not
-- hide them. The instruction counts are not charted (their baseline is luv, and `c`
-- one of their servers), so their servers are not looked for.
local absent, absent_seen = {}, {}
for _, wl in ipairs(workloads) do
  for i = 2, wl.kind == "ir" and 1 or #wl.servers do
    local s = wl.servers[i]
    if not pos[s] and not absent_seen[s] then
      absent_seen[s] = true
      absent[#absent + 1] = s
    end
  end
end

local colours = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                  "#e377c2", "#17becf", "#7f7f7f" }

-- Writes one data block per series ("index" in gnuplot): x y ymin ymax width.
-- Returns the plot command, the xtics and the largest value drawn.
local function panel(dat, rows)
  local blocks, ymax = {}, 1.0
  for i = 1, #all_series do blocks[i] = {} end
  local tics = {}
  for r, row in ipairs(rows) do
    local x0 = r - 1
    tics[#tics + 1] = string.format("\"%s\" %d", row.label, x0)
    local n = #row.bars
    local width = math.min(0.8 / math.max(n, 1), 0.27)
    for j, b in ipairs(row.bars) do
      local x = x0 + (j - (n + 1) / 2) * width
      local blk = blocks[pos[b.srv]]
      blk[#blk + 1] = string.format("%.4f %.4f %.4f %.4f %.4f", x, b.st.median, b.st.min,
                                    b.st.max, width * 0.95)
      if b.st.max > ymax then ymax = b.st.max end
    end
  end
  local fh = assert(io.open(dat, "w"))
  local empty = {}
  for i = 1, #all_series do
    -- An empty block would shift every later index; a point far off-range keeps it.
    if #blocks[i] == 0 then blocks[i][1] = "-10 0 0 0 0.1"; empty[i] = true end
    fh:write(table.concat(blocks[i], "\n"), "\n\n\n")
  end
  fh:close()
  local parts = {}
  for i, s in ipairs(all_series) do
    parts[#parts + 1] = string.format(
      "'%s' index %d using 1:2:3:4:5 with boxerrorbars lc rgb '%s' %s",
      dat, i - 1, colours[(i - 1) % #colours + 1], empty[i] and "notitle" or ("title '" .. s .. "'"))
    parts[#parts + 1] = string.format(
      "'%s' index %d using 1:4:(sprintf('%%.2f', $2)) with labels offset 0,0.8 font ',8' notitle",
      dat, i - 1)
  end
  parts[#parts + 1] = "1 with lines lc rgb '#000000' dt 2 notitle"
  local xt = #tics > 0 and ("set xtics (" .. table.concat(tics, ", ") .. ")\n") or "unset xtics\n"
  local xr = string.format("set xrange [-0.6:%f]\n", math.max(#rows, 1) - 0.4)
  local yr = string.format("set yrange [0:%f]\n", ymax * 1.15)
  return xt .. xr .. yr .. "plot " .. table.concat(parts, ", \\\n     ") .. "\n"
end

local gp = {}
local function g(s) gp[#gp + 1] = s end
g(string.format("set terminal pngcairo size 1400,1000 font 'sans,10'\nset output '%s'\n", png_path))
g("set termoption noenhanced\n")
g("set style fill solid 0.85 border -1\n")
g("set grid ytics\nset key outside right top\nset xtics rotate by -30 left nomirror\n")
g("set bmargin 6\nset ylabel 'ratio to C'\n")
g("set multiplot layout 2,1 title \"fwx benchmarks: ratio to the C libuv baseline of the " ..
  "same repetition (bar: median, whisker: min-max)" ..
  (#absent > 0 and ("\\nno figure (missing or failed): " .. table.concat(absent, ", ")) or "") ..
  "\"\n")
if #all_series == 0 then
  g("set title 'no ratio measured'\nset xrange [0:1]\nset yrange [0:2]\n")
  g("plot 1 with lines lc rgb '#000000' dt 2 notitle\nplot 1 with lines notitle\n")
else
  g("set title 'throughput (higher is better)'\n")
  g(panel(workdir .. "/chart_top.dat", top_rows))
  g("set title 'server CPU per operation, memory per connection (lower is better)'\n")
  g(panel(workdir .. "/chart_bottom.dat", bot_rows))
end
g("unset multiplot\n")

local gp_path = workdir .. "/chart.gp"
local fh = assert(io.open(gp_path, "w"))
fh:write(table.concat(gp))
fh:close()
local ok = os.execute("gnuplot '" .. gp_path .. "'")
if not ok then
  io.stderr:write("analyze.lua: gnuplot failed; see ", gp_path, "\n")
  os.exit(1)
end
