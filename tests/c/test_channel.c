/* CMocka tests of lib/channel.c: order, bounds, growth, many producers and
 * consumers across processes, a dead lock holder, task_done/join. Each test
 * reaps the children it forks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forkfarm.h"
#include "test_helpers.h"

#define REGION_SIZE ((size_t)64 << 20)

static void *region_new(void) {
  void *p = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(p != MAP_FAILED);
  return p;
}

static void region_free(void *p) { munmap(p, REGION_SIZE); }

typedef struct {
  char *buffer;
  size_t capacity;
  size_t length;
} sink_t;

static void *sink_alloc(void *arg, size_t length) {
  sink_t *s = arg;
  if (length > s->capacity) return NULL;
  s->length = length;
  return s->buffer;
}

static int get_message(ff_channel_t *c, char *buffer, size_t capacity,
                       double timeout, size_t *length) {
  sink_t sink = {buffer, capacity, 0};
  int rc;
  while ((rc = ff_channel_get(c, timeout, sink_alloc, &sink, NULL)) == -EINTR) {
  }
  *length = sink.length;
  return rc;
}

static void test_order_and_bounds(void **state) {
  (void)state;
  void *region = region_new();
  ff_channel_t channel, *c = &channel;
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), -EINVAL);
  assert_int_equal(ff_channel_init(region, REGION_SIZE, 4096, 3), 0);
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), 0);
  char buffer[64];
  size_t length;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0.1, &length),
                   -ETIMEDOUT);
  assert_true(seconds_since(&start) >= 0.1);
  assert_int_equal(ff_channel_put(c, "one", 3, 0, NULL), 0);
  assert_int_equal(ff_channel_put(c, "", 0, 0, NULL), 0);
  assert_int_equal(ff_channel_put(c, "three", 5, 0, NULL), 0);
  assert_int_equal(ff_channel_count(c), 3);
  assert_int_equal(ff_channel_put(c, "four", 4, 0.05, NULL), -ETIMEDOUT);
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0, &length), 0);
  assert_int_equal(length, 3);
  assert_memory_equal(buffer, "one", 3);
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0, &length), 0);
  assert_int_equal(length, 0);
  /* A buffer too small leaves the message where it is. */
  assert_int_equal(get_message(c, buffer, 2, 0, &length), -ENOMEM);
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0, &length), 0);
  assert_memory_equal(buffer, "three", 5);
  assert_int_equal(ff_channel_count(c), 0);
  assert_int_equal(ff_channel_put(c, buffer, REGION_SIZE, 0, NULL),
                   -EMSGSIZE);
  region_free(region);
}

/* Messages far beyond the first ring's size: it grows, keeps their order
 * across the growths, and shrinks back when emptied. */
static void test_growth(void **state) {
  (void)state;
  void *region = region_new();
  ff_channel_t channel, *c = &channel;
  assert_int_equal(ff_channel_init(region, REGION_SIZE, 4096, 0), 0);
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), 0);
  enum { COUNT = 20000 };
  char message[300];
  for (int i = 0; i < COUNT; i++) {
    size_t n = (size_t)(i % 290) + 8;
    memset(message, (char)i, n);
    memcpy(message, &i, sizeof(i));
    assert_int_equal(ff_channel_put(c, message, n, 0, NULL), 0);
    if (i % 7 == 0) { /* some gets along the way: the ring wraps */
      size_t length;
      int got;
      assert_int_equal(get_message(c, message, sizeof(message), 0, &length),
                       0);
      memcpy(&got, message, sizeof(got));
      assert_int_equal(got, i / 7);
    }
  }
  int expected = COUNT / 7 + 1;
  size_t length;
  while (get_message(c, message, sizeof(message), 0, &length) == 0) {
    int got;
    memcpy(&got, message, sizeof(got));
    assert_int_equal(got, expected);
    assert_int_equal(length, (size_t)(expected % 290) + 8);
    assert_int_equal((unsigned char)message[length - 1],
                     (unsigned char)(char)expected);
    expected++;
  }
  assert_int_equal(expected, COUNT);
  /* Empty and shrunk: the same small ring serves again. */
  assert_int_equal(ff_channel_put(c, "again", 5, 0, NULL), 0);
  assert_int_equal(get_message(c, message, sizeof(message), 0, &length), 0);
  assert_memory_equal(message, "again", 5);
  region_free(region);
}

/* Two producers and two consumers in four processes: every message arrives
 * once, and each producer's messages in the order it put them. */
static void test_many_processes(void **state) {
  (void)state;
  void *region = region_new();
  ff_channel_t channel, *c = &channel;
  assert_int_equal(ff_channel_init(region, REGION_SIZE, 4096, 0), 0);
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), 0);
  enum { PER_PRODUCER = 50000, PRODUCERS = 2, CONSUMERS = 2 };
  /* Per consumer, per producer: the count received and the last sequence. */
  long *seen = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(seen != MAP_FAILED);
  pid_t pids[PRODUCERS + CONSUMERS];
  for (int p = 0; p < PRODUCERS; p++) {
    pids[p] = fork();
    assert_true(pids[p] >= 0);
    if (pids[p] == 0) {
      for (long i = 0; i < PER_PRODUCER; i++) {
        long message[2] = {p, i};
        int rc;
        while ((rc = ff_channel_put(c, message, sizeof(message), -1, NULL)) ==
               -EINTR) {
        }
        if (rc != 0) _exit(2);
      }
      _exit(0);
    }
  }
  for (int k = 0; k < CONSUMERS; k++) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    pids[PRODUCERS + k] = pid;
    if (pid == 0) {
      long last[PRODUCERS] = {-1, -1};
      for (;;) {
        long message[2];
        size_t length;
        int rc = get_message(c, (char *)message, sizeof(message), 2.0, &length);
        if (rc == -ETIMEDOUT) break;
        if (rc != 0 || length != sizeof(message)) _exit(3);
        long p = message[0], i = message[1];
        if (p < 0 || p >= PRODUCERS || i <= last[p]) _exit(4);
        last[p] = i;
        seen[k * PRODUCERS + p]++;
      }
      _exit(0);
    }
  }
  for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
    int status;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  for (int p = 0; p < PRODUCERS; p++) {
    long total = 0;
    for (int k = 0; k < CONSUMERS; k++) total += seen[k * PRODUCERS + p];
    assert_int_equal(total, PER_PRODUCER);
  }
  munmap(seen, 4096);
  region_free(region);
  assert_no_children();
}

/* A process killed while it holds the channel's lock: the next put and get
 * go on, and say so. */
static void test_dead_holder(void **state) {
  (void)state;
  void *region = region_new();
  ff_channel_t channel, *c = &channel;
  assert_int_equal(ff_channel_init(region, REGION_SIZE, 4096, 0), 0);
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), 0);
  assert_int_equal(ff_channel_put(c, "kept", 4, 0, NULL), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The lock is the header's first field. */
    if (ff_mutex_acquire((ff_mutex_t *)region, -1, NULL) != 0) _exit(2);
    kill(getpid(), SIGKILL);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  int recovered = 0;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(ff_channel_put(c, "more", 4, 5, &recovered), 0);
  assert_true(seconds_since(&start) < 1.0);
  assert_int_equal(recovered, pid);
  char buffer[8];
  size_t length;
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0, &length), 0);
  assert_memory_equal(buffer, "kept", 4);
  assert_int_equal(get_message(c, buffer, sizeof(buffer), 0, &length), 0);
  assert_memory_equal(buffer, "more", 4);
  region_free(region);
  assert_no_children();
}

static void test_task_done_and_join(void **state) {
  (void)state;
  void *region = region_new();
  ff_channel_t channel, *c = &channel;
  assert_int_equal(ff_channel_init(region, REGION_SIZE, 4096, 0), 0);
  assert_int_equal(ff_channel_attach(region, REGION_SIZE, c), 0);
  assert_int_equal(ff_channel_join(c, 0), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(ff_channel_put(c, "x", 1, 0, NULL), 0);
  assert_int_equal(ff_channel_join(c, 0.05), -ETIMEDOUT);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char buffer[4];
    size_t length;
    for (int i = 0; i < 3; i++) {
      if (get_message(c, buffer, sizeof(buffer), 5, &length) != 0) _exit(2);
      usleep(20000);
      if (ff_channel_task_done(c) != 0) _exit(3);
    }
    _exit(0);
  }
  int rc;
  while ((rc = ff_channel_join(c, 10)) == -EINTR) {
  }
  assert_int_equal(rc, 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(ff_channel_task_done(c), -EOVERFLOW);
  region_free(region);
  assert_no_children();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_order_and_bounds, setup_alarm),
      cmocka_unit_test_setup(test_growth, setup_alarm),
      cmocka_unit_test_setup(test_many_processes, setup_alarm),
      cmocka_unit_test_setup(test_dead_holder, setup_alarm),
      cmocka_unit_test_setup(test_task_done_and_join, setup_alarm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
