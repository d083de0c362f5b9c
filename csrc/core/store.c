/* store.c: the shared store, the one place workers share state (DESIGN.md section 4).
 *
 * One store per process, behind one mutex: a hash map from byte-string keys to
 * entries that hold either bytes the core does not interpret (the binding stores
 * serialised Lua values) or a 64-bit integer, which the core itself adds to, so that
 * an increment is one step under the lock instead of a read and a write that another
 * worker can come between.
 *
 * Memory is bounded by a capacity: the store counts every entry's key, value and an
 * estimate of its overhead, and a write that would take the count past the capacity
 * fails with UV_ENOMEM. Nothing is evicted to make room: what a worker stored stays
 * until some worker deletes it, so a full store is the program's to handle, not a
 * cache that silently forgets. */
#include "fwx-int.h"

#define DEFAULT_CAPACITY ((size_t)64 << 20)
#define MIN_BUCKETS 64
#define LARGE_VALUE ((size_t)64 << 10)

typedef struct entry {
  struct entry *next;   /* the bucket's chain */
  uint64_t hash;
  size_t klen, len;     /* len: bytes of the value; 0 for an integer */
  int64_t integer;
  int is_integer;
  char data[];          /* the key, then the value */
} entry_t;

/* What an entry is counted as: the allocation, the allocator's header (an estimate)
 * and its share of the bucket array (the map keeps about one bucket per entry). */
#define ENTRY_OVERHEAD (sizeof(entry_t) + 16 + sizeof(entry_t *))

static struct {
  uv_mutex_t lock;
  int init_error;
  uint64_t seed[2];
  entry_t **buckets;
  size_t nbuckets;      /* 0, or a power of two */
  size_t count;
  size_t bytes;
  size_t capacity;
} store;

static uv_once_t once = UV_ONCE_INIT;

/* ---- hashing: SipHash-1-3 with a per-process random key ----
 * Keys may come from the network (a counter per client address), and with a fixed
 * hash function a peer could choose keys that all fall in one chain. */

static uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static void sipround(uint64_t v[4]) {
  v[0] += v[1]; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32);
  v[2] += v[3]; v[3] = rotl(v[3], 16); v[3] ^= v[2];
  v[0] += v[3]; v[3] = rotl(v[3], 21); v[3] ^= v[0];
  v[2] += v[1]; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32);
}

static uint64_t load_le(const unsigned char *p, size_t n) {
  uint64_t m = 0;
  while (n-- > 0) m = m << 8 | p[n];
  return m;
}

static uint64_t hash(const char *key, size_t klen) {
  const unsigned char *p = (const unsigned char *)key;
  uint64_t v[4], m;
  size_t i;
  v[0] = store.seed[0] ^ 0x736f6d6570736575ULL;
  v[1] = store.seed[1] ^ 0x646f72616e646f6dULL;
  v[2] = store.seed[0] ^ 0x6c7967656e657261ULL;
  v[3] = store.seed[1] ^ 0x7465646279746573ULL;
  for (i = 0; i + 8 <= klen; i += 8) {
    m = load_le(p + i, 8);
    v[3] ^= m;
    sipround(v);
    v[0] ^= m;
  }
  m = load_le(p + i, klen - i) | (uint64_t)(klen & 0xff) << 56;
  v[3] ^= m;
  sipround(v);
  v[0] ^= m;
  v[2] ^= 0xff;
  sipround(v);
  sipround(v);
  sipround(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static void init(void) {
  store.init_error = uv_mutex_init(&store.lock);
  store.capacity = DEFAULT_CAPACITY;
  /* Without the system's randomness the store still works, only more predictably. */
  if (uv_random(NULL, NULL, store.seed, sizeof store.seed, 0, NULL) != 0) {
    store.seed[0] = uv_hrtime();
    store.seed[1] = (uint64_t)(uintptr_t)&store;
  }
}

/* Initialise the store once, and check a key (the counters pass "" for none). */
static int ready(const char *key, size_t klen) {
  uv_once(&once, init);
  if (store.init_error != 0) return store.init_error;
  return key != NULL && klen <= FWX_STORE_KEY_MAX ? 0 : FWX_EINVAL;
}

static size_t cost(const entry_t *e) { return ENTRY_OVERHEAD + e->klen + e->len; }

/* ---- the map; the callers hold the lock ---- */

/* The link that points at key's entry, or at the NULL ending its chain. */
static entry_t **find(const char *key, size_t klen, uint64_t h) {
  entry_t **link = &store.buckets[h & (store.nbuckets - 1)];
  for (; *link != NULL; link = &(*link)->next) {
    entry_t *e = *link;
    if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) break;
  }
  return link;
}

/* Double the buckets when entries outnumber them. Without memory for that, the
 * chains only get longer. */
static void grow(void) {
  size_t n = store.nbuckets ? 2 * store.nbuckets : MIN_BUCKETS, i;
  entry_t **b;
  if (store.count < store.nbuckets) return;
  b = calloc(n, sizeof *b);
  if (b == NULL) return;
  for (i = 0; i < store.nbuckets; i++) {
    entry_t *e = store.buckets[i], *next;
    for (; e != NULL; e = next) {
      next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  free(store.buckets);
  store.buckets = b;
  store.nbuckets = n;
}

/* The first write makes the buckets; without them nothing can be stored. */
static int has_buckets(void) {
  if (store.nbuckets == 0) grow();
  return store.nbuckets != 0;
}

/* Put e where *link points (replacing what is there), if the capacity allows it.
 * Returns the entry it replaced (to be freed outside the lock) through *old. */
static int link_entry(entry_t **link, entry_t *e, entry_t **old) {
  size_t was = *link != NULL ? cost(*link) : 0;
  if (cost(e) > was && store.bytes - was + cost(e) > store.capacity) return UV_ENOMEM;
  *old = *link;
  e->next = *old != NULL ? (*old)->next : NULL;
  *link = e;
  store.bytes = store.bytes - was + cost(e);
  if (*old == NULL) store.count++;
  return 0;
}

static entry_t *new_entry(const char *key, size_t klen, size_t len) {
  entry_t *e;
  if (len > SIZE_MAX - sizeof *e - klen) return NULL;
  e = malloc(sizeof *e + klen + len);
  if (e == NULL) return NULL;
  e->next = NULL;
  e->hash = hash(key, klen);
  e->klen = klen;
  e->len = len;
  e->integer = 0;
  e->is_integer = 0;
  memcpy(e->data, key, klen);
  return e;
}

/* Store e under its key: replace what is there, or (only_new) fail with UV_EEXIST.
 * The entry is built before the lock is taken, and what it replaces freed after. */
static int put(entry_t *e, int only_new) {
  entry_t **link, *old = NULL;
  int r;
  uv_mutex_lock(&store.lock);
  if (!has_buckets()) {
    r = UV_ENOMEM;
  } else {
    link = find(e->data, e->klen, e->hash);
    r = only_new && *link != NULL ? UV_EEXIST : link_entry(link, e, &old);
    if (r == 0 && old == NULL) grow();
  }
  uv_mutex_unlock(&store.lock);
  free(r == 0 ? old : e);
  return r;
}

static int put_bytes(const char *key, size_t klen, const char *bytes, size_t len,
                     int only_new) {
  entry_t *e;
  int r = ready(key, klen);
  if (r != 0) return r;
  if (bytes == NULL && len > 0) return FWX_EINVAL;
  /* A large value that could never fit is refused before it is copied (small ones
   * are not worth taking the lock twice for). */
  if (len > LARGE_VALUE && len > fwx_store_capacity()) return UV_ENOMEM;
  e = new_entry(key, klen, len);
  if (e == NULL) return UV_ENOMEM;
  if (len > 0) memcpy(e->data + klen, bytes, len);
  return put(e, only_new);
}

static int put_integer(const char *key, size_t klen, int64_t value, int only_new) {
  entry_t *e;
  int r = ready(key, klen);
  if (r != 0) return r;
  e = new_entry(key, klen, 0);
  if (e == NULL) return UV_ENOMEM;
  e->is_integer = 1;
  e->integer = value;
  return put(e, only_new);
}

/* ---- the API ---- */

int fwx_store_set(const char *key, size_t klen, const char *bytes, size_t len) {
  return put_bytes(key, klen, bytes, len, 0);
}

int fwx_store_add(const char *key, size_t klen, const char *bytes, size_t len) {
  return put_bytes(key, klen, bytes, len, 1);
}

int fwx_store_set_integer(const char *key, size_t klen, int64_t value) {
  return put_integer(key, klen, value, 0);
}

int fwx_store_add_integer(const char *key, size_t klen, int64_t value) {
  return put_integer(key, klen, value, 1);
}

int fwx_store_get(const char *key, size_t klen, char *buf, size_t cap,
                  fwx_store_value_t *out) {
  entry_t *e;
  uint64_t h;
  int r = ready(key, klen);
  if (r != 0) return r;
  if (buf == NULL && cap > 0) return FWX_EINVAL;
  h = hash(key, klen);
  uv_mutex_lock(&store.lock);
  e = store.nbuckets > 0 ? *find(key, klen, h) : NULL;
  if (e == NULL) {
    r = UV_ENOENT;
  } else {
    out->is_integer = e->is_integer;
    out->integer = e->integer;
    out->len = e->len;
    if (e->len > cap) r = UV_ENOBUFS;
    else if (e->len > 0) memcpy(buf, e->data + e->klen, e->len);
  }
  uv_mutex_unlock(&store.lock);
  return r;
}

/* a + b into *sum, or 0 if that does not fit in 64 bits. */
static int add_checked(int64_t a, int64_t b, int64_t *sum) {
  if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) return 0;
  *sum = a + b;
  return 1;
}

/* An absent key gets a new entry, made under the lock: that happens once per key,
 * where the increments that follow only add. */
static int incr_locked(const char *key, size_t klen, uint64_t h, int64_t delta,
                       int64_t init, int64_t *out) {
  entry_t **link, *e, *old;
  int64_t sum;
  int r;
  if (!has_buckets()) return UV_ENOMEM;
  link = find(key, klen, h);
  if (*link != NULL) {
    if (!(*link)->is_integer) return FWX_ESTATE;
    if (!add_checked((*link)->integer, delta, &sum)) return FWX_EINVAL;
    (*link)->integer = *out = sum;
    return 0;
  }
  if (!add_checked(init, delta, &sum)) return FWX_EINVAL;
  e = new_entry(key, klen, 0);
  if (e == NULL) return UV_ENOMEM;
  e->is_integer = 1;
  e->integer = sum;
  r = link_entry(link, e, &old);
  if (r != 0) {
    free(e);
    return r;
  }
  grow();
  *out = sum;
  return 0;
}

int fwx_store_incr(const char *key, size_t klen, int64_t delta, int64_t init,
                   int64_t *out) {
  uint64_t h;
  int r = ready(key, klen);
  if (r != 0) return r;
  h = hash(key, klen);
  uv_mutex_lock(&store.lock);
  r = incr_locked(key, klen, h, delta, init, out);
  uv_mutex_unlock(&store.lock);
  return r;
}

int fwx_store_delete(const char *key, size_t klen) {
  entry_t **link, *e = NULL;
  uint64_t h;
  int r = ready(key, klen);
  if (r != 0) return r;
  h = hash(key, klen);
  uv_mutex_lock(&store.lock);
  if (store.nbuckets > 0) {
    link = find(key, klen, h);
    e = *link;
    if (e != NULL) {
      *link = e->next;
      store.count--;
      store.bytes -= cost(e);
    }
  }
  uv_mutex_unlock(&store.lock);
  free(e);
  return e != NULL ? 0 : UV_ENOENT;
}

/* Read one counter under the lock (a torn read of a size_t is not a worry on the
 * platforms libuv runs on, but the lock also orders it after other threads' writes). */
static size_t read_locked(const size_t *field) {
  size_t v;
  if (ready("", 0) != 0) return 0;
  uv_mutex_lock(&store.lock);
  v = *field;
  uv_mutex_unlock(&store.lock);
  return v;
}

size_t fwx_store_count(void) { return read_locked(&store.count); }
size_t fwx_store_bytes(void) { return read_locked(&store.bytes); }
size_t fwx_store_capacity(void) { return read_locked(&store.capacity); }

/* A capacity below what is stored evicts nothing: writes that would grow the store
 * fail until deletes bring it under. */
int fwx_store_set_capacity(size_t bytes) {
  int r = ready("", 0);
  if (r != 0) return r;
  uv_mutex_lock(&store.lock);
  store.capacity = bytes;
  uv_mutex_unlock(&store.lock);
  return 0;
}

void fwx_store_clear(void) {
  entry_t **buckets, *e, *next;
  size_t n, i;
  if (ready("", 0) != 0) return;
  uv_mutex_lock(&store.lock);
  buckets = store.buckets;
  n = store.nbuckets;
  store.buckets = NULL;
  store.nbuckets = store.count = store.bytes = 0;
  uv_mutex_unlock(&store.lock);
  for (i = 0; i < n; i++)
    for (e = buckets[i]; e != NULL; e = next) {
      next = e->next;
      free(e);
    }
  free(buckets);
}
