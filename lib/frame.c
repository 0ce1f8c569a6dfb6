/* The frame of a message: the header that lists the arena references
 * (ff_arena_ref_t) and the segments it pins, ahead of its body. Parsing it
 * only, with no state: the arena (arena.c) and the lender (share.c) both
 * read frames, and neither needs the other for it. */
#include "internal.h"

#include <string.h>

int ff_arena_frame(const void *message, size_t length,
                   ff_arena_frame_t *frame) {
  if (length < 4 || memcmp(message, FF_ARENA_FRAME_MAGIC, 4) != 0) return 0;
  if (length < FF_ARENA_FRAME_HEADER) return FF_EPROTOCOL;
  uint32_t counts[3];
  memcpy(counts, (const char *)message + 4, sizeof(counts));
  uint64_t need = FF_ARENA_FRAME_HEADER +
                  (uint64_t)counts[0] * sizeof(ff_arena_ref_t) +
                  (uint64_t)counts[1] * sizeof(uint64_t);
  if (counts[2] != 0 || need > length) return FF_EPROTOCOL;
  frame->refs = counts[0];
  frame->pins = counts[1];
  frame->body = (size_t)need;
  return 1;
}

void ff_arena_frame_ref(const void *message, size_t i, ff_arena_ref_t *ref) {
  memcpy(ref,
         (const char *)message + FF_ARENA_FRAME_HEADER + i * sizeof(*ref),
         sizeof(*ref));
}

uint64_t ff_arena_frame_pin(const void *message, const ff_arena_frame_t *frame,
                            size_t i) {
  uint64_t id;
  memcpy(&id,
         (const char *)message + FF_ARENA_FRAME_HEADER +
             frame->refs * sizeof(ff_arena_ref_t) + i * sizeof(id),
         sizeof(id));
  return id;
}
