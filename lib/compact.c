/* The compact encoding of a map chunk's result: a list of 64-bit ints or of
 * floats as a 16-byte header (FF_COMPACT_MAGIC, the kind, the count) and
 * the 8-byte values, instead of a pickle. The parent reads it from a
 * worker it does not trust: the header is checked here, once, before any
 * value is read. */
#include "internal.h"

#include <string.h>

int ff_compact_parse(const void *data, size_t length, char *kind,
                     uint64_t *count) {
  if (length < 4 || memcmp(data, FF_COMPACT_MAGIC, 4) != 0) return 0;
  if (length < FF_COMPACT_HEADER) return FF_EPROTOCOL;
  const char *bytes = data;
  uint64_t n;
  memcpy(&n, bytes + 8, sizeof(n));
  char k = bytes[4];
  if ((k != FF_COMPACT_INTS && k != FF_COMPACT_FLOATS) ||
      n > (length - FF_COMPACT_HEADER) / 8 ||
      length != FF_COMPACT_HEADER + n * 8)
    return FF_EPROTOCOL;
  *kind = k;
  *count = n;
  return 1;
}
