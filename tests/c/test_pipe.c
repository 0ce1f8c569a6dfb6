/* CMocka tests of lib/pipe.c: a round trip between two processes,
 * descriptors beside messages, timeouts that expire on time, the wake-up
 * of a receiver that sleeps elsewhere (arm/disarm), and a hang-up seen by
 * the other end. Each test reaps the children it forks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forkfarm.h"
#include "test_helpers.h"

#define REGION ((size_t)64 << 10)

typedef struct {
  uint64_t segment;
  ff_pipe_t *a; /* reads channel 0, writes 1 */
  ff_pipe_t *b; /* reads channel 1, writes 0 */
} pair_t;

static void pair_open(pair_t *p) {
  int fd;
  assert_int_equal(
      ff_segment_create(FF_PIPE_HEADER + 2 * REGION, 0, &p->segment, &fd), 0);
  close(fd);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(ff_pipe_open(&p->a, p->segment, 0, REGION, 0, 1, sv[0], 1),
                   0);
  assert_int_equal(ff_pipe_open(&p->b, p->segment, 0, REGION, 1, 0, sv[1], 1),
                   0);
}

static void pair_close(pair_t *p) {
  ff_pipe_destroy(p->a);
  ff_pipe_destroy(p->b);
  assert_int_equal(ff_segment_forget(p->segment), 0);
}

typedef struct {
  char data[2048];
  size_t length;
} message_t;

static void *message_alloc(void *arg, size_t length) {
  message_t *m = arg;
  if (length > sizeof(m->data)) return NULL;
  m->length = length;
  return m->data;
}

/* Receives through signals. */
static int recv_message(ff_pipe_t *pipe, double timeout, message_t *m) {
  int rc;
  while ((rc = ff_pipe_recv(pipe, timeout, message_alloc, m)) == -EINTR) {
  }
  return rc;
}

static int reap(pid_t pid) {
  int status;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_open_checks(void **state) {
  (void)state;
  int fd;
  uint64_t id;
  assert_int_equal(ff_segment_create(FF_PIPE_HEADER + 2 * REGION, 0, &id, &fd),
                   0);
  close(fd);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ff_pipe_t *pipe;
  /* Regions too small or unaligned, an offset off a page, no channel 2. */
  assert_int_equal(ff_pipe_open(&pipe, id, 0, 4096, 0, 1, sv[0], 1), -EINVAL);
  assert_int_equal(ff_pipe_open(&pipe, id, 0, REGION + 1, 0, 1, sv[0], 1),
                   -EINVAL);
  assert_int_equal(ff_pipe_open(&pipe, id, 100, REGION, 0, 1, sv[0], 1),
                   -EINVAL);
  assert_int_equal(ff_pipe_open(&pipe, id, 0, REGION, 2, 1, sv[0], 1),
                   -EINVAL);
  /* The segment's size, as the kernel knows it, does not hold the pipe. */
  assert_int_equal(ff_pipe_open(&pipe, id, 4096, REGION, 0, 1, sv[0], 1),
                   -EINVAL);
  assert_int_equal(ff_pipe_open(&pipe, id, 0, 2 * REGION, 0, 1, sv[0], 1),
                   -EINVAL);
  /* Not made yet (init 0): no channel there. */
  assert_int_equal(ff_pipe_open(&pipe, id, 0, REGION, 0, 1, sv[0], 0),
                   -EINVAL);
  assert_int_equal(ff_pipe_open(&pipe, UINT64_C(987654321), 0, REGION, 0, 1,
                                sv[0], 1),
                   -ENOENT);
  /* A one-way end. */
  assert_int_equal(ff_pipe_open(&pipe, id, 0, REGION, 0, -1, sv[0], 1), 0);
  assert_int_equal(ff_pipe_readable(pipe), 1);
  assert_int_equal(ff_pipe_writable(pipe), 0);
  assert_int_equal(ff_pipe_fd(pipe), sv[0]);
  assert_int_equal(ff_pipe_send(pipe, "x", 1, 0), -EBADF);
  ff_pipe_close(pipe);
  assert_int_equal(ff_pipe_fd(pipe), -1);
  assert_int_equal(ff_pipe_poll(pipe, 0), -EBADF);
  ff_pipe_destroy(pipe);
  close(sv[1]);
  assert_int_equal(ff_segment_forget(id), 0);
}

#define TRIPS 20000

/* The child echoes each message back until the end of the stream. */
static void test_round_trip(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    ff_pipe_destroy(p.a);
    message_t m;
    int rc;
    while ((rc = recv_message(p.b, -1, &m)) == 0)
      if (ff_pipe_send(p.b, m.data, m.length, -1) != 0) _exit(2);
    _exit(rc == -EPIPE ? 0 : 3);
  }
  ff_pipe_destroy(p.b);
  p.b = NULL;
  for (int i = 0; i < TRIPS; i++) {
    char out[32];
    int length = snprintf(out, sizeof(out), "message %d", i);
    assert_int_equal(ff_pipe_send(p.a, out, (size_t)length, -1), 0);
    message_t m;
    assert_int_equal(recv_message(p.a, 10, &m), 0);
    assert_int_equal(m.length, (size_t)length);
    assert_memory_equal(m.data, out, (size_t)length);
  }
  /* Several in flight, then one too large for the ring. */
  for (int i = 0; i < 100; i++)
    assert_int_equal(ff_pipe_send(p.a, &i, sizeof(i), -1), 0);
  for (int i = 0; i < 100; i++) {
    message_t m;
    assert_int_equal(recv_message(p.a, 10, &m), 0);
    assert_int_equal(m.length, sizeof(i));
    assert_memory_equal(m.data, &i, sizeof(i));
  }
  static char big[2 * REGION];
  assert_int_equal(ff_pipe_send(p.a, big, sizeof(big), 0), -EMSGSIZE);
  ff_pipe_close(p.a);
  assert_int_equal(reap(pid), 0);
  pair_close(&p);
  assert_no_children();
}

/* Descriptors go beside the messages, wake-ups among them: the child
 * writes into the pipe(2) it receives, and echoes a message. */
static void test_descriptors(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    ff_pipe_destroy(p.a);
    message_t m;
    if (recv_message(p.b, 10, &m) != 0) _exit(2);
    int fds[FF_PIPE_MAX_FDS];
    int n = ff_pipe_recv_fds(p.b, fds, 10);
    if (n != 2) _exit(3);
    if (write(fds[1], "hi", 2) != 2) _exit(4);
    close(fds[0]);
    close(fds[1]);
    if (ff_pipe_send(p.b, m.data, m.length, 10) != 0) _exit(5);
    _exit(ff_pipe_recv_fds(p.b, fds, 10) == -EPIPE ? 0 : 6);
  }
  ff_pipe_destroy(p.b);
  p.b = NULL;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  /* The child sleeps on its socket by now, most likely: the message
   * rings it, and the wake-up byte sits before the descriptors. */
  struct timespec pause = {0, 20 * 1000 * 1000};
  nanosleep(&pause, NULL);
  assert_int_equal(ff_pipe_send(p.a, "ping", 4, 10), 0);
  assert_int_equal(ff_pipe_send_fds(p.a, fds, 2, 10), 0);
  assert_int_equal(ff_pipe_send_fds(p.a, fds, 0, 10), -EINVAL);
  close(fds[1]);
  message_t m;
  assert_int_equal(recv_message(p.a, 10, &m), 0);
  assert_int_equal(m.length, 4);
  char got[2];
  assert_int_equal(read(fds[0], got, 2), 2);
  assert_memory_equal(got, "hi", 2);
  close(fds[0]);
  ff_pipe_close(p.a);
  assert_int_equal(reap(pid), 0);
  pair_close(&p);
  assert_no_children();
}

static void test_timeouts(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p);
  struct timespec start;
  message_t m;
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(recv_message(p.a, 0, &m), -ETIMEDOUT);
  assert_int_equal(ff_pipe_poll(p.a, 0), 0);
  assert_true(seconds_since(&start) < 0.05);
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(recv_message(p.a, 0.2, &m), -ETIMEDOUT);
  double took = seconds_since(&start);
  assert_true(took >= 0.2);
  assert_true(took < 1.0);
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(ff_pipe_poll(p.a, 0.1), 0);
  took = seconds_since(&start);
  assert_true(took >= 0.1);
  assert_true(took < 1.0);
  /* A full channel: the sender waits for room until its timeout. */
  char block[1024] = {0};
  int sent = 0;
  while (ff_pipe_send(p.a, block, sizeof(block), 0) == 0) sent++;
  assert_true(sent > 0);
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(ff_pipe_send(p.a, block, sizeof(block), 0.1), -ETIMEDOUT);
  took = seconds_since(&start);
  assert_true(took >= 0.1);
  assert_true(took < 1.0);
  /* A descriptor wait too. */
  int fds[FF_PIPE_MAX_FDS];
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(ff_pipe_recv_fds(p.b, fds, 0.1), -ETIMEDOUT);
  took = seconds_since(&start);
  assert_true(took >= 0.1);
  assert_true(took < 1.0);
  /* What was sent is all there, and no more. */
  for (int i = 0; i < sent; i++) {
    assert_int_equal(ff_pipe_poll(p.b, 0), 1);
    assert_int_equal(recv_message(p.b, 0, &m), 0);
    assert_int_equal(m.length, sizeof(block));
  }
  assert_int_equal(recv_message(p.b, 0, &m), -ETIMEDOUT);
  pair_close(&p);
}

/* A receiver that sleeps in its own poll(): arm, sleep on the end's
 * socket, and the sender's message wakes it. */
static void test_arm_wakes(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p);
  assert_int_equal(ff_pipe_arm(p.a), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    _exit(ff_pipe_send(p.b, "wake", 4, 10) == 0 ? 0 : 2);
  }
  struct pollfd fd = {ff_pipe_fd(p.a), POLLIN, 0};
  assert_int_equal(poll(&fd, 1, 10000), 1);
  assert_int_equal(ff_pipe_disarm(p.a), 1);
  /* Drained: the socket is quiet again. */
  assert_int_equal(poll(&fd, 1, 0), 0);
  message_t m;
  assert_int_equal(recv_message(p.a, 0, &m), 0);
  assert_int_equal(m.length, 4);
  assert_int_equal(reap(pid), 0);
  pair_close(&p);
  assert_no_children();
}

/* The child sends a message and dies without closing anything: the parent
 * reads the message, then the end of the stream; its sends fail once they
 * pile up. */
static void test_hang_up(void **state) {
  (void)state;
  pair_t p;
  pair_open(&p);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (ff_pipe_send(p.b, "last", 4, 10) != 0) _exit(2);
    _exit(0);
  }
  ff_pipe_destroy(p.b);
  p.b = NULL;
  message_t m;
  assert_int_equal(recv_message(p.a, 10, &m), 0);
  assert_memory_equal(m.data, "last", 4);
  /* Waits for nothing more: the kernel closed the child's socket. */
  assert_int_equal(recv_message(p.a, 10, &m), -EPIPE);
  assert_int_equal(ff_pipe_poll(p.a, 0), 1);
  assert_int_equal(reap(pid), 0);
  assert_int_equal(ff_pipe_send(p.a, "x", 1, 0), 0);
  assert_int_equal(ff_pipe_send(p.a, "y", 1, 0), -EPIPE);
  int fds[FF_PIPE_MAX_FDS];
  assert_int_equal(ff_pipe_recv_fds(p.a, fds, 10), -EPIPE);
  pair_close(&p);
  assert_no_children();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_open_checks, setup_alarm),
      cmocka_unit_test_setup(test_round_trip, setup_alarm),
      cmocka_unit_test_setup(test_descriptors, setup_alarm),
      cmocka_unit_test_setup(test_timeouts, setup_alarm),
      cmocka_unit_test_setup(test_arm_wakes, setup_alarm),
      cmocka_unit_test_setup(test_hang_up, setup_alarm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
