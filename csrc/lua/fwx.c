/* fwx.c: luaopen_fwx_core, the binding's only export, and the helpers every class
 * uses to register itself. */
#include "lfwx.h"
#include <ctype.h>
#include <string.h>

const char lfwx_class_tags[LFWX_NCLASSES + 1];

const char *const lfwx_class_names[LFWX_NCLASSES + 1] = {
  NULL, "fwx.service", "fwx.socket", "fwx.buffer", "fwx.address", "fwx.overlapped",
  "fwx.handle", "fwx.timer", "fwx.block", "fwx.link"
};

static void alias_snake(lua_State *L, int methods_idx, const char *const *skip);

lua_Integer lfwx_check_count(lua_State *L, int idx, const char *what) {
  lua_Integer n;
  if (lua_isnoneornil(L, idx)) return 0;
  n = luaL_checkinteger(L, idx);
  if (n < 0) luaL_argerror(L, idx, lua_pushfstring(L, "%s must be 0 or more", what));
  return n;
}

/* luaL_setfuncs with the class metatables as the functions' upvalues. */
void lfwx_setfuncs(lua_State *L, const luaL_Reg *funcs) {
  int i;
  for (i = 1; i <= LFWX_NCLASSES; i++) luaL_getmetatable(L, lfwx_class_names[i]);
  luaL_setfuncs(L, funcs, LFWX_NCLASSES);
}

void lfwx_newclass(lua_State *L, int cls, const luaL_Reg *methods, const luaL_Reg *meta,
                   const char *const *skip) {
  luaL_getmetatable(L, lfwx_class_names[cls]);
  lfwx_setfuncs(L, meta);
  if (methods != NULL) {
    lua_newtable(L);
    lfwx_setfuncs(L, methods);
    alias_snake(L, -1, skip);
    lua_setfield(L, -2, "__index");
  }
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
static void alias_snake(lua_State *L, int methods_idx, const char *const *skip) {
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
void *lfwx_newobject(lua_State *L, size_t size, int cls, int nuv) {
  void *p = lua_newuserdatauv(L, size, nuv);
  memset(p, 0, size);
  *(const void **)p = &lfwx_class_tags[cls];
  lua_pushvalue(L, lua_upvalueindex(cls));
  lua_setmetatable(L, -2);
  return p;
}

void *lfwx_typeerror(lua_State *L, int idx, int cls) {
  luaL_typeerror(L, idx, lfwx_class_names[cls]);
  return NULL;
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

/* core._encode(v) and core._decode(s): the serializer, for its specs. */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  return lfwx_encode(L, 1);
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  return lfwx_decode(L, data, len);
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
    {"_pump_use_splice", lfwx_pump_use_splice},
    {"_arena_stats", lfwx_arena_stats},
    {"_polls", lfwx_poll_count},
    {"new", lfwx_service_new},
    {"link_pair", lfwx_link_pair},
    {"_encode", l_encode},
    {"_decode", l_decode},
    {NULL, NULL}
  };
  int i;
  lfwx_open_alloc(L);
  /* All metatables first: every function gets all of them as upvalues. */
  for (i = 1; i <= LFWX_NCLASSES; i++) {
    luaL_newmetatable(L, lfwx_class_names[i]);
    lua_pop(L, 1);
  }
  lfwx_open_buffer(L);
  lfwx_open_received(L);
  lfwx_open_address(L);
  lfwx_open_socket(L);
  lfwx_open_overlapped(L);
  lfwx_open_link(L);
  lfwx_open_handle(L);
  lfwx_open_timer(L);
  lfwx_open_service(L);
  lua_newtable(L);
  lfwx_setfuncs(L, funcs);
  lfwx_open_workers(L);
  /* core.methods: the method tables of the classes, by short name ("socket"), for
   * the Lua side of the module (the await style adds its methods there). */
  lua_newtable(L);
  for (i = 1; i <= LFWX_NCLASSES; i++) {
    const char *name = lfwx_class_names[i], *dot = strchr(name, '.');
    luaL_getmetatable(L, name);
    if (lua_getfield(L, -1, "__index") == LUA_TTABLE)
      lua_setfield(L, -3, dot != NULL ? dot + 1 : name);
    else
      lua_pop(L, 1);
    lua_pop(L, 1);
  }
  lua_setfield(L, -2, "methods");
  lfwx_open_resume(L);
  lfwx_open_errors(L);
  lua_setfield(L, -2, "errors");
  lfwx_open_store(L);
  lua_setfield(L, -2, "store");
  lua_pushliteral(L, FWX_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  return 1;
}
