# fwx: build, test, sanitizer, install and run targets.
# Flags come from pkg-config. `make test` and `make run` first install what a fresh
# Debian machine lacks (tools/deps.sh).

LUA      ?= lua5.4
PKGS     := libuv lua5.4
CC       ?= cc
CSTD     := -std=c99 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror
OPT      ?= -O2 -g
PKG_CFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
UV_LIBS     = $(shell pkg-config --libs libuv 2>/dev/null)
CFLAGS_ALL  = $(CSTD) $(WARN) $(OPT) -fPIC -fvisibility=hidden $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL = -shared $(UV_LIBS) -lpthread $(EXTRA_LDFLAGS)

BUILD    ?= build
CORE_SRC := $(wildcard csrc/core/*.c)
LUA_SRC  := $(wildcard csrc/lua/*.c)
HDRS     := $(wildcard csrc/core/*.h csrc/lua/*.h)
MODULE   := $(BUILD)/fwx/core.so

DEV_ENV  := LUA_PATH='lua/?.lua;lua/?/init.lua;./?.lua;;' LUA_CPATH='$(BUILD)/?.so;;'
SAN_PRELOAD = LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)"
BUSTED_ARGS ?=

.PHONY: all deps test asan tsan valgrind run install clean bench

all: $(MODULE)

$(MODULE): $(CORE_SRC) $(LUA_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Icsrc/core -o $@ $(CORE_SRC) $(LUA_SRC) $(LDFLAGS_ALL)

# Install the Debian packages a fresh machine lacks (as root, or through sudo).
deps:
	@sh tools/deps.sh

# The specs, twice: as they are, and with a GC step after every notification.
test: deps
	@$(MAKE) --no-print-directory all
	@sh tools/test.sh $(BUILD) $(BUSTED_ARGS)

# ASan+UBSan build of the module, the specs run against it. lua5.4 itself is not
# instrumented, so the sanitizer runtimes are preloaded.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT='-O1 -g -fno-omit-frame-pointer' \
	  EXTRA_CFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=undefined' \
	  EXTRA_LDFLAGS='-fsanitize=address,undefined' all
	$(SAN_PRELOAD) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 FWX_SANITIZED=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  sh tools/test.sh build-asan $(BUSTED_ARGS)

# ThreadSanitizer: the module and an interpreter with the runtime linked in, the specs
# (libuv's pool threads run look-ups and file requests beside the loop thread).
tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT='-O1 -g' \
	  EXTRA_CFLAGS='-fsanitize=thread' EXTRA_LDFLAGS='-fsanitize=thread' all
	$(CC) -O1 -g -fsanitize=thread $(PKG_CFLAGS) -o build-tsan/lua-san tools/lua-san.c \
	  $$(pkg-config --libs lua5.4)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 FWX_SANITIZED=1 \
	  LUA_RUNNER=$(CURDIR)/build-tsan/lua-san sh tools/test.sh build-tsan $(BUSTED_ARGS)

# The specs under valgrind's memcheck (slow: one pass, no GC pass).
valgrind: deps
	@$(MAKE) --no-print-directory all
	$(DEV_ENV) FWX_SANITIZED=1 FWX_ALLOC_CACHE=0 FWX_SPEC_TIMEOUT_MS=60000 valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  -q $(LUA) $$(command -v busted) $(BUSTED_ARGS) spec

# The host with the default filter: 127.0.0.1:7000 forwarded to an echo server on
# 127.0.0.1:7001 (examples/echo.lua, started here and stopped with the host).
run: deps
	@$(MAKE) --no-print-directory all
	@$(DEV_ENV) $(LUA) examples/echo.lua 7001 >/dev/null & up=$$!; \
	  trap 'kill $$up 2>/dev/null' EXIT INT TERM; \
	  echo "fwx: the host forwards 127.0.0.1:7000 to an echo server on 127.0.0.1:7001; try:  nc 127.0.0.1 7000"; \
	  $(DEV_ENV) $(LUA) bin/fwx run examples/filters/default.lua $(ARGS)

install: all
	luarocks --lua-version=5.4 make rockspec/fwx-scm-1.rockspec

bench: all
	@sh tools/deps.sh gnuplot-nox valgrind
	@sh bench/run.sh

clean:
	rm -rf build build-asan build-tsan
