/* libFuzzer harness: the frame of arena references and pins at the start
 * of a message, and the references themselves, as another process could
 * write them.
 *
 * One real arena chunk exists; references the input names are received
 * from it (or from nowhere), so bounds, slots, generations and unknown
 * chunks are all exercised. Nothing may read outside the message or the
 * chunk. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/internal.h"

static ff_arena_t *arena;
static uint64_t chunk;

static void setup(void) {
  if (arena != NULL) return;
  ff_arena_ref_t ref;
  void *data;
  if (ff_arena_create(&arena, 0, 1 << 20, 4 << 20) != 0 ||
      ff_arena_alloc(arena, 4096, &ref, &data) != 0)
    abort();
  chunk = ref.chunk;
  ff_arena_cancel(arena, &ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  /* A copy of exactly the input's size, so that reading past it is caught. */
  uint8_t *message = malloc(size ? size : 1);
  if (message == NULL) return 0;
  memcpy(message, data, size);
  /* Make some references point at the real chunk. */
  ff_arena_frame_t frame;
  if (ff_arena_frame(message, size, &frame) == 1) {
    for (size_t i = 0; i < frame.refs; i++) {
      ff_arena_ref_t ref;
      ff_arena_frame_ref(message, i, &ref);
      if (ref.chunk & 1) ref.chunk = chunk;
      void *bytes;
      if (ff_arena_receive(&ref, FF_ARENA_FROM_PARENT, &bytes) == 0) {
        if (ref.length > 0) {
          volatile uint8_t first = ((uint8_t *)bytes)[0];
          volatile uint8_t last = ((uint8_t *)bytes)[ref.length - 1];
          (void)first;
          (void)last;
        }
        ff_arena_release(&ref, FF_ARENA_FROM_PARENT);
      }
    }
    for (size_t i = 0; i < frame.pins; i++) ff_arena_frame_pin(message, &frame, i);
  }
  ff__share_pin_message(message, size);
  ff__share_unpin_message(message, size);
  ff__arena_cancel_message(message, size);
  ff__arena_discard_message(message, size);
  /* What the releases reported, as a worker would send it on. */
  ff__arena_report_t reports[64];
  while (ff__arena_take_reports(reports, 64) > 0) {
  }
  free(message);
  return 0;
}
