/* libFuzzer harness: the decoders of what a worker sends back, compact
 * number lists and arena frames, read from bytes the worker controls. A
 * parsed header must promise only bytes that are there: every value it
 * names, every reference and pin, is read (AddressSanitizer sees a read
 * past the input, which is copied to an exact-size buffer). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *bytes = malloc(size ? size : 1);
  if (bytes == NULL) return 0;
  memcpy(bytes, data, size);
  uint64_t sum = 0;
  char kind;
  uint64_t count;
  int rc = ff_compact_parse(bytes, size, &kind, &count);
  if (rc == 1) {
    if (kind != FF_COMPACT_INTS && kind != FF_COMPACT_FLOATS) abort();
    for (uint64_t i = 0; i < count; i++) {
      uint64_t v;
      memcpy(&v, bytes + FF_COMPACT_HEADER + i * 8, sizeof(v));
      sum += v;
    }
  } else if (rc != 0 && rc != FF_EPROTOCOL) {
    abort();
  }
  ff_arena_frame_t frame;
  rc = ff_arena_frame(bytes, size, &frame);
  if (rc == 1) {
    if (frame.body > size) abort();
    for (size_t i = 0; i < frame.refs; i++) {
      ff_arena_ref_t ref;
      ff_arena_frame_ref(bytes, i, &ref);
      sum += ref.length;
    }
    for (size_t i = 0; i < frame.pins; i++)
      sum += ff_arena_frame_pin(bytes, &frame, i);
  } else if (rc != 0 && rc != FF_EPROTOCOL) {
    abort();
  }
  free(bytes);
  return sum == 42 ? 0 : 0;
}
