/* libFuzzer harness: a ring whose shared memory a hostile peer wrote.
 *
 * The worker and the parent share each ring's memory, so either side can
 * write anything into it: positions, record headers, payloads. The input is
 * laid over a whole ring (header and data area) after it was set up; the
 * reader must then read, join and release messages, or report
 * FF_EPROTOCOL, and never touch memory outside the ring or crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../lib/internal.h"

#define CAPACITY 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t total = ff__ring_size(CAPACITY);
  /* Exactly the ring's size, so that AddressSanitizer catches a read past
   * it. */
  char *memory = malloc(total);
  if (memory == NULL) return 0;
  ff__ring_t ring;
  if (ff__ring_attach(&ring, memory, CAPACITY, 1) != 0) abort();
  memcpy(memory, data, size < total ? size : total);

  ff__ring_check(&ring);
  ff__ring_readable(&ring);
  ff__ring_reader_t reader = {0};
  unsigned sum = 0;
  for (int i = 0; i < 64; i++) {
    ff__ring_msg_t msg;
    int rc = ff__ring_read(&ring, &reader, &msg, NULL);
    if (rc <= 0) break;
    /* Every byte of a message the reader hands out must be readable. */
    for (size_t j = 0; j < msg.length; j++) sum += (unsigned char)msg.data[j];
    char *joined = ff__ring_reader_take(&reader, &msg);
    ff__ring_release(&ring, &msg);
    free(joined);
  }
  ff__ring_reader_free(&reader);
  free(memory);
  return sum == 0xffffffffu; /* keeps the sum from being optimized away */
}
