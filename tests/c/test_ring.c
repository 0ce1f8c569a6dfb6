/* CMocka tests of the shared-memory rings (lib/ring.c): full and empty,
 * wrap-around, messages larger than a record, a two-process stress test,
 * a consumer killed mid-read, corruption and eventfd wake-ups.
 *
 * Each test arms alarm() so a hang fails instead of stalling; tests that
 * fork reap their own children. FF_TEST_FILTER selects tests by name. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../lib/internal.h"

/* Ten million: about a second here, two under AddressSanitizer. */
#define STRESS_MESSAGES 10000000u

static int setup_alarm(void **state) {
  (void)state;
  alarm(120);
  return 0;
}

/* A ring in a fresh shared segment, so it can be shared by fork. */
typedef struct {
  ff__shm_t shm;
  ff__ring_t ring;
} test_ring_t;

static void ring_open(test_ring_t *t, size_t capacity) {
  assert_int_equal(ff__shm_create(&t->shm, "test-ring", ff__ring_size(capacity)),
                   0);
  assert_int_equal(ff__ring_attach(&t->ring, t->shm.base, capacity, 1), 0);
}

static void ring_close(test_ring_t *t) { ff__shm_close(&t->shm); }

/* Fills buf with a pattern that depends on seed, so a shifted or mixed up
 * payload is caught. */
static void pattern(char *buf, size_t len, uint64_t seed) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)((seed * 31 + i * 7 + (i >> 8)) & 0xff);
}

static void expect_pattern(const char *buf, size_t len, uint64_t seed) {
  for (size_t i = 0; i < len; i++)
    if (buf[i] != (char)((seed * 31 + i * 7 + (i >> 8)) & 0xff))
      fail_msg("payload of message %llu differs at byte %zu",
               (unsigned long long)seed, i);
}

static int write_all(ff__ring_t *ring, uint16_t type, uint64_t id,
                     const void *data, size_t len) {
  size_t offset = 0;
  return ff__ring_write(ring, type, 0, id, data, len, &offset);
}

static void test_empty_and_full(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  ff__ring_reader_t reader = {0};
  ff__ring_msg_t msg;
  assert_int_equal(ff__ring_readable(&t.ring), 0);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 0);

  /* 48 bytes of payload make 64-byte records: 64 of them fill 4 KiB. */
  char payload[48];
  uint64_t written = 0;
  for (;;) {
    pattern(payload, sizeof(payload), written);
    int rc = write_all(&t.ring, FF__RING_TASK, written, payload,
                       sizeof(payload));
    if (rc == 0) break;
    assert_int_equal(rc, 1);
    written++;
    assert_true(written <= 64);
  }
  assert_int_equal(written, 64);
  assert_int_equal(ff__ring_check(&t.ring), 0);
  assert_int_equal(ff__ring_readable(&t.ring), 1);

  for (uint64_t i = 0; i < written; i++) {
    assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
    assert_int_equal(msg.type, FF__RING_TASK);
    assert_int_equal(msg.flags, 0);
    assert_int_equal(msg.id, i);
    assert_int_equal(msg.length, sizeof(payload));
    expect_pattern(msg.data, msg.length, i);
    ff__ring_release(&t.ring, &msg);
  }
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 0);
  assert_int_equal(ff__ring_readable(&t.ring), 0);
  assert_int_equal(ff__ring_check(&t.ring), 0);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

static void test_wrap_around(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 8192);
  ff__ring_reader_t reader = {0};
  char *buf = malloc(2048);
  assert_non_null(buf);
  uint64_t next_write = 0, next_read = 0;
  /* Odd sizes and a reader that lags by a varying amount make the
   * positions wrap many times, with PAD records at different places. */
  for (int round = 0; round < 2000; round++) {
    int burst = 1 + round % 5;
    for (int i = 0; i < burst; i++) {
      size_t len = (size_t)((next_write * 37 + 1) % 1500);
      pattern(buf, len, next_write);
      int rc = write_all(&t.ring, FF__RING_RESULT, next_write, buf, len);
      if (rc == 0) break;
      assert_int_equal(rc, 1);
      next_write++;
    }
    assert_int_equal(ff__ring_check(&t.ring), 0);
    int reads = 1 + (round * 7) % 4;
    for (int i = 0; i < reads; i++) {
      ff__ring_msg_t msg;
      int rc = ff__ring_read(&t.ring, &reader, &msg, NULL);
      if (rc == 0) break;
      assert_int_equal(rc, 1);
      assert_int_equal(msg.id, next_read);
      assert_int_equal(msg.length, (next_read * 37 + 1) % 1500);
      expect_pattern(msg.data, msg.length, next_read);
      ff__ring_release(&t.ring, &msg);
      next_read++;
    }
  }
  /* Far more bytes went through than the ring holds. */
  assert_true(next_read > 3000);
  free(buf);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

static void test_zero_length_and_largest_record(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  ff__ring_reader_t reader = {0};
  ff__ring_msg_t msg;
  assert_int_equal(write_all(&t.ring, FF__RING_STOP, 7, NULL, 0), 1);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
  assert_int_equal(msg.type, FF__RING_STOP);
  assert_int_equal(msg.id, 7);
  assert_int_equal(msg.length, 0);
  ff__ring_release(&t.ring, &msg);

  /* The largest payload that fits one record is read in place. */
  size_t largest = t.ring.max_record;
  char *buf = malloc(largest + 1);
  assert_non_null(buf);
  pattern(buf, largest, 1);
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 1, buf, largest), 1);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
  assert_int_equal(msg.length, largest);
  assert_ptr_equal(ff__ring_reader_take(&reader, &msg), NULL);
  expect_pattern(msg.data, largest, 1);
  ff__ring_release(&t.ring, &msg);

  /* One byte more takes two records, joined again. */
  pattern(buf, largest + 1, 2);
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 2, buf, largest + 1), 1);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
  assert_int_equal(msg.length, largest + 1);
  expect_pattern(msg.data, largest + 1, 2);
  ff__ring_release(&t.ring, &msg);
  free(buf);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

static void test_message_larger_than_ring(void **state) {
  (void)state;
  /* 1 MiB through a 64 KiB ring: the writer resumes at its offset as the
   * reader joins fragments and gives their space back. */
  test_ring_t t;
  ring_open(&t, 65536);
  ff__ring_reader_t reader = {0};
  size_t len = (size_t)1 << 20;
  char *buf = malloc(len);
  assert_non_null(buf);
  pattern(buf, len, 99);
  size_t offset = 0;
  int done = 0, rounds = 0;
  ff__ring_msg_t msg;
  int got = 0;
  while (!got) {
    if (!done) {
      int rc = ff__ring_write(&t.ring, FF__RING_RESULT, FF__RING_FAILED, 42,
                              buf, len, &offset);
      assert_true(rc == 0 || rc == 1);
      done = rc == 1;
    }
    assert_int_equal(ff__ring_check(&t.ring), 0);
    got = ff__ring_read(&t.ring, &reader, &msg, NULL);
    assert_true(got == 0 || got == 1);
    rounds++;
    assert_true(rounds < 1000);
  }
  assert_true(rounds > 10); /* it really went through in pieces */
  assert_int_equal(msg.type, FF__RING_RESULT);
  assert_int_equal(msg.flags, FF__RING_FAILED); /* MORE is not reported */
  assert_int_equal(msg.id, 42);
  assert_int_equal(msg.length, len);
  assert_memory_equal(msg.data, buf, len);
  char *taken = ff__ring_reader_take(&reader, &msg);
  assert_non_null(taken);
  assert_memory_equal(taken, buf, len);
  free(taken);
  ff__ring_release(&t.ring, &msg);
  assert_int_equal(ff__ring_readable(&t.ring), 0);
  free(buf);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

static void test_message_with_prefix(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  ff__ring_reader_t reader = {0};
  uint64_t prefix = 0x0102030405060708ull;
  char data[3000];
  pattern(data, sizeof(data), 5);
  size_t offset = 0;
  ff__ring_msg_t msg;
  int rc = 0, got = 0;
  while (!got) {
    if (rc != 1)
      rc = ff__ring_write2(&t.ring, FF__RING_RESULT, 0, 9, &prefix,
                           sizeof(prefix), data, sizeof(data), &offset);
    got = ff__ring_read(&t.ring, &reader, &msg, NULL);
  }
  assert_int_equal(msg.length, sizeof(prefix) + sizeof(data));
  assert_memory_equal(msg.data, &prefix, sizeof(prefix));
  assert_memory_equal(msg.data + sizeof(prefix), data, sizeof(data));
  ff__ring_release(&t.ring, &msg);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

/* FNV-1a, over ids and payload bytes, the same in both processes. */
static uint64_t checksum(uint64_t hash, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

static size_t stress_length(uint64_t i) { return 8 + (size_t)(i * 13 % 57); }

static void test_two_process_stress(void **state) {
  (void)state;
  alarm(300);
  test_ring_t t;
  ring_open(&t, 65536);
  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    /* The consumer: checks order and sums what it reads. */
    close(pipefd[0]);
    ff__ring_reader_t reader = {0};
    uint64_t hash = 14695981039346656037ull;
    uint64_t expected = 0;
    int ok = 1;
    while (expected < STRESS_MESSAGES) {
      ff__ring_msg_t msg;
      int rc = ff__ring_read(&t.ring, &reader, &msg, NULL);
      if (rc < 0) _exit(2);
      if (rc == 0) {
        ff__ring_wake_producer(&t.ring);
        if (ff__ring_wait_readable(&t.ring, 20000, UINT64_MAX) < 0) _exit(3);
        continue;
      }
      uint64_t seq;
      if (msg.id != expected || msg.length != stress_length(expected))
        ok = 0;
      memcpy(&seq, msg.data, sizeof(seq));
      if (seq != expected) ok = 0;
      hash = checksum(hash, &msg.id, sizeof(msg.id));
      hash = checksum(hash, msg.data, msg.length);
      ff__ring_release(&t.ring, &msg);
      if ((expected & 63) == 0) ff__ring_wake_producer(&t.ring);
      expected++;
    }
    ff__ring_wake_producer(&t.ring);
    if (write(pipefd[1], &hash, sizeof(hash)) != (ssize_t)sizeof(hash))
      _exit(4);
    _exit(ok ? 0 : 1);
  }
  close(pipefd[1]);
  uint64_t hash = 14695981039346656037ull;
  char payload[64];
  memset(payload, 0xa5, sizeof(payload));
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (uint64_t i = 0; i < STRESS_MESSAGES;) {
    /* Batches of up to 32, one wake-up each. */
    unsigned batch = 0;
    for (; batch < 32 && i < STRESS_MESSAGES; batch++) {
      size_t len = stress_length(i);
      memcpy(payload, &i, sizeof(i));
      size_t offset = 0;
      int rc = ff__ring_write(&t.ring, FF__RING_TASK, 0, i, payload, len,
                              &offset);
      assert_true(rc >= 0);
      if (rc == 0) break;
      hash = checksum(hash, &i, sizeof(i));
      hash = checksum(hash, payload, len);
      i++;
    }
    ff__ring_wake_consumer(&t.ring);
    if (batch == 0)
      assert_int_equal(ff__ring_wait_writable(&t.ring, 64, 20000, UINT64_MAX),
                       0);
  }
  uint64_t child_hash = 0;
  assert_int_equal(read(pipefd[0], &child_hash, sizeof(child_hash)),
                   sizeof(child_hash));
  clock_gettime(CLOCK_MONOTONIC, &end);
  close(pipefd[0]);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(child_hash == hash);
  double seconds = (double)(end.tv_sec - start.tv_sec) +
                   (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
  print_message("%u messages in %.2f s: %.1f M messages/s\n", STRESS_MESSAGES,
                seconds, STRESS_MESSAGES / seconds / 1e6);
  ring_close(&t);
}

typedef struct {
  ff__ring_t *ring;
  int rc;
} blocked_writer_t;

static void *wait_for_room(void *arg) {
  blocked_writer_t *b = arg;
  b->rc = ff__ring_wait_writable(b->ring, 1024, 0, ff__deadline(30));
  return NULL;
}

static void test_consumer_killed_mid_read(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  char payload[100];
  for (uint64_t i = 0; i < 8; i++) {
    pattern(payload, sizeof(payload), i);
    assert_int_equal(write_all(&t.ring, FF__RING_TASK, i, payload,
                               sizeof(payload)),
                     1);
  }
  int ready[2];
  assert_int_equal(pipe(ready), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    /* Reads two messages, releases one, and is killed in the middle of
     * the second. */
    ff__ring_reader_t reader = {0};
    ff__ring_msg_t msg;
    if (ff__ring_read(&t.ring, &reader, &msg, NULL) != 1) _exit(2);
    ff__ring_release(&t.ring, &msg);
    if (ff__ring_read(&t.ring, &reader, &msg, NULL) != 1) _exit(3);
    if (write(ready[1], "r", 1) != 1) _exit(4);
    for (;;) pause();
  }
  char c;
  assert_int_equal(read(ready[0], &c, 1), 1);
  assert_int_equal(kill(child, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFSIGNALED(status));
  close(ready[0]);
  close(ready[1]);

  /* Not corrupt: every invariant holds, and the message the consumer was
   * reading is still there, whole, at the head, for a consumer that takes
   * over (attaching, it starts where the dead one had published). */
  assert_int_equal(ff__ring_check(&t.ring), 0);
  assert_int_equal(ff__ring_attach(&t.ring, t.shm.base, 4096, 0), 0);
  ff__ring_reader_t reader = {0};
  ff__ring_msg_t msg;
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
  assert_int_equal(msg.id, 1);
  expect_pattern(msg.data, msg.length, 1);
  assert_int_equal(ff__ring_broken(&t.ring), 0);

  /* Fill it, so a producer blocks for room; breaking the ring (what the
   * supervisor does when it learns the consumer died) wakes it with an
   * error, and every later write fails. */
  while (write_all(&t.ring, FF__RING_TASK, 100, payload, sizeof(payload)) == 1) {
  }
  blocked_writer_t b = {&t.ring, 1};
  pthread_t thread;
  assert_int_equal(pthread_create(&thread, NULL, wait_for_room, &b), 0);
  usleep(50000);
  ff__ring_break(&t.ring);
  assert_int_equal(pthread_join(thread, NULL), 0);
  assert_int_equal(b.rc, -EPIPE);
  assert_int_equal(ff__ring_broken(&t.ring), 1);
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 101, payload, 1), -EPIPE);
  assert_int_equal(ff__ring_wait_readable(&t.ring, 0, ff__deadline(5)), 0);
  ff__ring_reader_free(&reader);
  ring_close(&t);
}

static void test_corrupt_record_detected(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  ff__ring_reader_t reader = {0};
  ff__ring_msg_t msg;
  char payload[32] = "hello";
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 1, payload, 32), 1);
  /* A hostile producer scribbles an unknown type... */
  uint16_t bad_type = 99;
  memcpy(t.ring.data + 4, &bad_type, sizeof(bad_type));
  assert_int_equal(ff__ring_check(&t.ring), FF_EPROTOCOL);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), FF_EPROTOCOL);
  /* ...or a length that runs past what was published. */
  uint16_t good_type = FF__RING_TASK;
  memcpy(t.ring.data + 4, &good_type, sizeof(good_type));
  assert_int_equal(ff__ring_check(&t.ring), 0);
  uint32_t long_length = 4000;
  memcpy(t.ring.data, &long_length, sizeof(long_length));
  assert_int_equal(ff__ring_check(&t.ring), FF_EPROTOCOL);
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), FF_EPROTOCOL);
  ring_close(&t);
}

static void test_attach_checks_header(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  ff__ring_t other;
  assert_int_equal(ff__ring_attach(&other, t.shm.base, 4096, 0), 0);
  assert_int_equal(ff__ring_attach(&other, t.shm.base, 8192, 0),
                   FF_EPROTOCOL);
  assert_int_equal(ff__ring_attach(&other, t.shm.base, 3000, 1), -EINVAL);
  ring_close(&t);
}

static uint64_t eventfd_count(int fd) {
  uint64_t count = 0;
  if (read(fd, &count, sizeof(count)) != (ssize_t)sizeof(count)) return 0;
  return count;
}

static void test_eventfd_wake_only_when_armed(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true(fd >= 0);
  t.ring.consumer_fd = fd;
  char payload[16] = {0};
  /* The consumer is awake (did not arm): no wake-up is paid for. */
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 1, payload, 16), 1);
  ff__ring_wake_consumer(&t.ring);
  assert_int_equal(eventfd_count(fd), 0);
  /* Arming with something to read says so, and the consumer must not
   * sleep. */
  assert_int_equal(ff__ring_arm_consumer(&t.ring), 1);
  ff__ring_reader_t reader = {0};
  ff__ring_msg_t msg;
  assert_int_equal(ff__ring_read(&t.ring, &reader, &msg, NULL), 1);
  ff__ring_release(&t.ring, &msg);
  /* Armed on an empty ring: the next batch rings the eventfd once. */
  assert_int_equal(ff__ring_arm_consumer(&t.ring), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(write_all(&t.ring, FF__RING_TASK, 2, payload, 16), 1);
  ff__ring_wake_consumer(&t.ring);
  ff__ring_wake_consumer(&t.ring);
  assert_int_equal(eventfd_count(fd), 1);
  /* A disarmed ring rings nothing. */
  ff__ring_disarm_consumer(&t.ring);
  assert_int_equal(write_all(&t.ring, FF__RING_TASK, 3, payload, 16), 1);
  ff__ring_wake_consumer(&t.ring);
  assert_int_equal(eventfd_count(fd), 0);
  close(fd);
  ring_close(&t);
}

static void test_futex_wait_and_wake(void **state) {
  (void)state;
  test_ring_t t;
  ring_open(&t, 4096);
  /* Nothing to read: the wait times out. */
  assert_int_equal(ff__ring_wait_readable(&t.ring, 1000, ff__deadline(0.05)),
                   -ETIMEDOUT);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    usleep(50000);
    char payload[8] = "wake";
    size_t offset = 0;
    if (ff__ring_write(&t.ring, FF__RING_TASK, 0, 1, payload, 8, &offset) != 1)
      _exit(1);
    ff__ring_wake_consumer(&t.ring);
    _exit(0);
  }
  /* No spin: this sleeps on the shared futex until the other process
   * writes and wakes it. */
  assert_int_equal(ff__ring_wait_readable(&t.ring, 0, ff__deadline(30)), 0);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ring_close(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_empty_and_full, setup_alarm),
      cmocka_unit_test_setup(test_wrap_around, setup_alarm),
      cmocka_unit_test_setup(test_zero_length_and_largest_record, setup_alarm),
      cmocka_unit_test_setup(test_message_larger_than_ring, setup_alarm),
      cmocka_unit_test_setup(test_message_with_prefix, setup_alarm),
      cmocka_unit_test_setup(test_two_process_stress, setup_alarm),
      cmocka_unit_test_setup(test_consumer_killed_mid_read, setup_alarm),
      cmocka_unit_test_setup(test_corrupt_record_detected, setup_alarm),
      cmocka_unit_test_setup(test_attach_checks_header, setup_alarm),
      cmocka_unit_test_setup(test_eventfd_wake_only_when_armed, setup_alarm),
      cmocka_unit_test_setup(test_futex_wait_and_wake, setup_alarm),
  };
  const char *filter = getenv("FF_TEST_FILTER");
  if (filter) cmocka_set_test_filter(filter);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
