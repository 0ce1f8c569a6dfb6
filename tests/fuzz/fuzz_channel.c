/* libFuzzer harness: a channel (Queue, Pipe) whose shared memory a hostile
 * or dying process wrote.
 *
 * Every process that uses a channel maps its header and ring, so any of
 * them can leave anything there: positions, capacity, counts, record
 * lengths. The input is laid over a channel after it was set up (all but
 * its mutex, which a live holder would make the harness wait on); gets and
 * puts must then move whole messages inside the region or report
 * FF_EPROTOCOL, and never touch memory outside it. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "forkfarm.h"

#define RING 8192u
#define REGION (FF_CHANNEL_HEADER + RING)

static void *exact_alloc(void *arg, size_t length) {
  /* Exactly the message's size, so that AddressSanitizer catches a copy
   * past it. */
  void **out = arg;
  *out = malloc(length ? length : 1);
  return *out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *region = aligned_alloc(4096, REGION);
  if (region == NULL) return 0;
  ff_channel_t channel;
  if (ff_channel_init(region, REGION, 4096, 0) != 0 ||
      ff_channel_attach(region, REGION, &channel) != 0)
    abort();
  size_t skip = sizeof(ff_mutex_t);
  if (size > 0) {
    size_t n = size < REGION - skip ? size : REGION - skip;
    memcpy(region + skip, data, n);
  }
  unsigned sum = 0;
  for (int i = 0; i < 32; i++) {
    void *message = NULL;
    int rc = ff_channel_get(&channel, 0, exact_alloc, &message, NULL);
    if (rc == 0) sum += message ? ((unsigned char *)message)[0] : 0;
    free(message);
    if (rc != 0 && rc != -ETIMEDOUT && rc != FF_EPROTOCOL && rc != -ENOMEM)
      abort();
    char payload[300];
    memset(payload, i, sizeof(payload));
    rc = ff_channel_put(&channel, payload, (size_t)(i * 37) % sizeof(payload),
                        0, NULL);
    if (rc != 0 && rc != -ETIMEDOUT && rc != FF_EPROTOCOL) abort();
  }
  ff_channel_count(&channel);
  free(region);
  return (int)(sum & 0);
}
