/* CMocka tests of lib/sync.c: process-shared mutexes, semaphores, events and
 * conditions, between forked processes over a MAP_SHARED mapping. Each test
 * reaps the children it forks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forkfarm.h"
#include "test_helpers.h"

typedef struct {
  ff_mutex_t mutex;
  ff_semaphore_t semaphore;
  ff_event_t event;
  ff_event_t go;
  ff_cond_t cond;
  long counter;
  _Atomic int woken;
  _Atomic int ready;
} shared_t;

static shared_t *shared_new(void) {
  void *p = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  shared_t *s = p;
  assert_int_equal(ff_mutex_init(&s->mutex), 0);
  assert_int_equal(ff_semaphore_init(&s->semaphore, 0, 0), 0);
  assert_int_equal(ff_event_init(&s->event), 0);
  assert_int_equal(ff_event_init(&s->go), 0);
  assert_int_equal(ff_cond_init(&s->cond), 0);
  return s;
}

static void shared_free(shared_t *s) { munmap(s, sizeof(*s)); }

static void reap(pid_t pid, int expected_code) {
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (expected_code >= 0) {
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), expected_code);
  }
}

/* ---- mutex ---------------------------------------------------------------- */

static void test_mutex_basics(void **state) {
  (void)state;
  shared_t *s = shared_new();
  assert_int_equal(ff_mutex_release(&s->mutex), -EPERM); /* not held */
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_mutex_holder(&s->mutex), getpid());
  assert_true(ff_mutex_held_by_caller(&s->mutex));
  /* Not recursive: a second acquire waits, here until its timeout. */
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  assert_int_equal(ff_mutex_acquire(&s->mutex, 0.1, NULL), -ETIMEDOUT);
  double took = seconds_since(&start);
  assert_true(took >= 0.1 && took < 0.5);
  assert_int_equal(ff_mutex_acquire(&s->mutex, 0, NULL), -ETIMEDOUT);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  assert_int_equal(ff_mutex_holder(&s->mutex), 0);
  assert_false(ff_mutex_held_by_caller(&s->mutex));
  assert_int_equal(ff_mutex_acquire(&s->mutex, 0, NULL), 0);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  shared_free(s);
}

/* Two processes each add 200,000 under the mutex: none is lost. */
static void test_mutex_excludes(void **state) {
  (void)state;
  shared_t *s = shared_new();
  enum { ROUNDS = 200000 };
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    for (int i = 0; i < ROUNDS; i++) {
      if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) _exit(2);
      s->counter++;
      ff_mutex_release(&s->mutex);
    }
    _exit(0);
  }
  for (int i = 0; i < ROUNDS; i++) {
    int rc;
    while ((rc = ff_mutex_acquire(&s->mutex, -1, NULL)) == -EINTR) {
    }
    assert_int_equal(rc, 0);
    s->counter++;
    ff_mutex_release(&s->mutex);
  }
  reap(pid, 0);
  assert_int_equal(s->counter, 2 * ROUNDS);
  shared_free(s);
  assert_no_children();
}

/* A holder that dies (exits, or is SIGKILLed) does not keep the mutex: the
 * next acquirer takes it over with -EOWNERDEAD and the dead pid, whether it
 * was already waiting or comes later. */
static void test_mutex_holder_dies(void **state) {
  (void)state;
  for (int how = 0; how < 2; how++) {
    shared_t *s = shared_new();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) _exit(2);
      ff_event_set(&s->event);
      if (how == 0) _exit(0);
      pause();
      _exit(3);
    }
    assert_int_equal(ff_event_wait(&s->event, 10), 0);
    assert_int_equal(ff_mutex_holder(&s->mutex), pid);
    if (how == 1) {
      /* Already waiting when the holder is killed. */
      assert_int_equal(ff_mutex_acquire(&s->mutex, 0.2, NULL), -ETIMEDOUT);
      kill(pid, SIGKILL);
    }
    /* Not reaped: a zombie holds nothing either. */
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t dead = 0;
    assert_int_equal(ff_mutex_acquire(&s->mutex, 5, &dead), -EOWNERDEAD);
    assert_true(seconds_since(&start) < 1.0);
    assert_int_equal(dead, pid);
    assert_true(ff_mutex_held_by_caller(&s->mutex));
    assert_int_equal(ff_mutex_release(&s->mutex), 0);
    assert_int_equal(ff_mutex_acquire(&s->mutex, 0, NULL), 0);
    assert_int_equal(ff_mutex_release(&s->mutex), 0);
    reap(pid, -1);
    shared_free(s);
  }
  assert_no_children();
}

/* ---- semaphore ------------------------------------------------------------- */

static void test_semaphore(void **state) {
  (void)state;
  ff_semaphore_t bounded;
  assert_int_equal(ff_semaphore_init(&bounded, 3, 2), -EINVAL);
  assert_int_equal(ff_semaphore_init(&bounded, 2, 2), 0);
  assert_int_equal(ff_semaphore_release(&bounded), -EOVERFLOW);
  assert_int_equal(ff_semaphore_acquire(&bounded, 0), 0);
  assert_int_equal(ff_semaphore_acquire(&bounded, 0), 0);
  assert_int_equal(ff_semaphore_acquire(&bounded, 0.05), -ETIMEDOUT);
  assert_int_equal(ff_semaphore_value(&bounded), 0);
  assert_int_equal(ff_semaphore_release(&bounded), 0);
  assert_int_equal(ff_semaphore_value(&bounded), 1);

  /* A release in another process wakes a sleeper here, once per release. */
  shared_t *s = shared_new();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    usleep(100000);
    for (int i = 0; i < 3; i++) ff_semaphore_release(&s->semaphore);
    _exit(0);
  }
  for (int i = 0; i < 3; i++) {
    int rc;
    while ((rc = ff_semaphore_acquire(&s->semaphore, 10)) == -EINTR) {
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(ff_semaphore_acquire(&s->semaphore, 0), -ETIMEDOUT);
  reap(pid, 0);
  shared_free(s);
  assert_no_children();
}

/* ---- event ------------------------------------------------------------------ */

static void test_event(void **state) {
  (void)state;
  shared_t *s = shared_new();
  assert_false(ff_event_is_set(&s->event));
  assert_int_equal(ff_event_wait(&s->event, 0.05), -ETIMEDOUT);
  enum { WAITERS = 3 };
  pid_t pids[WAITERS];
  for (int i = 0; i < WAITERS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) _exit(ff_event_wait(&s->event, 10) == 0 ? 0 : 1);
  }
  usleep(50000);
  ff_event_set(&s->event);
  for (int i = 0; i < WAITERS; i++) reap(pids[i], 0);
  assert_true(ff_event_is_set(&s->event));
  assert_int_equal(ff_event_wait(&s->event, 0), 0);
  ff_event_clear(&s->event);
  assert_false(ff_event_is_set(&s->event));
  shared_free(s);
  assert_no_children();
}

/* ---- condition ---------------------------------------------------------------- */

/* One waiter's whole wait, with the mutex as the condition's lock: 1
 * notified, 0 timed out, -1 on an error. A signal (-EINTR) sleeps again. */
static int cond_wait(shared_t *s, double timeout) {
  ff_cond_waiter_t waiter;
  if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) return -1;
  if (ff_cond_prepare(&s->cond, &waiter) != 0) return -1;
  atomic_fetch_add(&s->ready, 1);
  if (ff_mutex_release(&s->mutex) != 0) return -1;
  int rc;
  while ((rc = ff_cond_sleep(&s->cond, &waiter, timeout)) == -EINTR) {
  }
  if (rc != 0 && rc != -ETIMEDOUT) return -1;
  if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) return -1;
  int notified = ff_cond_finish(&s->cond, &waiter);
  if (ff_mutex_release(&s->mutex) != 0) return -1;
  /* The sleep and the finish agree on whether a notify came. */
  if (rc == 0 && notified != 1) return -1;
  return notified;
}

/* Waits until count waits have been prepared, in all. */
static void wait_ready(shared_t *s, int count) {
  while (atomic_load(&s->ready) < count) usleep(1000);
}

/* Forks a child that waits once (10 s at most) and exits 0 if notified,
 * 1 if not; each notified child counts itself in s->woken. */
static pid_t fork_waiter(shared_t *s) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int notified = cond_wait(s, 10);
    if (notified == 1) atomic_fetch_add(&s->woken, 1);
    _exit(notified == 1 ? 0 : 1);
  }
  return pid;
}

/* notify(2) of 5 waiters wakes exactly 2; notify_all wakes the rest. */
static void test_cond_notify_n(void **state) {
  (void)state;
  shared_t *s = shared_new();
  enum { WAITERS = 5 };
  pid_t pids[WAITERS];
  for (int i = 0; i < WAITERS; i++) pids[i] = fork_waiter(s);
  wait_ready(s, WAITERS);
  assert_int_equal(ff_cond_waiters(&s->cond), WAITERS);
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_notify(&s->cond, 2), 2);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  usleep(300000);
  assert_int_equal(atomic_load(&s->woken), 2);
  assert_int_equal(ff_cond_pending(&s->cond), 0);
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  /* Already notified waiters are not counted again. */
  assert_int_equal(ff_cond_notify(&s->cond, UINT32_MAX), 3);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  for (int i = 0; i < WAITERS; i++) reap(pids[i], 0);
  assert_int_equal(atomic_load(&s->woken), WAITERS);
  assert_int_equal(ff_cond_waiters(&s->cond), 0);
  assert_int_equal(ff_cond_pending(&s->cond), 0);
  /* Nobody waits: a notify wakes no one and is not kept for later. */
  assert_int_equal(ff_cond_notify(&s->cond, 1), 0);
  assert_int_equal(cond_wait(s, 0.05), 0);
  shared_free(s);
  assert_no_children();
}

/* A notifier that waits next does not take its own notification back,
 * even while the waiter it meant has not woken yet: its wait times out
 * and the other waiter is the one notified. */
static void test_cond_notifier_does_not_wake_itself(void **state) {
  (void)state;
  shared_t *s = shared_new();
  pid_t pid = fork_waiter(s);
  wait_ready(s, 1);
  ff_cond_waiter_t waiter;
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_notify(&s->cond, 1), 1);
  assert_int_equal(ff_cond_prepare(&s->cond, &waiter), 0);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  int rc;
  while ((rc = ff_cond_sleep(&s->cond, &waiter, 0.2)) == -EINTR) {
  }
  assert_int_equal(rc, -ETIMEDOUT);
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_finish(&s->cond, &waiter), 0);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  reap(pid, 0);
  assert_int_equal(atomic_load(&s->woken), 1);
  shared_free(s);
  assert_no_children();
}

/* Waits that time out leave nothing behind: the next notify(1) wakes the
 * next waiter, and only it. */
static void test_cond_timeouts_leave_no_trace(void **state) {
  (void)state;
  shared_t *s = shared_new();
  for (int i = 0; i < 3; i++) assert_int_equal(cond_wait(s, 0.02), 0);
  assert_int_equal(ff_cond_waiters(&s->cond), 0);
  pid_t pids[2] = {fork_waiter(s), fork_waiter(s)};
  wait_ready(s, 3 + 2);
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_notify(&s->cond, 1), 1);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  usleep(200000);
  assert_int_equal(atomic_load(&s->woken), 1);
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_notify(&s->cond, 1), 1);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  reap(pids[0], 0);
  reap(pids[1], 0);
  assert_int_equal(atomic_load(&s->woken), 2);
  shared_free(s);
  assert_no_children();
}

/* A waiter SIGKILLed in its sleep does not take a later notify from the
 * living: the next waiter's notify(1) wakes it, at once. */
static void test_cond_killed_waiter(void **state) {
  (void)state;
  shared_t *s = shared_new();
  pid_t victim = fork_waiter(s);
  wait_ready(s, 1);
  usleep(20000); /* asleep, past its spin */
  assert_int_equal(kill(victim, SIGKILL), 0);
  reap(victim, -1);
  /* The dead waiter still counts, so this notify hands out a token... */
  assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
  assert_int_equal(ff_cond_notify(&s->cond, 1), 1);
  assert_int_equal(ff_mutex_release(&s->mutex), 0);
  /* ...that a wait begun later does not take. */
  assert_int_equal(cond_wait(s, 0.1), 0);
  for (int round = 0; round < 3; round++) {
    pid_t pid = fork_waiter(s);
    wait_ready(s, 3 + round);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_int_equal(ff_mutex_acquire(&s->mutex, -1, NULL), 0);
    assert_int_equal(ff_cond_notify(&s->cond, 1), 1);
    assert_int_equal(ff_mutex_release(&s->mutex), 0);
    reap(pid, 0);
    assert_true(seconds_since(&start) < 1.0);
  }
  assert_int_equal(atomic_load(&s->woken), 3);
  shared_free(s);
  assert_no_children();
}

/* One side's ping-pong: rounds x (notify, wait 5 s), then a last notify
 * for the other side's last wait. Returns the waits that timed out, or -1
 * on an error. */
static int ping_pong(shared_t *s, int rounds) {
  int missed = 0;
  if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) return -1;
  for (int i = 0; i < rounds; i++) {
    ff_cond_waiter_t waiter;
    ff_cond_notify(&s->cond, 1);
    if (ff_cond_prepare(&s->cond, &waiter) != 0) return -1;
    if (ff_mutex_release(&s->mutex) != 0) return -1;
    int rc;
    while ((rc = ff_cond_sleep(&s->cond, &waiter, 5)) == -EINTR) {
    }
    if (ff_mutex_acquire(&s->mutex, -1, NULL) != 0) return -1;
    if (ff_cond_finish(&s->cond, &waiter) != 1) missed++;
  }
  ff_cond_notify(&s->cond, 1);
  if (ff_mutex_release(&s->mutex) != 0) return -1;
  return missed;
}

/* Two processes take turns 20,000 times: every wait is ended by the
 * other's notify, none by its own or by a timeout. */
static void test_cond_ping_pong(void **state) {
  (void)state;
  shared_t *s = shared_new();
  enum { ROUNDS = 20000 };
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(ping_pong(s, ROUNDS) == 0 ? 0 : 1);
  assert_int_equal(ping_pong(s, ROUNDS), 0);
  reap(pid, 0);
  assert_int_equal(ff_cond_waiters(&s->cond), 0);
  shared_free(s);
  assert_no_children();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_mutex_basics, setup_alarm),
      cmocka_unit_test_setup(test_mutex_excludes, setup_alarm),
      cmocka_unit_test_setup(test_mutex_holder_dies, setup_alarm),
      cmocka_unit_test_setup(test_semaphore, setup_alarm),
      cmocka_unit_test_setup(test_event, setup_alarm),
      cmocka_unit_test_setup(test_cond_notify_n, setup_alarm),
      cmocka_unit_test_setup(test_cond_notifier_does_not_wake_itself,
                             setup_alarm),
      cmocka_unit_test_setup(test_cond_timeouts_leave_no_trace, setup_alarm),
      cmocka_unit_test_setup(test_cond_killed_waiter, setup_alarm),
      cmocka_unit_test_setup(test_cond_ping_pong, setup_alarm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
