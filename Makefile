# fwx: development, sanitizer, test and install targets.
# Flags come from pkg-config; `make test` and `make run` first install what a fresh
# Debian machine lacks (see deps).

LUA      ?= lua5.4
BUSTED   ?= busted
PKGS     := libuv lua5.4
CC       ?= cc
CSTD     := -std=c99 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
OPT      ?= -O2 -g
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
UV_LIBS    = $(shell pkg-config --libs libuv 2>/dev/null)
CFLAGS_ALL = $(CSTD) $(WARN) $(OPT) -fPIC -fvisibility=hidden $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_ALL = -shared $(UV_LIBS) -lpthread $(EXTRA_LDFLAGS)

BUILD    ?= build
CORE_SRC := $(wildcard csrc/core/*.c)
LUA_SRC  := $(wildcard csrc/lua/*.c)
HDRS     := $(wildcard csrc/core/*.h csrc/lua/*.h)
MODULE   := $(BUILD)/fwx/core.so

LUA_PATH_DEV  := lua/?.lua;lua/?/init.lua;;
LUA_CPATH_DEV := $(BUILD)/?.so;;
BUSTED_ARGS   ?=

.PHONY: all deps test test-gc asan tsan valgrind run install clean bench

all: $(MODULE)

$(MODULE): $(CORE_SRC) $(LUA_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Icsrc/core -o $@ $(CORE_SRC) $(LUA_SRC) $(LDFLAGS_ALL)

# Install the system packages a fresh Debian machine lacks (as root, or through sudo).
deps:
	@sh tools/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	LUA_PATH='$(LUA_PATH_DEV)' LUA_CPATH='$(LUA_CPATH_DEV)' $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS) spec

# The same specs with a GC step forced on every notification, in generational mode.
test-gc: all
	FWX_TEST_GC=1 LUA_PATH='$(LUA_PATH_DEV)' LUA_CPATH='$(LUA_CPATH_DEV)' $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS) spec

# ASan+UBSan build of the module; lua5.4 itself is not instrumented, so the runtime
# is preloaded.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT='-O1 -g -fno-omit-frame-pointer' \
	  EXTRA_CFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=undefined' \
	  EXTRA_LDFLAGS='-fsanitize=address,undefined' all
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LUA_PATH='$(LUA_PATH_DEV)' LUA_CPATH='build-asan/?.so;;' $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS) spec

valgrind: all
	LUA_PATH='$(LUA_PATH_DEV)' LUA_CPATH='$(LUA_CPATH_DEV)' valgrind --error-exitcode=99 \
	  --leak-check=full --errors-for-leak-kinds=definite --track-fds=no -q \
	  $(LUA) -e 'package.path="lua/?.lua;lua/?/init.lua;"..package.path' tools/valgrind.lua

run: deps
	@$(MAKE) --no-print-directory all
	LUA_PATH='$(LUA_PATH_DEV)' LUA_CPATH='$(LUA_CPATH_DEV)' $(LUA) examples/echo.lua

install: all
	luarocks --lua-version=5.4 make rockspec/fwx-scm-1.rockspec

bench: all
	@sh bench/run.sh

clean:
	rm -rf build build-asan build-tsan
