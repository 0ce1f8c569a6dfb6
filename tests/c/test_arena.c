/* CMocka tests of lending segments (lib/share.c) and of the arena
 * (lib/arena.c): segments opened by id, the lender socket a worker asks
 * through, arena regions claimed, freed, shared, cancelled, reclaimed from
 * a receiver that died, the arena's limit, and the frame of references a
 * message carries.
 *
 * Each test arms alarm() so a hang fails instead of stalling; tests that
 * fork reap their own children. FF_TEST_FILTER selects tests by name. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../lib/internal.h"

static int setup_alarm(void **state) {
  (void)state;
  alarm(60);
  return 0;
}

static char *map_fd(int fd, size_t size) {
  char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(p != MAP_FAILED);
  close(fd);
  return p;
}

static void test_segment_open_and_forget(void **state) {
  (void)state;
  uint64_t id;
  int fd;
  assert_int_equal(ff_segment_create(0, 0, &id, &fd), -EINVAL);
  assert_int_equal(ff_segment_create(8192, 0, &id, &fd), 0);
  char *mine = map_fd(fd, 8192);
  mine[100] = 42;
  assert_int_equal(ff_segment_open(id, &fd), 0);
  char *again = map_fd(fd, 8192);
  assert_int_equal(again[100], 42);
  assert_int_equal(ff_segment_forget(id), 0);
  assert_int_equal(ff_segment_open(id, &fd), -ENOENT);
  assert_int_equal(ff_segment_forget(id), -ENOENT);
  /* What was handed out stays valid. */
  again[101] = 7;
  assert_int_equal(mine[101], 7);
  munmap(mine, 8192);
  munmap(again, 8192);
}

/* Answers the child's requests until it closes its end. */
static void serve_until_eof(int socket, uint64_t owner) {
  for (;;) {
    struct pollfd p = {socket, POLLIN, 0};
    assert_true(poll(&p, 1, 10000) == 1);
    if (ff__share_serve(socket, owner) < 0) return;
  }
}

static void test_worker_asks_the_lender(void **state) {
  (void)state;
  int sv[2], ids[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(pipe(ids), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(sv[0]);
    ff__share_set_lender(sv[1]);
    uint64_t id, secret;
    if (read(ids[0], &id, sizeof(id)) != sizeof(id) ||
        read(ids[0], &secret, sizeof(secret)) != sizeof(secret))
      _exit(10);
    int fd;
    /* Made after the fork: only the lender has it. */
    if (ff_segment_open(id, &fd) != 0) _exit(11);
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED || p[0] != 'x') _exit(12);
    p[1] = 'y';
    if (ff_segment_open(UINT64_C(12345), &fd) != -ENOENT) _exit(13);
    /* It exists, but was never given to this worker. */
    if (ff_segment_open(secret, &fd) != -ENOENT) _exit(17);
    /* One the parent makes for this worker, so that it can read it too. */
    uint64_t made;
    if (ff_segment_create(4096, FF_SEGMENT_PARENT, &made, &fd) != 0) _exit(14);
    char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (q == MAP_FAILED) _exit(15);
    q[0] = 'z';
    if (write(ids[1], &made, sizeof(made)) != sizeof(made))
      _exit(16);
    _exit(0);
  }
  close(sv[1]);
  int socket = sv[0];
  assert_int_equal(fcntl(socket, F_SETFL, O_NONBLOCK), 0);
  uint64_t id, secret;
  int fd;
  assert_int_equal(ff_segment_create(4096, 0, &id, &fd), 0);
  char *p = map_fd(fd, 4096);
  p[0] = 'x';
  assert_int_equal(ff_segment_create(4096, 0, &secret, &fd), 0);
  close(fd);
  /* Random ids: neither guessable nor in sequence. */
  assert_true(secret != id + 1 && secret > 1 && id > 1);
  assert_int_equal(write(ids[1], &id, sizeof(id)), sizeof(id));
  assert_int_equal(write(ids[1], &secret, sizeof(secret)), sizeof(secret));
  uint64_t owner = 77;
  assert_int_equal(ff__share_add_owner(owner, &id, 1), 0);
  serve_until_eof(socket, owner);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(p[1], 'y');
  uint64_t made;
  assert_int_equal(read(ids[0], &made, sizeof(made)), sizeof(made));
  assert_int_equal(ff_segment_open(made, &fd), 0);
  char *q = map_fd(fd, 4096);
  assert_int_equal(q[0], 'z');
  /* Held here when its worker goes: lent on until released. */
  assert_int_equal(ff_segment_retain(made), 0);
  ff__share_drop_owner(owner);
  assert_int_equal(ff_segment_open(made, &fd), 0);
  close(fd);
  ff_segment_release(made);
  assert_int_equal(ff_segment_open(made, &fd), -ENOENT);
  assert_int_equal(ff_segment_retain(made), -ENOENT);
  munmap(q, 4096);
  munmap(p, 4096);
  ff_segment_forget(id);
  ff_segment_forget(secret);
  close(socket);
  close(ids[0]);
  close(ids[1]);
}

/* A framed message carrying ref, as a pool dispatches it. */
static void frame_of(const ff_arena_ref_t *ref, char *message) {
  uint32_t counts[3] = {1, 0, 0};
  memcpy(message, FF_ARENA_FRAME_MAGIC, 4);
  memcpy(message + 4, counts, sizeof(counts));
  memcpy(message + FF_ARENA_FRAME_HEADER, ref, sizeof(*ref));
}

static ff__arena_report_t report_of(const ff_arena_ref_t *ref) {
  return (ff__arena_report_t){ref->chunk, ref->slot, ref->generation};
}

enum { WORKER = 7, OTHER_WORKER = 8 };

static void test_arena_round_trip_and_reuse(void **state) {
  (void)state;
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 4 << 20), 0);
  ff_arena_ref_t ref, again;
  void *data, *seen;
  assert_int_equal(ff_arena_alloc(arena, 0, &ref, &data), -EINVAL);
  assert_int_equal(ff_arena_alloc(arena, 1000, &ref, &data), 0);
  memset(data, 0xab, 1000);
  char message[FF_ARENA_FRAME_HEADER + sizeof(ref)];
  frame_of(&ref, message);
  ff__arena_assign_message(message, sizeof(message), WORKER);
  assert_int_equal(ff_arena_receive(&ref, FF_ARENA_FROM_PARENT, &seen), 0);
  assert_int_equal(((unsigned char *)seen)[999], 0xab);
  /* While it is held its bytes are not given out again. */
  assert_int_equal(ff_arena_alloc(arena, 1000, &again, &data), 0);
  assert_true(again.chunk != ref.chunk || again.offset >= ref.offset + 1000);
  ff_arena_cancel(arena, &again);
  /* The receiver's release becomes a report, not a write to the chunk. */
  ff_arena_release(&ref, FF_ARENA_FROM_PARENT);
  ff__arena_report_t reports[4];
  assert_int_equal(ff__arena_take_reports(reports, 4), 1);
  assert_true(reports[0].chunk == ref.chunk && reports[0].slot == ref.slot &&
              reports[0].generation == ref.generation);
  /* From another worker, it is ignored; from the one given it, honoured. */
  ff__arena_reported(OTHER_WORKER, reports, sizeof(reports[0]));
  assert_int_equal(ff_arena_alloc(arena, 1000, &again, &data), 0);
  assert_true(again.offset != ref.offset);
  ff_arena_cancel(arena, &again);
  ff__arena_reported(WORKER, reports, sizeof(reports[0]));
  /* Released: the same warm bytes serve the next message. */
  assert_int_equal(ff_arena_alloc(arena, 1000, &again, &data), 0);
  assert_int_equal(again.chunk, ref.chunk);
  assert_int_equal(again.offset, ref.offset);
  assert_true(again.generation != ref.generation || again.slot != ref.slot);
  /* A stale report (the old generation) frees nothing. */
  ff__arena_reported(WORKER, reports, sizeof(reports[0]));
  ff_arena_ref_t third;
  assert_int_equal(ff_arena_alloc(arena, 1000, &third, &data), 0);
  assert_true(third.offset != again.offset);
  ff_arena_cancel(arena, &third);
  ff_arena_cancel(arena, &again);
  ff_arena_destroy(arena);
}

static void test_arena_cancel_unassign_and_death(void **state) {
  (void)state;
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 1 << 20), 0);
  ff_arena_ref_t ref, other;
  void *data;
  char message[FF_ARENA_FRAME_HEADER + sizeof(ref)];
  /* Never given to a worker: cancelling frees it. */
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &ref, &data), 0);
  frame_of(&ref, message);
  ff__arena_cancel_message(message, sizeof(message));
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &ref, &data), 0);
  /* Given to a worker: cancelling does not (it may be reading it). */
  frame_of(&ref, message);
  ff__arena_assign_message(message, sizeof(message), WORKER);
  ff__arena_cancel_message(message, sizeof(message));
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), -ENOSPC);
  /* Its worker died before running it: back to sent, for the next. */
  assert_int_equal(
      ff__arena_unassign_message(message, sizeof(message), OTHER_WORKER), 0);
  assert_int_equal(ff__arena_unassign_message(message, sizeof(message), WORKER),
                   1);
  ff__arena_assign_message(message, sizeof(message), OTHER_WORKER);
  /* That worker dies too: what it held is free. */
  ff__arena_drop_receiver(OTHER_WORKER);
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), 0);
  assert_int_equal(other.offset, ref.offset);
  /* A message whose worker let its bytes go cannot be sent again. */
  frame_of(&other, message);
  ff__arena_assign_message(message, sizeof(message), WORKER);
  ff__arena_report_t r = report_of(&other);
  ff__arena_reported(WORKER, &r, sizeof(r));
  assert_int_equal(ff__arena_unassign_message(message, sizeof(message), WORKER),
                   0);
  ff_arena_destroy(arena);
}

static void test_arena_share_keeps_bytes(void **state) {
  (void)state;
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 1 << 20), 0);
  ff_arena_ref_t first, second, other;
  void *data;
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &first, &data), 0);
  memset(data, 1, 600 << 10);
  assert_int_equal(ff_arena_share(arena, &first, &second), 0);
  assert_int_equal(second.offset, first.offset);
  ff_arena_cancel(arena, &first);
  /* One message still holds the bytes: the one chunk allowed has no room. */
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), -ENOSPC);
  /* Nor may a freed reference be shared again. */
  assert_int_equal(ff_arena_share(arena, &first, &other), -ESTALE);
  ff_arena_cancel(arena, &second);
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), 0);
  assert_int_equal(other.offset, first.offset);
  ff_arena_cancel(arena, &other);
  ff_arena_destroy(arena);
}

static void test_arena_results_to_parent(void **state) {
  (void)state;
  /* A worker's result arena: the parent's reports free what it sent; no
   * other receiver's do. */
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, FF_ARENA_TO_PARENT, 1 << 20,
                                   1 << 20),
                   0);
  ff_arena_ref_t ref, other;
  void *data;
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &ref, &data), 0);
  ff__arena_report_t r = report_of(&ref);
  ff__arena_reported(WORKER, &r, sizeof(r));
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), -ENOSPC);
  ff__arena_reported(FF__RECEIVER_PARENT, &r, sizeof(r));
  assert_int_equal(ff_arena_alloc(arena, 600 << 10, &other, &data), 0);
  ff_arena_cancel(arena, &other);
  ff_arena_destroy(arena);
}

static void test_arena_scribbled_header_is_ignored(void **state) {
  (void)state;
  /* Receivers map the chunk: whatever they write in its header, the sender
   * never hands out bytes in use. */
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 8 << 20), 0);
  ff_arena_ref_t held, next;
  unsigned char *data;
  assert_int_equal(ff_arena_alloc(arena, 4096, &held, (void **)&data), 0);
  memset(data, 0x5a, 4096);
  unsigned char *base = data - held.offset;
  for (size_t i = 0; i < FF__ARENA_HEADER; i++) base[i] = (unsigned char)(i * 7);
  for (int i = 0; i < 100; i++) {
    unsigned char *bytes;
    assert_int_equal(ff_arena_alloc(arena, 4096, &next, (void **)&bytes), 0);
    assert_true(bytes + 4096 <= data || bytes >= data + 4096);
    memset(bytes, 0, 4096);
    ff_arena_cancel(arena, &next);
  }
  assert_int_equal(data[0], 0x5a);
  assert_int_equal(data[4095], 0x5a);
  ff_arena_cancel(arena, &held);
  ff_arena_destroy(arena);
}

static void test_arena_limit_and_bad_references(void **state) {
  (void)state;
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 2 << 20), 0);
  ff_arena_ref_t ref;
  void *data;
  assert_int_equal(ff_arena_alloc(arena, 3 << 20, &ref, &data), -ENOSPC);
  assert_int_equal(ff_arena_alloc(arena, 1 << 19, &ref, &data), 0);
  ff_arena_ref_t bad = ref;
  bad.offset = 1 << 20;
  bad.length = 4096;
  assert_int_equal(ff_arena_receive(&bad, FF_ARENA_FROM_PARENT, &data),
                   FF_EPROTOCOL);
  bad = ref;
  bad.slot = 60000; /* past the slots */
  assert_int_equal(ff_arena_receive(&bad, FF_ARENA_FROM_PARENT, &data),
                   FF_EPROTOCOL);
  bad = ref;
  bad.chunk = UINT64_C(0x7fffffff00000009);
  assert_int_equal(ff_arena_receive(&bad, FF_ARENA_FROM_PARENT, &data),
                   -ENOENT);
  ff_arena_cancel(arena, &ref);
  ff_arena_destroy(arena);
}

static void test_arena_trim_releases_idle_chunks(void **state) {
  (void)state;
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 1 << 20, 64 << 20), 0);
  ff_arena_ref_t big, small;
  void *data;
  assert_int_equal(ff_arena_alloc(arena, 3 << 20, &big, &data), 0);
  /* Held: nothing to release. */
  assert_int_equal(ff_arena_trim(arena, 0), 0);
  ff_arena_cancel(arena, &big);
  /* A chunk for 3 MiB and its header: 4 MiB in steps of 2 MiB. */
  assert_int_equal(ff_arena_trim(arena, 0), 4 << 20);
  int fd;
  assert_int_equal(ff_segment_open(big.chunk, &fd), -ENOENT);
  /* The arena goes on with a new chunk. */
  assert_int_equal(ff_arena_alloc(arena, 1000, &small, &data), 0);
  assert_true(small.chunk != big.chunk);
  ff_arena_cancel(arena, &small);
  assert_int_equal(ff_arena_trim(arena, 1 << 20), 0);
  ff_arena_destroy(arena);
}

static void test_arena_held_region_is_lent_without_copy(void **state) {
  (void)state;
  /* A held region (an array's data) is whole pages, zeros when new, lent
   * to a message at its own bytes, and kept by the message after the
   * holder lets go. */
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, FF_ARENA_TO_PARENT, 4 << 20,
                                   64 << 20),
                   0);
  ff_arena_ref_t held, lent, other, again;
  void *data, *other_data;
  int fresh = 0;
  assert_int_equal(ff_arena_hold(arena, 10000, &held, &data, &fresh), 0);
  long page = sysconf(_SC_PAGESIZE);
  assert_int_equal(held.offset % (uint64_t)page, 0);
  assert_int_equal(held.length, 12288); /* three pages */
  assert_true(fresh);
  assert_int_equal(((char *)data)[9999], 0);
  memset(data, 5, 10000);
  assert_int_equal(ff_arena_lend(arena, &held, 4096, 5000, &lent), 0);
  assert_int_equal(lent.chunk, held.chunk);
  assert_int_equal(lent.offset, held.offset + 4096);
  assert_int_equal(lent.length, 5000);
  assert_int_equal(ff_arena_lend(arena, &held, 8192, 5000, &other), -EINVAL);
  /* A message's bytes never share a page with a held region. */
  assert_int_equal(ff_arena_alloc(arena, 100, &other, &other_data), 0);
  assert_true(other.offset >= held.offset + held.length ||
              other.offset + other.length <= held.offset);
  ff_arena_cancel(arena, &other);
  assert_int_equal(lent.flags, 0); /* the parent may map a result shared */
  ff_arena_unhold(arena, &held);
  assert_int_equal(ff_arena_lend(arena, &held, 0, 10, &other), -ESTALE);
  /* The message still holds its part: a new region lands elsewhere, and
   * is not fresh once the bytes were used. */
  assert_int_equal(ff_arena_hold(arena, 4096, &again, &data, &fresh), 0);
  assert_true(again.offset + again.length <= lent.offset ||
              again.offset >= lent.offset + lent.length);
  ff_arena_unhold(arena, &again);
  /* The parent's report frees the lent bytes. */
  ff__arena_report_t r = report_of(&lent);
  ff__arena_reported(FF__RECEIVER_PARENT, &r, sizeof(r));
  assert_int_equal(ff_arena_hold(arena, 10000, &again, &data, &fresh), 0);
  assert_int_equal(again.offset, held.offset);
  assert_false(fresh);
  ff_arena_unhold(arena, &again);
  assert_int_equal(ff_arena_trim(arena, 0), 4 << 20);
  ff_arena_destroy(arena);
}

static void test_arena_frozen_region_is_private_and_retired(void **state) {
  (void)state;
  /* Frozen before a fork: the child keeps what the region held, the
   * parent's later writes stay its own, and the region is neither lent nor
   * reused once let go. */
  ff_arena_t *arena;
  assert_int_equal(ff_arena_create(&arena, 0, 4 << 20, 64 << 20), 0);
  ff_arena_ref_t held, lent, again;
  void *data;
  int fresh;
  assert_int_equal(ff_arena_hold(arena, 8192, &held, &data, &fresh), 0);
  char *bytes = data;
  memset(bytes, 1, 8192);
  assert_int_equal(ff_arena_freeze(arena, &held), 0);
  assert_int_equal(bytes[8191], 1); /* the same bytes, at the same place */
  /* Lent while the file still has what this process sees. */
  assert_int_equal(ff_arena_lend(arena, &held, 0, 10, &lent), 0);
  assert_int_equal(lent.flags, FF_ARENA_REF_PRIVATE);
  ff_arena_cancel(arena, &lent);
  int ready[2];
  assert_int_equal(pipe(ready), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    char go;
    /* Wait for the parent's write, then check it is not seen. */
    if (read(ready[0], &go, 1) != 1) _exit(2);
    _exit(bytes[0] == 1 && bytes[8191] == 1 ? 0 : 1);
  }
  memset(bytes, 9, 8192);
  assert_int_equal(write(ready[1], "x", 1), 1);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  close(ready[0]);
  close(ready[1]);
  /* Written since: the file no longer has it, so it is copied instead. */
  assert_int_equal(ff_arena_lend(arena, &held, 0, 10, &lent), -EBUSY);
  /* The file kept what was there at the freeze. */
  int fd;
  assert_int_equal(ff_segment_open(held.chunk, &fd), 0);
  char seen;
  assert_int_equal(pread(fd, &seen, 1, (off_t)held.offset), 1);
  assert_int_equal(seen, 1);
  close(fd);
  ff_arena_unhold(arena, &held);
  assert_int_equal(ff_arena_hold(arena, 8192, &again, &data, &fresh), 0);
  assert_true(again.offset != held.offset);
  ff_arena_unhold(arena, &again);
  /* A chunk holding nothing but retired regions is idle. */
  assert_int_equal(ff_arena_trim(arena, 0), 4 << 20);
  ff_arena_destroy(arena);
}

static void test_arena_lent_by_its_holder_is_frozen(void **state) {
  (void)state;
  /* A parent lends an array it keeps: the region is frozen at once, the
   * reference is private, later writes stay the parent's, and once let go
   * the region is shared again and reused. A result region a fork froze is
   * never lent. */
  ff_arena_t *arena, *results;
  assert_int_equal(ff_arena_create(&arena, 0, 4 << 20, 64 << 20), 0);
  ff_arena_ref_t held, lent, again;
  void *data;
  int fresh;
  assert_int_equal(ff_arena_hold(arena, 8192, &held, &data, &fresh), 0);
  char *bytes = data;
  memset(bytes, 1, 8192);
  assert_int_equal(ff_arena_lend(arena, &held, 100, 5000, &lent), 0);
  assert_int_equal(lent.flags, FF_ARENA_REF_PRIVATE);
  bytes[5000] = 2; /* after sending: not in the file */
  int fd;
  assert_int_equal(ff_segment_open(held.chunk, &fd), 0);
  char seen;
  assert_int_equal(pread(fd, &seen, 1, (off_t)(held.offset + 5000)), 1);
  assert_int_equal(seen, 1);
  /* The first page was not written since: it may go again; the second
   * was, so the file is stale there. */
  ff_arena_ref_t second;
  assert_int_equal(ff_arena_lend(arena, &held, 0, 100, &second), 0);
  assert_int_equal(ff_arena_lend(arena, &held, 4096, 4096, &again), -EBUSY);
  ff_arena_cancel(arena, &second);
  ff_arena_unhold(arena, &held);
  ff_arena_cancel(arena, &lent);
  /* Shared again: what this process writes reaches the file. */
  assert_int_equal(ff_arena_hold(arena, 8192, &again, &data, &fresh), 0);
  assert_int_equal(again.offset, held.offset);
  ((char *)data)[300] = 7;
  assert_int_equal(pread(fd, &seen, 1, (off_t)(again.offset + 300)), 1);
  assert_int_equal(seen, 7);
  close(fd);
  ff_arena_unhold(arena, &again);
  ff_arena_destroy(arena);

  assert_int_equal(ff_arena_create(&results, FF_ARENA_TO_PARENT, 4 << 20,
                                   64 << 20),
                   0);
  assert_int_equal(ff_arena_hold(results, 8192, &held, &data, &fresh), 0);
  assert_int_equal(ff_arena_freeze(results, &held), 0);
  assert_int_equal(ff_arena_lend(results, &held, 0, 10, &lent), -EBUSY);
  ff_arena_unhold(results, &held);
  ff_arena_destroy(results);
}

static void test_frame_bounds(void **state) {
  (void)state;
  ff_arena_frame_t frame;
  char message[FF_ARENA_FRAME_HEADER + 2 * sizeof(ff_arena_ref_t) + 8];
  memset(message, 0, sizeof(message));
  assert_int_equal(ff_arena_frame("\x80\x05", 2, &frame), 0);
  memcpy(message, FF_ARENA_FRAME_MAGIC, 4);
  assert_int_equal(ff_arena_frame(message, 6, &frame), FF_EPROTOCOL);
  uint32_t counts[3] = {2, 1, 0};
  memcpy(message + 4, counts, sizeof(counts));
  uint64_t pin = UINT64_C(0x123456789);
  memcpy(message + FF_ARENA_FRAME_HEADER + 2 * sizeof(ff_arena_ref_t), &pin,
         sizeof(pin));
  assert_int_equal(ff_arena_frame(message, sizeof(message), &frame), 1);
  assert_int_equal(frame.refs, 2);
  assert_int_equal(frame.pins, 1);
  assert_int_equal(frame.body, sizeof(message));
  assert_true(ff_arena_frame_pin(message, &frame, 0) == pin);
  assert_int_equal(ff_arena_frame(message, sizeof(message) - 1, &frame),
                   FF_EPROTOCOL);
  counts[0] = UINT32_MAX;
  memcpy(message + 4, counts, sizeof(counts));
  assert_int_equal(ff_arena_frame(message, sizeof(message), &frame),
                   FF_EPROTOCOL);
  counts[0] = 0;
  counts[2] = 1; /* the reserved word must be zero */
  memcpy(message + 4, counts, sizeof(counts));
  assert_int_equal(ff_arena_frame(message, sizeof(message), &frame),
                   FF_EPROTOCOL);
}

static void test_pinned_segment_outlives_forget(void **state) {
  (void)state;
  uint64_t id;
  int fd;
  assert_int_equal(ff_segment_create(4096, 0, &id, &fd), 0);
  close(fd);
  char message[FF_ARENA_FRAME_HEADER + sizeof(uint64_t)];
  uint32_t counts[3] = {0, 1, 0};
  memcpy(message, FF_ARENA_FRAME_MAGIC, 4);
  memcpy(message + 4, counts, sizeof(counts));
  memcpy(message + FF_ARENA_FRAME_HEADER, &id, sizeof(id));
  ff__share_pin_message(message, sizeof(message));
  assert_int_equal(ff_segment_forget(id), 0);
  /* Still open for the task that carries it. */
  assert_int_equal(ff_segment_open(id, &fd), 0);
  close(fd);
  assert_int_equal(ff_segment_forget(id), -ENOENT);
  ff__share_unpin_message(message, sizeof(message));
  assert_int_equal(ff_segment_open(id, &fd), -ENOENT);
}

/* A segment received as a descriptor (as a fork server's child receives its
 * arguments') is opened and lent by its id, as if made here. */
static void test_adopted_segment(void **state) {
  (void)state;
  int memfd = ff__memfd("adopted", 4096);
  assert_true(memfd >= 0);
  char *mine = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  assert_true(mine != MAP_FAILED);
  mine[7] = 99;
  uint64_t id = UINT64_C(0x1234567890abcdef);
  int fd;
  assert_int_equal(ff_segment_open(id, &fd), -ENOENT);
  assert_int_equal(ff_segment_adopt(id, memfd), 0);
  assert_int_equal(fcntl(memfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  assert_int_equal(ff_segment_open(id, &fd), 0);
  char *again = map_fd(fd, 4096);
  assert_int_equal(again[7], 99);
  /* Known already: the copy is closed, the first one kept. */
  int copy = dup(memfd);
  assert_true(copy >= 0);
  assert_int_equal(ff_segment_adopt(id, copy), 0);
  assert_int_equal(fcntl(copy, F_GETFD), -1);
  assert_int_equal(ff_segment_open(id, &fd), 0);
  close(fd);
  /* Ids 0 and 1 name no segment; the descriptor is closed all the same. */
  copy = dup(memfd);
  assert_int_equal(ff_segment_adopt(1, copy), -EINVAL);
  assert_int_equal(fcntl(copy, F_GETFD), -1);
  assert_int_equal(ff_segment_adopt(id, -1), -EINVAL);
  assert_int_equal(ff_segment_forget(id), 0);
  assert_int_equal(ff_segment_open(id, &fd), -ENOENT);
  munmap(mine, 4096);
  munmap(again, 4096);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_adopted_segment, setup_alarm),
      cmocka_unit_test_setup(test_segment_open_and_forget, setup_alarm),
      cmocka_unit_test_setup(test_worker_asks_the_lender, setup_alarm),
      cmocka_unit_test_setup(test_arena_round_trip_and_reuse, setup_alarm),
      cmocka_unit_test_setup(test_arena_cancel_unassign_and_death, setup_alarm),
      cmocka_unit_test_setup(test_arena_share_keeps_bytes, setup_alarm),
      cmocka_unit_test_setup(test_arena_results_to_parent, setup_alarm),
      cmocka_unit_test_setup(test_arena_scribbled_header_is_ignored, setup_alarm),
      cmocka_unit_test_setup(test_arena_limit_and_bad_references, setup_alarm),
      cmocka_unit_test_setup(test_arena_trim_releases_idle_chunks, setup_alarm),
      cmocka_unit_test_setup(test_arena_held_region_is_lent_without_copy,
                             setup_alarm),
      cmocka_unit_test_setup(test_arena_frozen_region_is_private_and_retired,
                             setup_alarm),
      cmocka_unit_test_setup(test_arena_lent_by_its_holder_is_frozen,
                             setup_alarm),
      cmocka_unit_test_setup(test_frame_bounds, setup_alarm),
      cmocka_unit_test_setup(test_pinned_segment_outlives_forget, setup_alarm),
  };
  const char *filter = getenv("FF_TEST_FILTER");
  if (filter) cmocka_set_test_filter(filter);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
