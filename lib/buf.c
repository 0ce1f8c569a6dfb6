/* Growable memory: the output buffer a work callback writes its result
 * into, and the runtime's own growable arrays. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void *ff_buf_reserve(ff_buf_t *buf, size_t len) {
  if (len > buf->capacity) {
    /* Grow geometrically so a worker that produces rising result sizes does
     * not reallocate on every task. */
    size_t capacity = buf->capacity ? buf->capacity : 256;
    while (capacity < len) {
      if (capacity > SIZE_MAX / 2) {
        capacity = len;
        break;
      }
      capacity *= 2;
    }
    char *base = realloc(buf->base, capacity);
    if (base == NULL) return NULL;
    buf->base = base;
    buf->capacity = capacity;
  }
  buf->len = len;
  /* A zero-length result still gets a valid pointer to write nothing into. */
  if (buf->base == NULL) {
    buf->base = malloc(1);
    if (buf->base == NULL) return NULL;
    buf->capacity = 1;
  }
  return buf->base;
}

void *ff__grow(void *array, size_t count, size_t *capacity, size_t size) {
  if (count < *capacity) return array;
  size_t grown_capacity = *capacity * 2 + 16;
  if (grown_capacity > SIZE_MAX / size) return NULL;
  void *grown = realloc(array, grown_capacity * size);
  if (grown == NULL) return NULL;
  *capacity = grown_capacity;
  return grown;
}

int ff_buf_set(ff_buf_t *buf, const void *data, size_t len) {
  void *dst = ff_buf_reserve(buf, len);
  if (dst == NULL) return -ENOMEM;
  if (len) memcpy(dst, data, len);
  return 0;
}
