/* libFuzzer harness: what a worker can send on its lender socket.
 *
 * The parent's loop thread serves OPEN and CREATE requests from workers it
 * does not trust. The input is cut into messages of 32 bytes (and a shorter
 * last one), sent on a socket pair and served; every reply's descriptor is
 * closed, and the segments made for the fake worker are dropped after each
 * input, so neither memory nor descriptors may grow. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../lib/internal.h"

#define MESSAGE 32u
#define OWNER ((uint64_t)0x4242)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) abort();
  if (fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0 ||
      fcntl(sv[1], F_SETFL, O_NONBLOCK) != 0)
    abort();
  if (ff__share_add_owner(OWNER, NULL, 0) != 0) abort();
  for (size_t at = 0; at < size; at += MESSAGE) {
    size_t n = size - at < MESSAGE ? size - at : MESSAGE;
    if (send(sv[1], data + at, n, MSG_NOSIGNAL) < 0) break;
    int rc = ff__share_serve(sv[0], OWNER);
    /* Every reply is read, its descriptor closed. */
    for (;;) {
      uint8_t reply[MESSAGE];
      int fds[FF__SOCK_MAX_FDS];
      unsigned nfds;
      if (ff__sock_recv(sv[1], reply, sizeof(reply), fds, &nfds, MSG_DONTWAIT) <= 0)
        break;
      ff__sock_close_fds(fds, &nfds);
    }
    if (rc < 0) break; /* the parent stops serving this worker */
  }
  ff__share_drop_owner(OWNER);
  close(sv[0]);
  close(sv[1]);
  return 0;
}
