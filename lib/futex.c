/* Clocks, deadlines and futex waits: the way every blocking call here
 * sleeps, with a timeout and an early return on signals. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t ff__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ff__deadline(double timeout) {
  if (timeout < 0 || isnan(timeout)) return UINT64_MAX;
  /* Anything beyond a century is as good as no limit, and must not
   * overflow the conversion. */
  if (timeout > 3.0e9) return UINT64_MAX;
  return ff__now_ns() + (uint64_t)(timeout * 1e9);
}

static int futex_wait(_Atomic uint32_t *word, uint32_t expected,
                      uint64_t deadline_ns, int op) {
  struct timespec rel, *relp = NULL;
  if (deadline_ns != UINT64_MAX) {
    uint64_t now = ff__now_ns();
    if (now >= deadline_ns) return -ETIMEDOUT;
    uint64_t left = deadline_ns - now;
    rel.tv_sec = (time_t)(left / 1000000000u);
    rel.tv_nsec = (long)(left % 1000000000u);
    relp = &rel;
  }
  long rc = syscall(SYS_futex, (uint32_t *)word, op, expected, relp, NULL, 0);
  if (rc == 0) return 0;
  if (errno == EAGAIN) return 0; /* the value had already changed */
  if (errno == ETIMEDOUT) return -ETIMEDOUT;
  if (errno == EINTR) return -EINTR;
  return -errno;
}

int ff__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                   uint64_t deadline_ns) {
  return futex_wait(word, expected, deadline_ns, FUTEX_WAIT_PRIVATE);
}

int ff__futex_wait_shared(_Atomic uint32_t *word, uint32_t expected,
                          uint64_t deadline_ns) {
  return futex_wait(word, expected, deadline_ns, FUTEX_WAIT);
}

void ff__futex_wake_all(_Atomic uint32_t *word) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
          0);
}

void ff__futex_wake_shared(_Atomic uint32_t *word) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void ff__spin_pause(unsigned iteration) {
  if (iteration < 64)
    ff__cpu_relax();
  else
    sched_yield();
}

void ff__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int ff__futex_sleep(_Atomic uint32_t *word, uint32_t value,
                    _Atomic uint32_t *sleepers, uint64_t deadline_ns) {
  int rc = 0;
  atomic_fetch_add(sleepers, 1);
  while (atomic_load(word) == value) {
    rc = ff__futex_wait(word, value, deadline_ns);
    if (rc == -ETIMEDOUT || rc == -EINTR) {
      if (atomic_load(word) != value) rc = 0;
      break;
    }
    rc = 0;
  }
  atomic_fetch_sub(sleepers, 1);
  return rc;
}

void ff__futex_publish(_Atomic uint32_t *word, uint32_t value,
                       _Atomic uint32_t *sleepers) {
  atomic_store(word, value);
  if (atomic_load(sleepers)) ff__futex_wake_all(word);
}

void ff__futex_bump(_Atomic uint32_t *word, _Atomic uint32_t *sleepers) {
  atomic_fetch_add(word, 1);
  if (atomic_load(sleepers)) ff__futex_wake_all(word);
}
