/* libFuzzer harness: a worker's side of its lender socket, facing replies
 * that do not match its requests.
 *
 * A worker asks its parent for segments (OPEN an id, CREATE one) and must
 * take only the reply to its own request: a late reply to an earlier one,
 * a reply of the wrong size, type, id or number, or with a descriptor too
 * many or missing, is refused, and then the socket is given up for good
 * (later requests fail at once, never read a stale reply). The input holds,
 * per request, the reply the fake parent has already queued (bytes of any
 * length, with or without a descriptor), then the request. Nothing may
 * block, crash, or leak a descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../lib/internal.h"

#define REPLY 32u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) abort();
  if (fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0) abort();
  ff__share_set_lender(sv[1]);
  bool lost = false;
  for (size_t at = 0; at + 2 <= size;) {
    uint8_t how = data[at++];
    size_t n = data[at++] % (REPLY + 9);
    if (n > size - at) n = size - at;
    /* The reply, queued before the request, so nothing waits for it. */
    int fd = -1;
    if (how & 1) fd = ff__memfd("fuzz", 4096);
    if (!lost)
      ff__sock_send(sv[0], data + at, n, &fd, fd >= 0 ? 1 : 0);
    if (fd >= 0) close(fd);
    at += n;
    int got = -1, rc;
    uint64_t id = 0;
    if (how & 2) {
      rc = ff_segment_create(4096, FF_SEGMENT_PARENT, &id, &got);
      if (rc == 0) ff_segment_forget(id);
    } else {
      memcpy(&id, data + (at >= 8 ? at - 8 : 0), at >= 8 ? 8 : 0);
      rc = ff_segment_open(id | 1u << 20, &got);
    }
    if (rc == 0) {
      if (got < 0) abort();
      close(got);
    }
    if (lost && rc != -EPIPE) abort(); /* once given up, for good */
    lost = lost || ff__share_lender_lost();
    /* What the parent got: the worker's requests. */
    char request[64];
    while (recv(sv[0], request, sizeof(request), MSG_DONTWAIT) > 0) {
    }
    uint64_t forgotten[16];
    while (ff__share_take_forgotten(forgotten, 16) > 0) {
    }
  }
  if (!lost) close(sv[1]);
  close(sv[0]);
  ff__share_set_lender(-1);
  return 0;
}
