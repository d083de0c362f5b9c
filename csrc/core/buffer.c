/* buffer.c: reference-counted byte buffers (IFWXIOBuffer) and windows into them.
 *
 * A buffer is one allocation, header and bytes together. Every holder owns a
 * reference: the Lua object, each pending operation, each window on it. A buffer lent
 * to a pending operation may not change until the operation ends (the SDK's rule for
 * sent buffers), so writers check fwx_buffer_writable() first. */
#include "fwx-int.h"

struct fwx_buffer {
  int refs;
  int lent;                 /* pending operations reading or filling it */
  unsigned char is_const;
  unsigned char placed;     /* in its owner's memory: references never free it */
  size_t capacity;
  size_t size;              /* valid bytes */
  char *data;
  fwx_buffer_t *base;       /* a window's buffer, or NULL */
  char bytes[];
};

static fwx_buffer_t *alloc_buffer(size_t capacity) {
  fwx_buffer_t *b;
  if (capacity > (size_t)-1 - sizeof *b) return NULL;
  b = malloc(sizeof *b + capacity);
  if (b == NULL) return NULL;
  b->refs = 1;
  b->lent = 0;
  b->is_const = 0;
  b->placed = 0;
  b->capacity = capacity;
  b->size = 0;
  b->data = b->bytes;
  b->base = NULL;
  return b;
}

fwx_buffer_t *fwx_buffer_new(size_t capacity) { return alloc_buffer(capacity); }

size_t fwx_buffer_place_size(size_t capacity) { return sizeof(fwx_buffer_t) + capacity; }

fwx_buffer_t *fwx_buffer_place(void *mem, size_t capacity, const char *init, size_t len,
                               int is_const) {
  fwx_buffer_t *b = mem;
  assert(len <= capacity);
  b->refs = 1;
  b->lent = 0;
  b->is_const = (unsigned char)(is_const != 0);
  b->placed = 1;
  b->capacity = capacity;
  b->size = len;
  b->data = b->bytes;
  b->base = NULL;
  if (len > 0) memcpy(b->bytes, init, len);
  return b;
}

/* A placed window: its owner keeps base alive as long as the window lives. */
fwx_buffer_t *fwx_buffer_place_window(void *mem, fwx_buffer_t *base, size_t offset,
                                      size_t len) {
  fwx_buffer_t *b = mem;
  if (offset > base->capacity || len > base->capacity - offset) return NULL;
  fwx_buffer_place(mem, 0, NULL, 0, base->is_const);
  b->data = base->data + offset;
  b->capacity = len;
  b->size = base->size > offset ? base->size - offset : 0;
  if (b->size > len) b->size = len;
  b->base = base;
  return b;
}

/* A placed buffer over len bytes that live elsewhere (received bytes kept in the
 * arena): its owner keeps them alive as long as the buffer lives. */
fwx_buffer_t *fwx_buffer_place_over(void *mem, char *data, size_t len) {
  fwx_buffer_t *b = fwx_buffer_place(mem, 0, NULL, 0, 0);
  b->data = data;
  b->capacity = len;
  b->size = len;
  return b;
}

fwx_buffer_t *fwx_buffer_const(const char *data, size_t len) {
  fwx_buffer_t *b = alloc_buffer(len);
  if (b == NULL) return NULL;
  if (len > 0) memcpy(b->bytes, data, len);
  b->size = len;
  b->is_const = 1;
  return b;
}

fwx_buffer_t *fwx_buffer_window(fwx_buffer_t *base, size_t offset, size_t len) {
  fwx_buffer_t *b;
  if (offset > base->capacity || len > base->capacity - offset) return NULL;
  b = alloc_buffer(0);
  if (b == NULL) return NULL;
  b->data = base->data + offset;
  b->capacity = len;
  /* The window shows the base's valid bytes that fall inside it. */
  b->size = base->size > offset ? base->size - offset : 0;
  if (b->size > len) b->size = len;
  b->is_const = base->is_const;
  b->base = base;
  fwx_buffer_ref(base);
  return b;
}

void fwx_buffer_ref(fwx_buffer_t *b) { b->refs++; }

void fwx_buffer_unref(fwx_buffer_t *b) {
  assert(b->refs > 0);
  if (--b->refs > 0 || b->placed) return;
  assert(b->lent == 0);
  if (b->base != NULL) fwx_buffer_unref(b->base);
  free(b);
}

char *fwx_buffer_data(fwx_buffer_t *b) { return b->data; }
size_t fwx_buffer_size(const fwx_buffer_t *b) { return b->size; }
size_t fwx_buffer_capacity(const fwx_buffer_t *b) { return b->capacity; }

int fwx_buffer_lent(const fwx_buffer_t *b) {
  for (; b != NULL; b = b->base)
    if (b->lent) return 1;
  return 0;
}

int fwx_buffer_writable(const fwx_buffer_t *b) {
  if (b->is_const) return FWX_ESTATE;
  if (fwx_buffer_lent(b)) return FWX_ELOCKED;
  return 0;
}

/* Lending a window lends what it looks into. */
void fwx_buffer_lend(fwx_buffer_t *b) {
  for (; b != NULL; b = b->base) b->lent++;
}

void fwx_buffer_unlend(fwx_buffer_t *b) {
  for (; b != NULL; b = b->base) {
    assert(b->lent > 0);
    b->lent--;
  }
}

int fwx_buffer_set_size(fwx_buffer_t *b, size_t n) {
  int r = fwx_buffer_writable(b);
  if (r != 0) return r;
  if (n > b->capacity) return FWX_EINVAL;
  b->size = n;
  return 0;
}

/* Appends what fits, without growing; the caller reports FWX_E_BUFFERFULL when the
 * count is short. */
size_t fwx_buffer_append(fwx_buffer_t *b, const char *p, size_t n) {
  size_t room = b->capacity - b->size;
  if (n > room) n = room;
  if (n > 0) memcpy(b->data + b->size, p, n);
  b->size += n;
  return n;
}

/* A receive filled the buffer: copy n bytes from p, or, with p NULL, record that n
 * bytes were read into it in place. */
void fwx__buffer_fill(fwx_buffer_t *b, const char *p, size_t n) {
  assert(n <= b->capacity);
  if (n > 0 && p != NULL && p != b->data) memcpy(b->data, p, n);
  b->size = n;
}
