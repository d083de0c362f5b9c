#!/bin/sh
# Install the Debian packages fwx needs, if any is missing. Used by `make test`/`make run`;
# `make bench` names the ones it needs besides (tools/deps.sh gnuplot-nox valgrind).
set -e
need=""
for p in lua5.4 liblua5.4-dev libuv1-dev lua-busted luarocks pkg-config lua-luv netcat-openbsd curl "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "fwx: installing missing packages:$need"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "fwx: cannot install packages (not root, no sudo). Run as root:" >&2
  echo "  apt-get update && apt-get install -y$need" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq$need
