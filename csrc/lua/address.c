/* address.c: the "fwx.address" class: .ip, .port, .family, tostring "1.2.3.4:80" or
 * "[::1]:80", and == by value. Also the parsing of (host, port) arguments. */
#include "lfwx.h"
#include <netinet/in.h>
#include <string.h>

/* An IPv4 or IPv6 socket address and nothing more: every accept makes two of these,
 * so a sockaddr_storage (128 bytes) would more than double their garbage. */
typedef union lfwx_sockaddr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} lfwx_sockaddr_t;

typedef struct lfwx_address { LFWX_TAG; lfwx_sockaddr_t ss; } lfwx_address_t;

void lfwx_push_address(lua_State *L, const struct sockaddr *sa) {
  lfwx_address_t *a = lfwx_newobject(L, sizeof *a, LFWX_ADDRESS, 0);
  memset(&a->ss, 0, sizeof a->ss);
  memcpy(&a->ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in));
}

static int port_of(const lfwx_address_t *a) {
  if (a->ss.sa.sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
  return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

static void ip_of(const lfwx_address_t *a, char *buf, size_t size) {
  buf[0] = '\0';
  if (a->ss.sa.sa_family == AF_INET6)
    uv_ip6_name((const struct sockaddr_in6 *)&a->ss, buf, size);
  else
    uv_ip4_name((const struct sockaddr_in *)&a->ss, buf, size);
}

static int l_index(lua_State *L) {
  lfwx_address_t *a = lfwx_checkudata(L, 1, LFWX_ADDRESS);
  const char *k = luaL_checkstring(L, 2);
  char ip[64];
  if (strcmp(k, "ip") == 0) {
    ip_of(a, ip, sizeof ip);
    lua_pushstring(L, ip);
  } else if (strcmp(k, "port") == 0) {
    lua_pushinteger(L, port_of(a));
  } else if (strcmp(k, "family") == 0) {
    lua_pushstring(L, a->ss.sa.sa_family == AF_INET6 ? "inet6" : "inet");
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int l_tostring(lua_State *L) {
  lfwx_address_t *a = lfwx_checkudata(L, 1, LFWX_ADDRESS);
  char ip[64];
  ip_of(a, ip, sizeof ip);
  if (a->ss.sa.sa_family == AF_INET6)
    lua_pushfstring(L, "[%s]:%d", ip, port_of(a));
  else
    lua_pushfstring(L, "%s:%d", ip, port_of(a));
  return 1;
}

static int l_eq(lua_State *L) {
  lfwx_address_t *a = lfwx_checkudata(L, 1, LFWX_ADDRESS);
  lfwx_address_t *b = lfwx_checkudata(L, 2, LFWX_ADDRESS);
  char ia[64], ib[64];
  ip_of(a, ia, sizeof ia);
  ip_of(b, ib, sizeof ib);
  lua_pushboolean(L, a->ss.sa.sa_family == b->ss.sa.sa_family && port_of(a) == port_of(b) &&
                         strcmp(ia, ib) == 0);
  return 1;
}

/* (host, port) -> sockaddr. Hosts are IP literals ("localhost" is 127.0.0.1; "*" or
 * nil is any IPv4 address): no DNS here, that would block the loop, so names go
 * through GetHostByName first. An address value may stand for both. */
int lfwx_check_sockaddr(lua_State *L, int host_idx, int port_idx,
                        struct sockaddr_storage *out) {
  lfwx_address_t *a = lfwx_testudata(L, host_idx, LFWX_ADDRESS);
  const char *host;
  lua_Integer port;
  memset(out, 0, sizeof *out);
  if (a != NULL) {
    memcpy(out, &a->ss, sizeof a->ss);
    if (lua_isnoneornil(L, port_idx)) return 0;
    port = luaL_checkinteger(L, port_idx);
    luaL_argcheck(L, port >= 0 && port <= 65535, port_idx, "port must be 0 to 65535");
    if (out->ss_family == AF_INET6)
      ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
    else
      ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
    return 0;
  }
  host = lua_isnoneornil(L, host_idx) ? "*" : luaL_checkstring(L, host_idx);
  port = luaL_checkinteger(L, port_idx);
  luaL_argcheck(L, port >= 0 && port <= 65535, port_idx, "port must be 0 to 65535");
  if (strcmp(host, "*") == 0 || host[0] == '\0') host = "0.0.0.0";
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (strchr(host, ':') != NULL) {
    char buf[64];
    size_t n = strlen(host);
    if (host[0] == '[' && n > 2 && n < sizeof buf && host[n - 1] == ']') {
      memcpy(buf, host + 1, n - 2);
      buf[n - 2] = '\0';
      host = buf;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) return 0;
  } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) {
    return 0;
  }
  return luaL_argerror(L, host_idx,
                       lua_pushfstring(L, "not an IP address: '%s' (resolve names with GetHostByName)",
                                       lua_tostring(L, host_idx)));
}

int lfwx_open_address(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__index", l_index},
    {"__tostring", l_tostring},
    {"__eq", l_eq},
    {NULL, NULL}
  };
  lfwx_newclass(L, LFWX_ADDRESS, NULL, meta, NULL);
  return 0;
}
