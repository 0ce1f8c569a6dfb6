/* What the CMocka tests of process-shared objects (test_sync.c,
 * test_channel.c) share: include after cmocka.h. */
#ifndef FF_TEST_HELPERS_H
#define FF_TEST_HELPERS_H

#include <errno.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Seconds on the monotonic clock since start. */
static inline double seconds_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) +
         (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* A test that forks reaps every child before it ends. */
static inline void assert_no_children(void) {
  assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

/* A hang fails the run instead of stalling it. */
static inline int setup_alarm(void **state) {
  (void)state;
  alarm(60);
  return 0;
}

#endif
