/* fwx.c: luaopen_fwx_core, the binding's only export, and the helpers every class
 * uses to register itself. */
#include "lfwx.h"
#include <ctype.h>
#include <string.h>

const char lfwx_service_name[] = "fwx.service";
const char lfwx_socket_name[] = "fwx.socket";
const char lfwx_buffer_name[] = "fwx.buffer";
const char lfwx_address_name[] = "fwx.address";
const char lfwx_overlapped_name[] = "fwx.overlapped";
const char lfwx_handle_name[] = "fwx.handle";
const char lfwx_timer_name[] = "fwx.timer";

/* A metatable named `name` whose __index is a table of `methods`, kept in the
 * registry under the name (for __name and luaL_checkudata users) and under the name's
 * address (for lfwx_checkudata). */
void lfwx_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta) {
  luaL_newmetatable(L, name);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, name);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

static void snake_case(const char *in, char *out, size_t size) {
  size_t n = 0;
  const char *p;
  for (p = in; *p != '\0' && n + 2 < size; p++) {
    unsigned char c = (unsigned char)*p;
    if (isupper(c)) {
      if (p != in && (islower((unsigned char)p[-1]) || isdigit((unsigned char)p[-1])))
        out[n++] = '_';
      out[n++] = (char)tolower(c);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = '\0';
}

/* Give every PascalCase method of the table at methods_idx its snake_case alias,
 * except the names in skip (the asynchronous operations, whose lowercase names are
 * the await style's). */
void lfwx_alias_snake(lua_State *L, int methods_idx, const char *const *skip) {
  char alias[64];
  const char *const *s;
  methods_idx = lua_absindex(L, methods_idx);
  lua_newtable(L); /* collect first: no insertion while traversing */
  lua_pushnil(L);
  while (lua_next(L, methods_idx) != 0) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int skipped = 0;
    if (name != NULL && isupper((unsigned char)name[0])) {
      for (s = skip; s != NULL && *s != NULL; s++)
        if (strcmp(*s, name) == 0) skipped = 1;
      if (!skipped) {
        snake_case(name, alias, sizeof alias);
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, alias);
      }
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, methods_idx);
  }
  lua_pop(L, 1);
}

/* A userdata of `size` zeroed bytes with the class metatable and nuv user values. The
 * object exists, closed, before any resource is acquired (liolib's order), so an error
 * later leaves nothing half built. */
void *lfwx_newobject(lua_State *L, size_t size, const char *name, int nuv) {
  void *p = lua_newuserdatauv(L, size, nuv);
  memset(p, 0, size);
  lua_rawgetp(L, LUA_REGISTRYINDEX, name);
  lua_setmetatable(L, -2);
  return p;
}

void lfwx_pushclass(lua_State *L, const char *name) { lua_rawgetp(L, LUA_REGISTRYINDEX, name); }

void *lfwx_testudata(lua_State *L, int idx, const char *name) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, name);
  if (!lua_rawequal(L, -1, -2)) p = NULL;
  lua_pop(L, 2);
  return p;
}

void *lfwx_checkudata(lua_State *L, int idx, const char *name) {
  void *p = lfwx_testudata(L, idx, name);
  if (p == NULL) luaL_typeerror(L, idx, name);
  return p;
}

static int l_strerror(lua_State *L) {
  int code = (int)luaL_checkinteger(L, 1);
  const char *name = fwx_win32_name(code);
  const char *msg = fwx_win32_message(code);
  if (name == NULL) {
    lua_pushfstring(L, "ERROR_%d", code);
    lua_pushfstring(L, "Win32 error %d", code);
  } else {
    lua_pushstring(L, name);
    lua_pushstring(L, msg);
  }
  return 2;
}

static int l_debug_gc(lua_State *L) {
  lfwx_set_debug_gc(lua_toboolean(L, 1));
  return 0;
}

int lfwx_open_errors(lua_State *L) {
  size_t n, i;
  const fwx_error_info_t *t = fwx_error_table(&n);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, t[i].code);
    lua_setfield(L, -2, t[i].name);
  }
  return 1;
}

__attribute__((visibility("default"))) int luaopen_fwx_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"strerror", l_strerror},
    {"_debug_gc", l_debug_gc},
    {NULL, NULL}
  };
  lfwx_open_buffer(L);
  lfwx_open_address(L);
  lfwx_open_socket(L);
  lfwx_open_overlapped(L);
  lfwx_open_handle(L);
  lfwx_open_timer(L);
  luaL_newlib(L, funcs);
  lfwx_open_service(L); /* pushes the constructor */
  lua_setfield(L, -2, "new");
  lfwx_open_errors(L);
  lua_setfield(L, -2, "errors");
  lua_pushliteral(L, FWX_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  return 1;
}
