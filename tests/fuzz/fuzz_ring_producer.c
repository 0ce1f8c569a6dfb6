/* libFuzzer harness: a ring's producer facing a hostile consumer.
 *
 * The parent writes tasks into a ring whose consumer (a worker) can write
 * anything into the shared header, its head above all. The input mixes
 * messages of every size (fragments included) with hostile writes of the
 * consumer's head and the producer's own tail in shared memory, and with an
 * honest consumer's reads. The producer must stay inside the ring whatever
 * it finds (the memory is exactly the ring's size, so AddressSanitizer sees
 * a write past it), and say FF_EPROTOCOL rather than trust an impossible
 * head. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/internal.h"

#define CAPACITY 4096u
/* Where the header keeps the producer's and the consumer's positions. */
#define TAIL_AT 0u
#define HEAD_AT 64u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t total = ff__ring_size(CAPACITY);
  char *memory = malloc(total);
  if (memory == NULL) return 0;
  ff__ring_t producer, consumer;
  if (ff__ring_attach(&producer, memory, CAPACITY, 1) != 0 ||
      ff__ring_attach(&consumer, memory, CAPACITY, 0) != 0)
    abort();
  ff__ring_reader_t reader = {0};
  static char payload[3 * CAPACITY];
  for (size_t i = 0; i < sizeof(payload); i++) payload[i] = (char)i;
  size_t offset = 0, length = 0;
  for (size_t at = 0; at + 1 < size;) {
    uint8_t op = data[at++];
    uint8_t arg = data[at++];
    if (op % 4 == 0) { /* write (or go on writing) a message */
      if (offset == length) {
        length = ((size_t)arg * 61) % sizeof(payload);
        offset = 0;
      }
      int rc = ff__ring_write(&producer, FF__RING_TASK, 0, at, payload, length,
                              &offset);
      if (rc != 0 && rc != 1 && rc != -EPIPE && rc != FF_EPROTOCOL) abort();
      if (offset > length) abort();
      if (rc < 0) offset = length;
    } else if (op % 4 == 1 && at + 8 <= size) { /* the consumer lies */
      memcpy(memory + (arg % 2 ? HEAD_AT : TAIL_AT), data + at, 8);
      at += 8;
    } else if (op % 4 == 2) { /* an honest consumer reads */
      ff__ring_msg_t msg;
      int rc = ff__ring_read(&consumer, &reader, &msg, NULL);
      if (rc == 1) {
        char *joined = ff__ring_reader_take(&reader, &msg);
        ff__ring_release(&consumer, &msg);
        free(joined);
      }
    } else { /* waits that must not block */
      ff__ring_arm_producer(&producer, arg);
      ff__ring_readable(&consumer);
    }
  }
  ff__ring_reader_free(&reader);
  free(memory);
  return 0;
}
