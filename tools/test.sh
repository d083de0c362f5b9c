#!/bin/sh
# Run the busted specs in two passes: as they are, then with a GC step forced after
# every notification in generational mode (FWX_DEBUG_GC=1), which is how the
# "nothing is collected in flight" promise gets attacked everywhere at once.
# Prints busted's own report, then one line "N passed, N failed" summed over both
# passes (what CI reads); exits non-zero on any failure or error.
#   tools/test.sh CPATH [busted arguments...]
cpath=$1; shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export LUA_PATH='lua/?.lua;lua/?/init.lua;./?.lua;;'
export LUA_CPATH="$cpath/?.so;;"
export FWX_BUILD_UNDER_TEST="$cpath"
status=0
for gc in 0 1; do
  [ "$gc" = 1 ] && echo "== again, with a GC step after every notification (FWX_DEBUG_GC=1)"
  # Each pass is bounded: a hang fails the run instead of stalling CI.
  if [ -n "${LUA_RUNNER:-}" ]; then
    # An interpreter of our own (make tsan): busted runs inside it.
    FWX_DEBUG_GC=$gc timeout 900 "$LUA_RUNNER" "$(command -v busted)" --cpath="$cpath/?.so" "$@" spec >"$log" 2>&1 || status=1
  else
    FWX_DEBUG_GC=$gc timeout 900 ${BUSTED:-busted} --lua=${LUA:-lua5.4} --cpath="$cpath/?.so" "$@" spec >"$log" 2>&1 || status=1
  fi
  cat "$log"
  grep -E '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1 >>"$log.sum" \
    || { echo "busted printed no summary (crashed or timed out)"; echo "0 successes / 1 failures / 0 errors / 0 pending" >>"$log.sum"; status=1; }
done
awk '{ p += $1; f += $4 + $7 } END { printf "%d passed, %d failed\n", p, f; exit (f > 0) }' "$log.sum" || status=1
rm -f "$log.sum"
exit $status
