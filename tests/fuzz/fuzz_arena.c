/* libFuzzer harness: the sending side of a parent's arena, which its
 * workers can scribble on and lie to.
 *
 * A parent's arena chunks are mapped by every worker that received a
 * message in them, and their RELEASE records come from those workers. The
 * input drives a run of operations: allocations (each region filled with a
 * tag byte), shared references, a message given to a receiver and taken
 * back, cancellations, releases reported by the right receiver or forged
 * by another, receivers that die, trims, and random bytes written over a
 * chunk's header and slot table. A model tracks what must still be held;
 * after every step each region the model holds must still carry its tag:
 * the allocator never hands out bytes that are still in use, whatever the
 * header says and whatever a receiver reports. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/internal.h"

#define MAX_LIVE 64
#define RECEIVERS 3

typedef struct live_s {
  ff_arena_ref_t ref;
  unsigned char *data;
  unsigned char tag;
  uint64_t receiver; /* 0: not given to one */
} live_t;

typedef struct input_s {
  const uint8_t *data;
  size_t size, at;
} input_t;

static unsigned next(input_t *in) {
  return in->at < in->size ? in->data[in->at++] : 0;
}

/* A message whose frame carries ref: what a pool dispatches. */
static void frame_of(const ff_arena_ref_t *ref, char *message) {
  uint32_t counts[3] = {1, 0, 0};
  memcpy(message, FF_ARENA_FRAME_MAGIC, 4);
  memcpy(message + 4, counts, sizeof(counts));
  memcpy(message + FF_ARENA_FRAME_HEADER, ref, sizeof(*ref));
}

static void forget(live_t *live, size_t *count, size_t i) {
  live[i] = live[--*count];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ff_arena_t *arena;
  if (ff_arena_create(&arena, 0, 1 << 20, 8 << 20) != 0) abort();
  input_t in = {data, size, 0};
  live_t live[MAX_LIVE];
  size_t count = 0;
  unsigned char tag = 1;
  char message[FF_ARENA_FRAME_HEADER + sizeof(ff_arena_ref_t)];
  while (in.at < in.size) {
    unsigned op = next(&in) % 9;
    size_t i = count ? next(&in) % count : 0;
    uint64_t receiver = 1 + next(&in) % RECEIVERS;
    switch (op) {
      case 0: { /* allocate and fill */
        size_t length = 1 + ((size_t)next(&in) << 11 | next(&in) << 3);
        void *bytes;
        ff_arena_ref_t ref;
        if (count < MAX_LIVE && ff_arena_alloc(arena, length, &ref, &bytes) == 0) {
          tag = (unsigned char)(tag % 250 + 1);
          memset(bytes, tag, length);
          live[count++] = (live_t){ref, bytes, tag, 0};
        }
        break;
      }
      case 1: /* another message's reference to the same bytes */
        if (count > 0 && count < MAX_LIVE && live[i].receiver == 0) {
          ff_arena_ref_t another;
          if (ff_arena_share(arena, &live[i].ref, &another) == 0)
            live[count++] = (live_t){another, live[i].data, live[i].tag, 0};
        }
        break;
      case 2: /* dispatched to a receiver */
        if (count > 0 && live[i].receiver == 0) {
          frame_of(&live[i].ref, message);
          ff__arena_assign_message(message, sizeof(message), receiver);
          live[i].receiver = receiver;
        }
        break;
      case 3: /* its receiver died before running it: sent again */
        if (count > 0) {
          frame_of(&live[i].ref, message);
          int back = ff__arena_unassign_message(message, sizeof(message),
                                                receiver);
          if (back != (live[i].receiver == receiver)) abort();
          if (back) live[i].receiver = 0;
        }
        break;
      case 4: /* never received */
        if (count > 0) {
          ff_arena_cancel(arena, &live[i].ref);
          if (live[i].receiver == 0) forget(live, &count, i);
        }
        break;
      case 5: { /* a receiver reports: the truth, or a forgery */
        ff__arena_report_t report;
        if (count > 0 && next(&in) % 2) {
          report = (ff__arena_report_t){live[i].ref.chunk, live[i].ref.slot,
                                        live[i].ref.generation};
        } else {
          uint8_t bytes[sizeof(report)] = {0};
          for (size_t k = 0; k < sizeof(bytes); k++) bytes[k] = (uint8_t)next(&in);
          memcpy(&report, bytes, sizeof(report));
          if (count > 0 && next(&in) % 2) report.chunk = live[i].ref.chunk;
        }
        ff__arena_reported(receiver, &report, sizeof(report));
        for (size_t k = 0; k < count;) {
          if (live[k].receiver == receiver && live[k].ref.chunk == report.chunk &&
              live[k].ref.slot == report.slot &&
              live[k].ref.generation == report.generation)
            forget(live, &count, k);
          else
            k++;
        }
        break;
      }
      case 6: /* a receiver died */
        ff__arena_drop_receiver(receiver);
        for (size_t k = 0; k < count;) {
          if (live[k].receiver == receiver)
            forget(live, &count, k);
          else
            k++;
        }
        break;
      case 7: /* a worker scribbles over a chunk's header and slot table */
        if (count > 0) {
          unsigned char *base = live[i].data - live[i].ref.offset;
          size_t at = ((size_t)next(&in) << 5) % FF__ARENA_HEADER;
          size_t n = next(&in);
          while (n-- > 0 && at < FF__ARENA_HEADER) base[at++] = (unsigned char)next(&in);
        }
        break;
      case 8:
        ff_arena_trim(arena, (size_t)next(&in) << 16);
        break;
    }
    /* Nothing the model holds was handed out again. */
    for (size_t k = 0; k < count; k++) {
      const unsigned char *b = live[k].data;
      size_t n = live[k].ref.length;
      if (b[0] != live[k].tag || b[n - 1] != live[k].tag || b[n / 2] != live[k].tag)
        abort();
    }
  }
  for (uint64_t r = 1; r <= RECEIVERS; r++) ff__arena_drop_receiver(r);
  ff_arena_destroy(arena);
  return 0;
}
