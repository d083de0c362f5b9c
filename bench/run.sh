#!/bin/sh
# bench/run.sh: builds the benchmark programs and runs every workload against the C
# libuv baseline, luv and fwx, interleaved, then writes bench/results.csv,
# bench/RESULTS.md and bench/results.png. `make bench` runs it from the repository
# root; see bench/README.md for the knobs.
#
# Every process started here is bounded: servers and load generators run under
# `timeout`, and an EXIT trap ends whatever is still running, so an interrupted or
# failed run leaves no server behind.

# `make` runs this with sh (dash on Debian); the runner needs bash arrays.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u

cd "$(dirname "$0")/.." || exit 1
BDIR=bench/build
LOGDIR=$BDIR/logs
CSV=bench/results.csv
# Rows go to a scratch file first: an interrupted run leaves the last results alone.
CSV_TMP=$BDIR/results.csv.partial
LUA=${LUA:-lua5.4}
FWX_LUA_PATH=${FWX_LUA_PATH:-lua/?.lua;lua/?/init.lua;;}
FWX_LUA_CPATH=${FWX_LUA_CPATH:-build/?.so;;}

# ------------------------------------------------------------------------ knobs
if [ "${BENCH_QUICK:-0}" != 0 ]; then
  : "${BENCH_REPS:=2}" "${BENCH_SECONDS:=1}" "${BENCH_WARMUP:=0.3}"
  : "${BENCH_IDLE_CONNS:=2000}" "${BENCH_DISPATCH_SECONDS:=0.5}" "${BENCH_IR_SECONDS:=1}"
fi
REPS=${BENCH_REPS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-3}
WARMUP=${BENCH_WARMUP:-0.5}
IDLE_CONNS=${BENCH_IDLE_CONNS:-9000}
CONNRATE_C=${BENCH_CONNRATE_C:-50}
DISPATCH_SECONDS=${BENCH_DISPATCH_SECONDS:-1}
ONLY=${BENCH_ONLY:-}           # workload names (shell patterns), empty = all
ONLY_SERVERS=${BENCH_SERVERS:-} # server names, empty = all; c is always kept
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOADGEN_CPU=${BENCH_LOADGEN_CPU:-1}
# Instruction counts under callgrind (0: skip them). A count is taken from two runs,
# IR_SECONDS and twice that, so that start-up cancels out.
IR=${BENCH_IR:-1}
IR_SECONDS=${BENCH_IR_SECONDS:-2}

# The longest any single process may live, whatever happens to this script.
RUN_LIMIT=$(awk -v s="$SECONDS_PER_RUN" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 60 }')
SERVER_LIMIT=$((RUN_LIMIT + 240))
IDLE_HOLD=150

# ------------------------------------------------------------ process tracking
PIDS=()
track() { PIDS+=("$1"); }
untrack() {
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# True while PID is running (a zombie does not count: it has exited).
alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Ends one process we started: TERM, up to 5 s of grace, then KILL; then reaps it
# and leaves its exit status in STOP_STATUS.
STOP_STATUS=0
stop_pid() {
  local pid=$1 i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "run.sh: $pid ignored SIGTERM, killing it" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  STOP_STATUS=$?
  untrack "$pid"
}

# "exit status 141 (SIGPIPE)" from a status as the shell reports it.
describe_status() {
  local st=$1 sig
  if [ "$st" -gt 128 ] && sig=$(kill -l $((st - 128)) 2>/dev/null); then
    echo "exit status $st (SIG$sig)"
  else
    echo "exit status $st"
  fi
}

# PIDS holds the timeout wrappers and the servers under them. TERM to a wrapper is
# passed on to its program, which timeout KILLs 2 s later if it is still there; the
# last pass KILLs anything left, servers included, so nothing outlives this script.
cleanup() {
  local p i
  trap - EXIT INT TERM
  [ ${#PIDS[@]} -eq 0 ] && return
  # Reverse order: load generators and proxies before the servers behind them.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    alive "$p" && kill -TERM "$p" 2>/dev/null
  done
  for i in $(seq 30); do
    local any=0
    for p in "${PIDS[@]}"; do alive "$p" && any=1; done
    [ $any -eq 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# --------------------------------------------------------------------- build
mkdir -p "$BDIR" "$LOGDIR"
rm -f "$LOGDIR"/*
CC=${CC:-cc}
UV_CFLAGS=$(pkg-config --cflags libuv) || { echo "run.sh: pkg-config libuv failed" >&2; exit 1; }
UV_LIBS=$(pkg-config --libs libuv)
for prog in loadgen c_echo c_proxy dispatch_c; do
  # shellcheck disable=SC2086
  if ! $CC -std=c99 -O2 -Wall -Wextra $UV_CFLAGS -o "$BDIR/$prog" "bench/$prog.c" $UV_LIBS; then
    echo "run.sh: cannot build bench/$prog.c" >&2
    exit 1
  fi
done

# Idle runs hold thousands of descriptors in each process; children inherit this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# Is the fwx module loadable? If not, every fwx server is reported as missing.
FWX_MISSING=""
if ! fwx_err=$(LUA_PATH=$FWX_LUA_PATH LUA_CPATH=$FWX_LUA_CPATH timeout 10 $LUA -e 'require "fwx"' 2>&1); then
  FWX_MISSING="fwx module not loadable ($(printf '%s' "$fwx_err" | head -1 | cut -c1-150))"
  echo "run.sh: $FWX_MISSING" >&2
fi
# The await style (fw:spawn) may come later than the callback style.
FWX_AWAIT_MISSING=""
if [ -z "$FWX_MISSING" ] && ! LUA_PATH=$FWX_LUA_PATH LUA_CPATH=$FWX_LUA_CPATH timeout 10 $LUA -e '
    local fw = require("fwx").new{}
    local has = type(fw.spawn) == "function"
    fw:Close()
    os.exit(has and 0 or 1)' >/dev/null 2>&1; then
  FWX_AWAIT_MISSING="await style not in the fwx module yet (no fw:spawn)"
fi
# The core pump (fw:Pump) behind fwx_pump_proxy.lua.
FWX_PUMP_MISSING=""
if [ -z "$FWX_MISSING" ] && ! LUA_PATH=$FWX_LUA_PATH LUA_CPATH=$FWX_LUA_CPATH timeout 10 $LUA -e '
    local fw = require("fwx").new{}
    local has = type(fw.Pump) == "function"
    fw:Close()
    os.exit(has and 0 or 1)' >/dev/null 2>&1; then
  FWX_PUMP_MISSING="core pump not in the fwx module yet (no fw:Pump)"
fi

# ----------------------------------------------------------------- workloads
# name|group|loadgen or dispatch arguments|description
WORKLOADS=(
  "pp_c1_m64|echo|pingpong 1 64|echo ping-pong, 1 connection, 64 B messages (unloaded latency)"
  "pp_c1_m4096|echo|pingpong 1 4096|echo ping-pong, 1 connection, 4096 B messages"
  "pp_c50_m64|echo|pingpong 50 64|echo ping-pong, 50 connections, 64 B messages"
  "pp_c50_m4096|echo|pingpong 50 4096|echo ping-pong, 50 connections, 4096 B messages"
  "pp_c500_m64|echo|pingpong 500 64|echo ping-pong, 500 connections, 64 B messages"
  "pp_c500_m4096|echo|pingpong 500 4096|echo ping-pong, 500 connections, 4096 B messages"
  "bulk|echo|bulk|echo bulk: one connection sends 64 KiB chunks flat out, MB/s echoed back"
  "connrate|echo|connrate $CONNRATE_C|connection rate: connect, 64 B, echo, close; $CONNRATE_C in parallel"
  "idle|echo|idle $IDLE_CONNS|idle memory: $IDLE_CONNS idle connections held, server RSS growth per connection"
  "proxy_pp_c50_m64|proxy|pingpong 50 64|proxy to a C echo server, ping-pong, 50 connections, 64 B"
  "proxy_bulk|proxy|bulksend|proxy to a sink, one direction: 64 KiB chunks flat out, MB/s"
  "dispatch_chain|dispatch|chain|dispatch: notifications per CPU second, each one starts the next"
  "dispatch_batch|dispatch|batch|dispatch: notifications per CPU second, 1000 started at once"
)
# Run once, after the repetitions: instruction counts are the same from run to run.
IR_WORKLOADS=(
  "ir_pp_c50_m64|ir_echo|pingpong 50 64|instructions per echoed message, 50 connections, 64 B"
  "ir_proxy_pp_c50_m64|ir_proxy|pingpong 50 64|instructions per proxied message, 50 connections, 64 B"
  "ir_dispatch_chain|ir_dispatch|chain|instructions per notification, each one starts the next"
)

# Servers of each group; the first one is the baseline the ratios divide by.
group_servers() {
  case $1 in
    echo) echo "c luv fwx fwx_await" ;;
    proxy) echo "c luv fwx fwx_pump fwx_filter fwx_host fwx_host_lua fwx_host_t2 fwx_host_sdk" ;;
    dispatch) echo "c luv fwx_post fwx_timer fwx_message" ;;
    # luv first: its ratio is the one that says something. The C servers spend
    # almost all their time in the kernel, which callgrind does not count.
    ir_echo) echo "luv c fwx fwx_await fwx_await_to" ;;
    ir_proxy) echo "luv c fwx fwx_filter fwx_host_lua fwx_host_t2 fwx_host_sdk fwx_host_chain" ;;
    ir_dispatch) echo "luv c fwx_post fwx_timer" ;;
  esac
}

# Why a server cannot run at all (empty: it can).
missing_reason() {
  local group=$1 name=$2
  case $name in
    fwx_await|fwx_await_to)
      if [ -n "$FWX_MISSING" ]; then echo "$FWX_MISSING"; return; fi
      [ -n "$FWX_AWAIT_MISSING" ] && echo "$FWX_AWAIT_MISSING"
      return ;;
    fwx_pump|fwx_filter|fwx_host)
      if [ -n "$FWX_MISSING" ]; then echo "$FWX_MISSING"; return; fi
      [ -n "$FWX_PUMP_MISSING" ] && echo "$FWX_PUMP_MISSING"
      return ;;
    fwx*)
      [ -n "$FWX_MISSING" ] && echo "$FWX_MISSING"
      return ;;
  esac
}

# server_cmd GROUP NAME [ARG]: sets CMD to the command line of a server (echo,
# proxy: ARG is the upstream port) or of a dispatch program (ARG is the variant).
# An array, so that LUA_PATH's '?' and ';' reach Lua untouched.
CMD=()
server_cmd() {
  local group=$1 name=$2 arg=${3:-}
  local fwx_env=(env "LUA_PATH=$FWX_LUA_PATH" "LUA_CPATH=$FWX_LUA_CPATH" "$LUA")
  case $group:$name in
    echo:c) CMD=("$BDIR/c_echo" 0) ;;
    echo:luv) CMD=("$LUA" bench/luv_echo.lua 0) ;;
    echo:fwx) CMD=("${fwx_env[@]}" bench/fwx_echo.lua 0) ;;
    echo:fwx_await) CMD=("${fwx_env[@]}" bench/fwx_echo_await.lua 0) ;;
    # instruction counts only: s:settimeout(30000) on every connection
    echo:fwx_await_to) CMD=("${fwx_env[@]}" bench/fwx_echo_await.lua 0 30000) ;;
    proxy:c) CMD=("$BDIR/c_proxy" 0 127.0.0.1 "$arg") ;;
    proxy:luv) CMD=("$LUA" bench/luv_proxy.lua 0 127.0.0.1 "$arg") ;;
    proxy:fwx) CMD=("${fwx_env[@]}" bench/fwx_proxy.lua 0 127.0.0.1 "$arg") ;;
    proxy:fwx_pump) CMD=("${fwx_env[@]}" bench/fwx_pump_proxy.lua 0 127.0.0.1 "$arg") ;;
    proxy:fwx_filter) CMD=("${fwx_env[@]}" bench/fwx_pump_proxy.lua 0 127.0.0.1 "$arg" filter) ;;
    proxy:fwx_host) CMD=("${fwx_env[@]}" bench/fwx_host_proxy.lua none 0 127.0.0.1 "$arg") ;;
    proxy:fwx_host_lua) CMD=("${fwx_env[@]}" bench/fwx_host_proxy.lua lua 0 127.0.0.1 "$arg") ;;
    # Both workers' threads run on the server's one CPU, as every server here does.
    proxy:fwx_host_t2) CMD=("${fwx_env[@]}" bench/fwx_host_proxy.lua lua_t2 0 127.0.0.1 "$arg") ;;
    proxy:fwx_host_sdk) CMD=("${fwx_env[@]}" bench/fwx_host_proxy.lua sdk 0 127.0.0.1 "$arg") ;;
    proxy:fwx_host_chain) CMD=("${fwx_env[@]}" bench/fwx_host_proxy.lua chain 0 127.0.0.1 "$arg") ;;
    upstream:c) CMD=("$BDIR/c_echo" 0) ;;
    upstream:sink) CMD=("$BDIR/loadgen" -t "$SERVER_LIMIT" sink 127.0.0.1 0) ;;
    dispatch:c) CMD=("$BDIR/dispatch_c" "$arg" "$DISPATCH_SECONDS") ;;
    dispatch:luv) CMD=("$LUA" bench/dispatch_luv.lua "$arg" "$DISPATCH_SECONDS") ;;
    dispatch:fwx_post) CMD=("${fwx_env[@]}" bench/dispatch_fwx.lua "post_$arg" "$DISPATCH_SECONDS") ;;
    dispatch:fwx_timer) CMD=("${fwx_env[@]}" bench/dispatch_fwx.lua "timer_$arg" "$DISPATCH_SECONDS") ;;
    dispatch:fwx_message) CMD=("${fwx_env[@]}" bench/dispatch_fwx.lua "message_$arg" "$DISPATCH_SECONDS") ;;
    *) CMD=() ;;
  esac
}

# ir_cmd GROUP NAME [ARG] OUTFILE: sets CMD to server_cmd's command for the group
# under callgrind. valgrind goes after env, which would exec out of its reach.
ir_cmd() {
  local group=${1#ir_} name=$2 arg=$3 outfile=$4 i
  local vg=(valgrind -q --tool=callgrind "--callgrind-out-file=$outfile")
  server_cmd "$group" "$name" "$arg"
  [ ${#CMD[@]} -eq 0 ] && return
  if [ "${CMD[0]}" = env ]; then
    for ((i = 1; i < ${#CMD[@]}; i++)); do [[ ${CMD[i]} == *=* ]] || break; done
    CMD=("${CMD[@]:0:i}" "${vg[@]}" "${CMD[@]:i}")
  else
    CMD=("${vg[@]}" "${CMD[@]}")
  fi
}

selected_workload() {
  local pat
  [ -z "$ONLY" ] && return 0
  for pat in $ONLY; do
    # shellcheck disable=SC2053
    [[ $1 == $pat ]] && return 0
  done
  return 1
}

selected_server() {
  [ "$1" = c ] && return 0
  [ -z "$ONLY_SERVERS" ] && return 0
  [[ " $ONLY_SERVERS " == *" $1 "* ]]
}

# The RESULT keys recorded for each kind of run.
metric_keys() {
  case $1 in
    pingpong) echo "msgs_per_s cpu_us_per_msg p50_us p99_us errors" ;;
    bulk | bulksend) echo "mb_per_s cpu_us_per_mb errors" ;;
    connrate) echo "conns_per_s cpu_us_per_conn errors" ;;
    idle) echo "rss_per_conn_b rss_before_kb rss_after_kb lost" ;;
    dispatch) echo "notif_per_s" ;;
  esac
}

# ------------------------------------------------------------------- recording
echo "rep,workload,server,status,metric,value" > "$CSV_TMP"
csv_clean() { printf '%s' "$*" | tr ',\n"' ';  ' | cut -c1-200; }
record_status() {  # rep workload server status reason
  echo "$1,$2,$3,$4,reason,$(csv_clean "$5")" >> "$CSV_TMP"
  echo "  $2 $3: $4: $5" >&2
}
# Turns a RESULT line into rows; only the keys listed for the kind are kept.
record_result() {  # rep workload server kind "RESULT ..."
  local rep=$1 wl=$2 srv=$3 kind=$4 line=$5 kv key val want
  for kv in $line; do
    key=${kv%%=*}
    val=${kv#*=}
    for want in $(metric_keys "$kind"); do
      if [ "$key" = "$want" ] && [ "$val" != NA ]; then
        echo "$rep,$wl,$srv,ok,$key,$val" >> "$CSV_TMP"
      fi
    done
  done
}

# The first line of a program's stderr: a Lua error message comes before its
# traceback, a C program prints one line.
first_error() { head -n 1 "$1" 2>/dev/null | cut -c1-300; }

# --------------------------------------------------------------- server control
SRV_WRAP=""   # the timeout wrapper
SRV_PID=""    # the server itself (what the load generator samples)
SRV_PORT=""
SRV_ERR=""

# start_server TAG CPU: runs CMD (see server_cmd) pinned to CPU under a time limit
# and waits for its "PORT n" line. Returns 1 with SRV_ERR set when it does not come up.
start_server() {
  local tag=$1 cpu=$2 i child
  local out=$LOGDIR/$tag.out err=$LOGDIR/$tag.err
  SRV_PORT="" SRV_PID="" SRV_ERR=""
  timeout -k 2 "$SERVER_LIMIT" taskset -c "$cpu" "${CMD[@]}" >"$out" 2>"$err" </dev/null &
  SRV_WRAP=$!
  track "$SRV_WRAP"
  for i in $(seq 100); do
    SRV_PORT=$(awk '/^PORT [0-9]+$/ { print $2; exit }' "$out" 2>/dev/null)
    [ -n "$SRV_PORT" ] && break
    alive "$SRV_WRAP" || break
    sleep 0.1
  done
  # timeout forks the server and taskset execs it: the wrapper's only child is it.
  child=$(cat "/proc/$SRV_WRAP/task/$SRV_WRAP/children" 2>/dev/null)
  SRV_PID=${child%% *}
  [ -n "$SRV_PID" ] && track "$SRV_PID"
  if [ -z "$SRV_PORT" ] || [ -z "$SRV_PID" ] || ! alive "$SRV_PID"; then
    if alive "$SRV_WRAP"; then
      SRV_ERR="no PORT line within 10 s"
    else
      SRV_ERR="exited at start"
    fi
    SRV_ERR="$SRV_ERR: $(first_error "$err")"
    stop_pid "$SRV_WRAP"
    [ -n "$SRV_PID" ] && untrack "$SRV_PID"
    return 1
  fi
  return 0
}

# stop_server WRAP PID: true if the server was still running (did not crash).
stop_server() {
  local wrap=$1 pid=$2 ok=0
  alive "$pid" || ok=1
  stop_pid "$wrap"   # timeout passes the TERM on to the server
  # The wrapper has reaped the server unless the wrapper itself had to be KILLed.
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  untrack "$pid"
  return $ok
}

# run_loadgen OUT ARGS...: the load generator pinned to its CPU, bounded in time.
run_loadgen() {
  local out=$1 pid
  shift
  timeout -k 2 "$RUN_LIMIT" taskset -c "$LOADGEN_CPU" "$BDIR/loadgen" "$@" >"$out" 2>>"$out.err" </dev/null &
  pid=$!
  track "$pid"
  wait "$pid"
  local rc=$?
  untrack "$pid"
  return $rc
}

# ------------------------------------------------------------------ one run
# run_one REP WORKLOAD GROUP ARGS SERVER
run_one() {
  local rep=$1 wl=$2 group=$3 args=$4 srv=$5
  local tag="r${rep}_${wl}_${srv}" reason line out kind up_wrap="" up_pid="" up_port=""
  out=$LOGDIR/$tag.result
  reason=$(missing_reason "$group" "$srv")
  if [ -n "$reason" ]; then
    record_status "$rep" "$wl" "$srv" missing "$reason"
    return
  fi

  if [ "$group" = dispatch ]; then
    # No server: the program itself is measured, on the server's CPU.
    server_cmd dispatch "$srv" "$args"
    timeout -k 2 "$RUN_LIMIT" taskset -c "$SERVER_CPU" "${CMD[@]}" >"$out" 2>"$out.err" </dev/null &
    local pid=$!
    track "$pid"
    wait "$pid"
    local rc=$?
    untrack "$pid"
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
      record_status "$rep" "$wl" "$srv" failed "exit $rc: $(first_error "$out.err")"
      return
    fi
    record_result "$rep" "$wl" "$srv" dispatch "$line"
    echo "  $wl $srv: ${line#RESULT }" >&2
    return
  fi

  if [ "$group" = proxy ]; then
    # The upstream (an echo server, or a sink for one-way bulk) shares the load
    # generator's CPU, so that the proxy under test has its CPU to itself.
    case $args in
      bulksend*) server_cmd upstream sink ;;
      *) server_cmd upstream c ;;
    esac
    if ! start_server "${tag}_upstream" "$LOADGEN_CPU"; then
      record_status "$rep" "$wl" "$srv" failed "upstream $SRV_ERR"
      return
    fi
    up_wrap=$SRV_WRAP up_pid=$SRV_PID up_port=$SRV_PORT
  fi

  server_cmd "$group" "$srv" "$up_port"
  if ! start_server "$tag" "$SERVER_CPU"; then
    record_status "$rep" "$wl" "$srv" failed "$SRV_ERR"
    [ -n "$up_wrap" ] && stop_server "$up_wrap" "$up_pid"
    return
  fi
  local wrap=$SRV_WRAP spid=$SRV_PID port=$SRV_PORT
  # shellcheck disable=SC2086
  set -- $args
  kind=$1
  shift
  local rc=0
  if [ "$kind" = idle ]; then
    # The load generator prints RESULT and "ready" once every connection is echoed
    # and the server's RSS is sampled; it holds them until we signal it.
    timeout -k 2 $((IDLE_HOLD + 60)) taskset -c "$LOADGEN_CPU" "$BDIR/loadgen" -p "$spid" \
      -t "$IDLE_HOLD" idle 127.0.0.1 "$port" "$@" >"$out" 2>"$out.err" </dev/null &
    local lg=$!
    track "$lg"
    local i
    for i in $(seq $((IDLE_HOLD * 10))); do
      grep -q '^ready$' "$out" 2>/dev/null && break
      alive "$lg" || break
      sleep 0.1
    done
    stop_pid "$lg"
  else
    run_loadgen "$out" -p "$spid" -w "$WARMUP" "$kind" 127.0.0.1 "$port" "$@" \
      "$SECONDS_PER_RUN" || rc=$?
  fi
  local crashed=""
  stop_server "$wrap" "$spid" ||
    crashed="server exited during the run, $(describe_status "$STOP_STATUS"): $(first_error "$LOGDIR/$tag.err")"
  [ -n "$up_wrap" ] && stop_server "$up_wrap" "$up_pid"

  line=$(grep '^RESULT ' "$out" | tail -n 1)
  if [ -n "$crashed" ]; then
    record_status "$rep" "$wl" "$srv" failed "$crashed"
  elif [ -z "$line" ] || [ $rc -ne 0 ] || [[ $line == *" error="* ]]; then
    record_status "$rep" "$wl" "$srv" failed \
      "load generator: exit $rc ${line#RESULT } $(first_error "$out.err")"
  else
    record_result "$rep" "$wl" "$srv" "$kind" "$line"
    echo "  $wl $srv: ${line#RESULT }" >&2
  fi
}

# ------------------------------------------------------- instruction counts
# ir_run WORKLOAD GROUP ARGS SERVER SECONDS TAG: one run under callgrind; sets IR_OUT
# to "INSTRUCTIONS OPERATIONS", or returns 1 with IR_ERR set. Not in a subshell: the
# processes it starts must be in this shell's PIDS for the clean-up.
IR_ERR=""
IR_OUT=""
ir_run() {
  local wl=$1 group=$2 args=$3 srv=$4 secs=$5 tag=$6 line ops total
  local cg=$LOGDIR/$tag.callgrind out=$LOGDIR/$tag.result up_wrap="" up_pid="" up_port=""
  IR_ERR="" IR_OUT=""
  if [ "$group" = ir_dispatch ]; then
    # The dispatch programs run for this much CPU time, which callgrind stretches.
    local saved=$DISPATCH_SECONDS pid rc
    DISPATCH_SECONDS=$secs
    ir_cmd "$group" "$srv" "$args" "$cg"
    DISPATCH_SECONDS=$saved
    timeout -k 2 $((RUN_LIMIT + 120)) taskset -c "$SERVER_CPU" "${CMD[@]}" >"$out" 2>"$out.err" </dev/null &
    pid=$!
    track "$pid"
    wait "$pid"
    rc=$?
    untrack "$pid"
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    ops=$(printf '%s' "$line" | sed -n 's/.* notifs=\([0-9]*\).*/\1/p')
    if [ $rc -ne 0 ] || [ -z "$ops" ]; then
      IR_ERR="exit $rc: $(first_error "$out.err")"
      return 1
    fi
  else
    if [ "$group" = ir_proxy ]; then
      server_cmd upstream c
      if ! start_server "${tag}_upstream" "$LOADGEN_CPU"; then
        IR_ERR="upstream $SRV_ERR"
        return 1
      fi
      up_wrap=$SRV_WRAP up_pid=$SRV_PID up_port=$SRV_PORT
    fi
    ir_cmd "$group" "$srv" "$up_port" "$cg"
    if ! start_server "$tag" "$SERVER_CPU"; then
      IR_ERR=$SRV_ERR
      [ -n "$up_wrap" ] && stop_server "$up_wrap" "$up_pid"
      return 1
    fi
    local wrap=$SRV_WRAP spid=$SRV_PID port=$SRV_PORT rc=0 kind
    # shellcheck disable=SC2086
    set -- $args
    kind=$1
    shift
    run_loadgen "$out" -w 0 "$kind" 127.0.0.1 "$port" "$@" "$secs"
    rc=$?
    stop_server "$wrap" "$spid"
    [ -n "$up_wrap" ] && stop_server "$up_wrap" "$up_pid"
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    ops=$(printf '%s' "$line" | sed -n 's/.* msgs=\([0-9]*\).*/\1/p')
    if [ $rc -ne 0 ] || [ -z "$ops" ] || [[ $line == *" error="* ]]; then
      IR_ERR="load generator: exit $rc ${line#RESULT } $(first_error "$out.err")"
      return 1
    fi
  fi
  total=$(awk '/^summary:/ { print $2; exit }' "$cg" 2>/dev/null)
  if [ -z "$total" ]; then
    IR_ERR="no callgrind summary: $(first_error "$LOGDIR/$tag.err")"
    return 1
  fi
  IR_OUT="$total $ops"
}

# ir_one WORKLOAD GROUP ARGS SERVER: instructions per operation from a run and one
# twice as long: (I2 - I1) / (N2 - N1), so that what start-up and shutdown cost,
# the same in both, cancels. Recorded as repetition 1. A pair whose operation counts
# are too close to subtract (the machine stalled the longer run: it happened to the
# await echo once in a full run) is measured again, up to IR_ATTEMPTS pairs in all.
IR_ATTEMPTS=3
ir_one() {
  local wl=$1 group=$2 args=$3 srv=$4 a b reason per attempt
  reason=$(missing_reason "${group#ir_}" "$srv")
  if [ -n "$reason" ]; then
    record_status 1 "$wl" "$srv" missing "$reason"
    return
  fi
  for ((attempt = 1; attempt <= IR_ATTEMPTS; attempt++)); do
    if ! ir_run "$wl" "$group" "$args" "$srv" "$IR_SECONDS" "ir_${wl}_${srv}_1"; then
      record_status 1 "$wl" "$srv" failed "callgrind run: $IR_ERR"
      return
    fi
    a=$IR_OUT
    if ! ir_run "$wl" "$group" "$args" "$srv" $((IR_SECONDS * 2)) "ir_${wl}_${srv}_2"; then
      record_status 1 "$wl" "$srv" failed "callgrind run: $IR_ERR"
      return
    fi
    b=$IR_OUT
    if per=$(awk -v a="$a" -v b="$b" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      if (y[2] - x[2] < 0.2 * y[2] || y[1] <= x[1]) exit 1
      printf "%.0f", (y[1] - x[1]) / (y[2] - x[2]) }'); then
      echo "1,$wl,$srv,ok,ir_per_op,$per" >> "$CSV_TMP"
      echo "  $wl $srv: $per instructions per operation ($a / $b)" >&2
      return
    fi
    echo "  $wl $srv: runs too alike to subtract ($a / $b), attempt $attempt of $IR_ATTEMPTS" >&2
  done
  record_status 1 "$wl" "$srv" failed "runs too alike to subtract, $IR_ATTEMPTS times: last $a / $b"
}

# --------------------------------------------------------------------- main
START=$(date +%s)
echo "run.sh: reps=$REPS seconds=$SECONDS_PER_RUN warmup=$WARMUP idle=$IDLE_CONNS" \
  "dispatch_seconds=$DISPATCH_SECONDS server_cpu=$SERVER_CPU loadgen_cpu=$LOADGEN_CPU" >&2
for rep in $(seq "$REPS"); do
  echo "run.sh: repetition $rep of $REPS" >&2
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r wl group args _ <<<"$w"
    selected_workload "$wl" || continue
    # Interleave: odd repetitions run the servers in order, even ones in reverse, so
    # a slow drift of the machine does not always favour the same server.
    servers=()
    for s in $(group_servers "$group"); do selected_server "$s" && servers+=("$s"); done
    if [ $((rep % 2)) -eq 0 ]; then
      rev=()
      for ((i = ${#servers[@]} - 1; i >= 0; i--)); do rev+=("${servers[i]}"); done
      servers=("${rev[@]}")
    fi
    for s in "${servers[@]}"; do run_one "$rep" "$wl" "$group" "$args" "$s"; done
  done
done
if [ "$IR" != 0 ]; then
  echo "run.sh: instruction counts (callgrind)" >&2
  VG_MISSING=""
  command -v valgrind >/dev/null 2>&1 || VG_MISSING="valgrind not installed (apt-get install valgrind)"
  for w in "${IR_WORKLOADS[@]}"; do
    IFS='|' read -r wl group args _ <<<"$w"
    selected_workload "$wl" || continue
    for s in $(group_servers "$group"); do
      selected_server "$s" || [ "$s" = luv ] || continue
      if [ -n "$VG_MISSING" ]; then
        record_status 1 "$wl" "$s" missing "$VG_MISSING"
      else
        ir_one "$wl" "$group" "$args" "$s"
      fi
    done
  done
fi
ELAPSED=$(($(date +%s) - START))
mv "$CSV_TMP" "$CSV"

# ------------------------------------------------------------------ analysis
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "ncpu=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "libuv=$(pkg-config --modversion libuv)"
  echo "lua=$($LUA -v 2>&1 | head -1)"
  echo "luv=$($LUA -e 'print(require"luv".version_string())' 2>/dev/null)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "reps=$REPS"
  echo "seconds=$SECONDS_PER_RUN"
  echo "warmup=$WARMUP"
  echo "idle_conns=$IDLE_CONNS"
  echo "dispatch_seconds=$DISPATCH_SECONDS"
  echo "quick=${BENCH_QUICK:-0}"
  echo "elapsed=$ELAPSED"
  echo "server_cpu=$SERVER_CPU"
  echo "loadgen_cpu=$LOADGEN_CPU"
  echo "gnuplot=$(command -v gnuplot || true)"
} > "$BDIR/meta.txt"
{
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r wl group args desc <<<"$w"
    kind=${args%% *}
    case $kind in chain | batch) kind=dispatch ;; esac
    selected_workload "$wl" && echo "$wl|$group|$kind|$(group_servers "$group")|$desc"
  done
  if [ "$IR" != 0 ]; then
    for w in "${IR_WORKLOADS[@]}"; do
      IFS='|' read -r wl group args desc <<<"$w"
      selected_workload "$wl" && echo "$wl|$group|ir|$(group_servers "$group")|$desc"
    done
  fi
} > "$BDIR/workloads.txt"

if ! $LUA bench/analyze.lua "$CSV" "$BDIR/meta.txt" "$BDIR/workloads.txt" \
    bench/RESULTS.md bench/results.png "$BDIR"; then
  echo "run.sh: analysis failed" >&2
  exit 1
fi
echo "run.sh: done in ${ELAPSED}s: bench/RESULTS.md, bench/results.csv, bench/results.png" >&2
