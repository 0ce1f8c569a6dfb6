/* Tests of the pool through the public API: create and destroy, round trips,
 * volume, worker exit detection and replacement, and clean shutdown. Every
 * test reaps what it forked: after each one the test process has no child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forkfarm.h"
#include "../../lib/internal.h"

/* The work callback of these tests: a tiny command language on the input.
 * "sq N" squares N; "die S" kills the worker with signal S; "exit C" exits
 * with code C; "fail" fails the task; "sleep MS" sleeps; "pid" returns the
 * worker's pid; "corrupt" writes a broken message into the worker's own
 * result ring before its result; "echo..." returns the input. */
static uint64_t monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The worker's segment of rings, found by its memfd's name. */
static void *worker_segment(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return NULL;
  char line[512];
  void *base = NULL;
  while (base == NULL && fgets(line, sizeof(line), maps)) {
    unsigned long start;
    if (strstr(line, "memfd:forkfarm-worker") &&
        sscanf(line, "%lx-", &start) == 1)
      base = (void *)start;
  }
  fclose(maps);
  return base;
}

/* Two fragments of one message that disagree about its id: a reader must
 * refuse the ring (FF_EPROTOCOL), not join them. */
static void corrupt_own_results(void) {
  void *base = worker_segment();
  ff__ring_t tasks, results;
  if (base == NULL || ff__worker_rings(base, &tasks, &results, 0) < 0) _exit(3);
  size_t offset = 0;
  ff__ring_write(&results, FF__RING_RESULT, FF__RING_MORE, 1, "ab", 2,
                 &offset);
  offset = 0;
  ff__ring_write(&results, FF__RING_RESULT, 0, 2, "cd", 2, &offset);
  /* No wake-up from here: this view has no doorbell, and taking the
   * consumer's sleep flag would cost the real result its own. */
}

static int test_work(void *arg, void *context, const void *input, size_t len,
                     ff_buf_t *out) {
  (void)context;
  (void)arg;
  char cmd[64];
  size_t n = len < sizeof(cmd) - 1 ? len : sizeof(cmd) - 1;
  memcpy(cmd, input, n);
  cmd[n] = 0;
  long long v;
  if (sscanf(cmd, "sq %lld", &v) == 1) {
    char res[32];
    int k = snprintf(res, sizeof(res), "%lld", v * v);
    return ff_buf_set(out, res, (size_t)k);
  }
  if (sscanf(cmd, "die %lld", &v) == 1) {
    signal((int)v, SIG_DFL); /* cmocka catches crashes: die for real */
    raise((int)v);
  }
  if (sscanf(cmd, "exit %lld", &v) == 1) _exit((int)v);
  if (strcmp(cmd, "fail") == 0) {
    ff_buf_set(out, "bad input", 9);
    return -1;
  }
  if (sscanf(cmd, "sleep %lld", &v) == 1) {
    usleep((useconds_t)v * 1000);
    return ff_buf_set(out, "slept", 5);
  }
  /* The result that follows wakes the parent (through the doorbell this
   * view of the ring does not have), which meets the broken records first. */
  if (strcmp(cmd, "corrupt") == 0) {
    /* The worker's own writer keeps its position privately and would write
     * its result over the broken records: it leaves them to be found
     * instead. */
    corrupt_own_results();
    _exit(0);
  }
  if (strcmp(cmd, "pid") == 0) {
    char res[32];
    int k = snprintf(res, sizeof(res), "%d", (int)getpid());
    return ff_buf_set(out, res, (size_t)k);
  }
  return ff_buf_set(out, input, len);
}

static int init_fails(void *arg, ff_buf_t *detail) {
  (void)arg;
  ff_buf_set(detail, "no database", 11);
  return -1;
}

typedef struct {
  _Atomic int exits;
  _Atomic int unexpected;
  _Atomic int last_signal;
  _Atomic int last_code;
  _Atomic pid_t last_pid;
} exit_log_t;

static void log_exit(ff_pool_t *pool, const ff_exit_t *how, int expected,
                     void *arg) {
  (void)pool;
  exit_log_t *log = arg;
  atomic_store(&log->last_signal, how->term_signal);
  atomic_store(&log->last_code, how->exit_code);
  atomic_store(&log->last_pid, how->pid);
  if (!expected) atomic_fetch_add(&log->unexpected, 1);
  atomic_fetch_add(&log->exits, 1);
}

static ff_pool_t *make_pool(unsigned workers, exit_log_t *log) {
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = workers;
  o.work = test_work;
  if (log) {
    o.on_worker_exit = log_exit;
    o.notify_arg = log;
  }
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  assert_non_null(pool);
  return pool;
}

static ff_task_t *submit(ff_pool_t *pool, const char *msg) {
  ff_task_t *task = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, msg, strlen(msg), 0, NULL, NULL, &task),
                   0);
  return task;
}

/* Runs msg and checks the result text. */
static void expect_result(ff_pool_t *pool, const char *msg,
                          const char *expected) {
  ff_task_t *task = submit(pool, msg);
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), 0);
  size_t len;
  const char *res = ff_task_result(task, &len);
  assert_int_equal(len, strlen(expected));
  assert_memory_equal(res, expected, len);
  ff_task_release(task);
}

static void assert_no_children(void) {
  int status;
  assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

static void assert_process_gone(pid_t pid) {
  /* A worker is the zygote's child: once the zygote has reaped it and
   * exited, the pid no longer exists. */
  for (int i = 0; i < 200 && kill(pid, 0) == 0; i++) usleep(10000);
  assert_int_equal(kill(pid, 0), -1);
  assert_int_equal(errno, ESRCH);
}

static void test_create_destroy(void **state) {
  (void)state;
  for (int round = 0; round < 5; round++) {
    ff_pool_t *pool = make_pool(2, NULL);
    ff_pool_destroy(pool);
  }
  assert_no_children();
}

static void test_invalid_options(void **state) {
  (void)state;
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), -EINVAL); /* no callback */
  o.work = test_work;
  o.workers = 0;
  assert_int_equal(ff_pool_create(&pool, &o), -EINVAL);
  assert_null(pool);
  assert_string_equal(ff_strerror(FF_EWORKERLOST),
                      "the worker running the task exited");
  assert_string_equal(ff_strerror(-ENOMEM), strerror(ENOMEM));
}

static void test_round_trip(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  expect_result(pool, "sq 12", "144");
  expect_result(pool, "echo hello", "echo hello");
  /* An empty message is a valid message. */
  ff_task_t *task = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, NULL, 0, 0, NULL, NULL, &task), 0);
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), 0);
  size_t len = 1;
  ff_task_result(task, &len);
  assert_int_equal(len, 0);
  ff_task_release(task);
  ff_pool_destroy(pool);
  assert_no_children();
}

static void test_task_failure(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *task = submit(pool, "fail");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_ETASKFAILED);
  size_t len;
  const char *detail = ff_task_result(task, &len);
  assert_int_equal(len, 9);
  assert_memory_equal(detail, "bad input", 9);
  ff_task_release(task);
  expect_result(pool, "sq 3", "9"); /* the worker is still there */
  ff_pool_destroy(pool);
}

/* 100,000 messages through 2 workers, each checked. */
static void test_many_messages(void **state) {
  (void)state;
  enum { N = 100000 };
  ff_pool_t *pool = make_pool(2, NULL);
  ff_task_t **tasks = calloc(N, sizeof(*tasks));
  assert_non_null(tasks);
  char msg[32];
  for (int i = 0; i < N; i++) {
    int k = snprintf(msg, sizeof(msg), "sq %d", i);
    assert_int_equal(
        ff_pool_submit(pool, NULL, msg, (size_t)k, 0, NULL, NULL, &tasks[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 60), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    size_t len;
    const char *res = ff_task_result(tasks[i], &len);
    char expect[32];
    int k = snprintf(expect, sizeof(expect), "%lld", (long long)i * i);
    assert_int_equal(len, (size_t)k);
    assert_memory_equal(res, expect, len);
    ff_task_release(tasks[i]);
  }
  free(tasks);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* A message far larger than a socket buffer goes both ways intact. */
static void test_large_message(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  size_t len = 32u << 20;
  char *msg = malloc(len);
  assert_non_null(msg);
  memcpy(msg, "echo", 4);
  for (size_t i = 4; i < len; i++) msg[i] = (char)(i % 251);
  ff_task_t *task = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, msg, len, 0, NULL, NULL, &task), 0);
  assert_int_equal(ff_task_wait(task, 60), 0);
  assert_int_equal(ff_task_status(task), 0);
  size_t got;
  const char *res = ff_task_result(task, &got);
  assert_int_equal(got, len);
  assert_memory_equal(res, msg, len);
  ff_task_release(task);
  free(msg);
  ff_pool_destroy(pool);
}

/* A worker killed from outside is reported with its signal; the task it ran
 * fails alone with FF_EWORKERLOST, and the pool replaces the worker. */
static void test_worker_killed(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_t *pool = make_pool(2, &log);
  expect_result(pool, "sq 2", "4");
  ff_task_t *slow = submit(pool, "sleep 5000");
  /* Kill both workers: one of them runs the slow task. */
  usleep(100000);
  pid_t pids[8];
  size_t n = ff_pool_worker_pids(pool, pids, 8);
  assert_int_equal(n, 2);
  uint64_t t0 = monotonic_ns();
  for (size_t i = 0; i < n; i++) assert_int_equal(kill(pids[i], SIGKILL), 0);
  assert_int_equal(ff_task_wait(slow, 10), 0);
  uint64_t t1 = monotonic_ns();
  assert_true(t1 - t0 < 1000000000u); /* detected well within a second */
  assert_int_equal(ff_task_status(slow), FF_EWORKERLOST);
  const ff_exit_t *how = ff_task_exit(slow);
  assert_int_equal(how->term_signal, SIGKILL);
  assert_int_equal(how->exit_code, -1);
  assert_true(how->pid == pids[0] || how->pid == pids[1]);
  ff_task_release(slow);
  /* Both exits were reported, and the pool works with new workers. */
  for (int i = 0; i < 500 && atomic_load(&log.exits) < 2; i++) usleep(10000);
  assert_int_equal(atomic_load(&log.exits), 2);
  assert_int_equal(atomic_load(&log.unexpected), 2);
  assert_int_equal(atomic_load(&log.last_signal), SIGKILL);
  expect_result(pool, "sq 5", "25");
  pid_t fresh[8];
  size_t nfresh = 0;
  for (int i = 0; i < 500 && (nfresh = ff_pool_worker_pids(pool, fresh, 8)) < 2; i++)
    usleep(10000);
  assert_int_equal(nfresh, 2);
  for (int i = 0; i < 2; i++) assert_true(fresh[i] != pids[0] && fresh[i] != pids[1]);
  ff_pool_destroy(pool);
  for (size_t i = 0; i < n; i++) assert_process_gone(pids[i]);
  for (int i = 0; i < 2; i++) assert_process_gone(fresh[i]);
  assert_no_children();
}

/* A task that makes its worker exit or die reports the code or signal. */
static void test_worker_exit_codes(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_t *pool = make_pool(2, &log);
  ff_task_t *task = submit(pool, "exit 42");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EWORKERLOST);
  assert_int_equal(ff_task_exit(task)->exit_code, 42);
  assert_int_equal(ff_task_exit(task)->term_signal, 0);
  ff_task_release(task);
  task = submit(pool, "die 11");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EWORKERLOST);
  assert_int_equal(ff_task_exit(task)->term_signal, SIGSEGV);
  ff_task_release(task);
  /* Other tasks still complete. */
  for (int i = 0; i < 50; i++) expect_result(pool, "sq 7", "49");
  ff_pool_destroy(pool);
  assert_no_children();
}

/* ff_pool_worker_exit says how a recent worker ended, by its pid. */
static void test_worker_exit_lookup(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *task = submit(pool, "pid");
  assert_int_equal(ff_task_wait(task, 30), 0);
  size_t len;
  const char *res = ff_task_result(task, &len);
  char buf[32] = {0};
  memcpy(buf, res, len < 31 ? len : 31);
  pid_t pid = (pid_t)atoi(buf);
  ff_task_release(task);
  ff_exit_t how;
  assert_int_equal(ff_pool_worker_exit(pool, pid, &how), -ENOENT); /* alive */
  /* Its pidfd: another descriptor of the runtime's, readable once it exits.
   * It comes with the zygote's SPAWNED, which may arrive after the
   * worker's first result (two channels). */
  int pidfd = ff_pool_worker_pidfd(pool, pid);
  for (int i = 0; pidfd == -ENOENT && i < 500; i++) {
    usleep(10000);
    pidfd = ff_pool_worker_pidfd(pool, pid);
  }
  assert_true(pidfd >= 0);
  assert_int_equal(ff_pool_worker_pidfd(pool, getpid()), -ENOENT);
  task = submit(pool, "exit 7");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EWORKERLOST);
  ff_task_release(task);
  struct pollfd gone = {.fd = pidfd, .events = POLLIN};
  assert_int_equal(poll(&gone, 1, 5000), 1);
  close(pidfd);
  assert_int_equal(ff_pool_worker_pidfd(pool, pid), -ENOENT);
  assert_int_equal(ff_pool_worker_exit(pool, pid, &how), 0);
  assert_int_equal(how.pid, pid);
  assert_int_equal(how.exit_code, 7);
  assert_int_equal(how.term_signal, 0);
  assert_int_equal(ff_pool_worker_exit(pool, 0, &how), -EINVAL);
  ff_pool_destroy(pool);
  assert_no_children();
}

static ff_pool_t *make_pool_on_demand(unsigned workers, unsigned max_tasks) {
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = workers;
  o.work = test_work;
  o.max_tasks_per_worker = max_tasks;
  o.start_on_demand = 1;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  return pool;
}

/* Started on demand, a pool has no worker until a task needs one, reuses an
 * idle worker rather than start another, and never starts more than its
 * size. */
static void test_start_on_demand(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool_on_demand(4, 0);
  usleep(50000);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  pid_t pids[8];
  assert_int_equal(ff_pool_worker_pids(pool, pids, 8), 0);
  for (int i = 0; i < 5; i++) expect_result(pool, "sq 5", "25");
  assert_int_equal(ff_pool_worker_count(pool), 1);
  /* Three tasks at once that nobody takes: two more workers, counted as
   * soon as the submits return. */
  ff_task_t *tasks[12];
  for (int i = 0; i < 3; i++) tasks[i] = submit(pool, "sleep 300");
  assert_int_equal(ff_pool_worker_count(pool), 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    ff_task_release(tasks[i]);
  }
  /* More than it holds: the pool stops at its size. */
  for (int i = 0; i < 12; i++) tasks[i] = submit(pool, "sleep 50");
  assert_int_equal(ff_pool_worker_count(pool), 4);
  for (int i = 0; i < 12; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    ff_task_release(tasks[i]);
  }
  assert_true(ff_pool_worker_pids(pool, pids, 8) <= 4);
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Joins a pool once its idle limit has closed it (join says -EINVAL while
 * it is open). */
static int join_once_closed(ff_pool_t *pool) {
  int rc = -EINVAL;
  for (int i = 0; i < 500 && rc == -EINVAL; i++) {
    rc = ff_pool_join(pool, 10);
    if (rc == -EINVAL) usleep(10000);
  }
  return rc;
}

/* The idle limit: an idle pool is closed by the loop thread (and a disarm
 * then says so), a disarmed one is not, and an on-demand pool loses its
 * idle workers and starts them again for the next task. */
static void test_idle_limit(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  expect_result(pool, "sq 3", "9");
  assert_int_equal(ff_pool_set_idle_limit(pool, 0.1, 7), -EINVAL);
  assert_int_equal(ff_pool_set_idle_limit(pool, 0.1, FF_IDLE_STOP_WORKERS),
                   -EINVAL); /* not started on demand */
  assert_int_equal(ff_pool_set_idle_limit(pool, 0.1, FF_IDLE_CLOSE), 0);
  assert_int_equal(join_once_closed(pool), 0);
  ff_task_t *late = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, "sq 1", 4, 0, NULL, NULL, &late),
                   FF_ECLOSED);
  assert_int_equal(ff_pool_set_idle_limit(pool, -1, FF_IDLE_CLOSE),
                   FF_ECLOSED);
  ff_pool_destroy(pool);
  assert_no_children();

  /* Abandoned once its idle close tore it down (the loop's reference
   * gone with its handles): the abandon's own reference keeps it. */
  pool = make_pool(1, NULL);
  assert_int_equal(ff_pool_set_idle_limit(pool, 0.05, FF_IDLE_CLOSE), 0);
  assert_int_equal(join_once_closed(pool), 0);
  usleep(100000); /* the zygote reaped, the handles closed */
  ff_pool_abandon(pool);
  usleep(100000);
  assert_no_children();

  pool = make_pool(2, NULL);
  assert_int_equal(ff_pool_set_idle_limit(pool, 0.1, FF_IDLE_CLOSE), 0);
  assert_int_equal(ff_pool_set_idle_limit(pool, -1, FF_IDLE_CLOSE), 0);
  usleep(300000);
  expect_result(pool, "sq 4", "16");
  ff_pool_destroy(pool);
  assert_no_children();

  pool = make_pool_on_demand(2, 0);
  expect_result(pool, "sq 5", "25");
  assert_int_equal(ff_pool_worker_count(pool), 1);
  assert_int_equal(
      ff_pool_set_idle_limit(pool, 0.1, FF_IDLE_STOP_WORKERS), 0);
  for (int i = 0; i < 200 && ff_pool_worker_count(pool) > 0; i++)
    usleep(10000);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  expect_result(pool, "sq 6", "36");
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Started on demand, a pool whose initializer fails fails its tasks, and
 * counts no worker wanted afterwards. */
static void test_start_on_demand_init_failure(void **state) {
  (void)state;
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 3;
  o.work = test_work;
  o.worker_init = init_fails;
  o.start_on_demand = 1;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  ff_task_t *tasks[3];
  for (int i = 0; i < 3; i++) tasks[i] = submit(pool, "sq 2");
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), FF_EINITFAILED);
    ff_task_release(tasks[i]);
  }
  for (int i = 0; i < 500 && ff_pool_worker_count(pool) > 0; i++) usleep(10000);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Started on demand, a worker that reaches its task limit is replaced only
 * while tasks wait, and a pool closed before any task joins at once. */
static void test_start_on_demand_replacement(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool_on_demand(1, 2);
  enum { N = 6 };
  ff_task_t *tasks[N];
  for (int i = 0; i < N; i++) tasks[i] = submit(pool, "pid");
  pid_t seen[N];
  size_t distinct = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    size_t len;
    const char *res = ff_task_result(tasks[i], &len);
    char buf[32] = {0};
    memcpy(buf, res, len < 31 ? len : 31);
    pid_t pid = (pid_t)atoi(buf);
    size_t j = 0;
    while (j < distinct && seen[j] != pid) j++;
    if (j == distinct) seen[distinct++] = pid;
    ff_task_release(tasks[i]);
  }
  assert_int_equal(distinct, 3); /* two tasks each */
  /* The third worker retired after its two tasks: nothing replaces it. */
  for (int i = 0; i < 200 && ff_pool_worker_count(pool) > 0; i++)
    usleep(10000);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  ff_exit_t how;
  assert_int_equal(ff_pool_worker_exit(pool, seen[0], &how), 0);
  assert_int_equal(how.exit_code, 0);
  expect_result(pool, "sq 6", "36");
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  ff_pool_destroy(pool);
  pool = make_pool_on_demand(2, 0);
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 5), 0);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* ff_pool_stop_workers signals every worker: running tasks fail with their
 * workers' exits, the others are cancelled, nothing runs again, and join
 * returns. */
static void test_stop_workers(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  enum { N = 12 };
  ff_task_t *tasks[N];
  for (int i = 0; i < N; i++) tasks[i] = submit(pool, "sleep 20000");
  /* Both workers run one: the rest wait in the pool or behind them. A
   * worker's pid comes with the zygote's SPAWNED, which may arrive after
   * its first results (two channels): that is waited for too. */
  ff_pool_stats_t stats;
  ff_worker_stats_t workers[2];
  pid_t pids[2];
  for (int i = 0; i < 500; i++) {
    ff_pool_stats(pool, &stats, workers, 2);
    if (workers[0].current_ns > 0 && workers[1].current_ns > 0 &&
        ff_pool_worker_pids(pool, pids, 2) == 2)
      break;
    usleep(10000);
  }
  assert_int_equal(ff_pool_worker_pids(pool, pids, 2), 2);
  assert_int_equal(ff_pool_stop_workers(pool, 0), -EINVAL);
  assert_int_equal(ff_pool_stop_workers(pool, SIGTERM), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  int lost = 0, cancelled = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    int status = ff_task_status(tasks[i]);
    if (status == FF_EWORKERLOST) {
      assert_int_equal(ff_task_exit(tasks[i])->term_signal, SIGTERM);
      lost++;
    } else {
      assert_int_equal(status, FF_ECANCELED);
      cancelled++;
    }
    ff_task_release(tasks[i]);
  }
  assert_int_equal(lost, 2);
  assert_int_equal(cancelled, N - 2);
  for (int i = 0; i < 2; i++) {
    ff_exit_t how;
    assert_int_equal(ff_pool_worker_exit(pool, pids[i], &how), 0);
    assert_int_equal(how.term_signal, SIGTERM);
  }
  assert_int_equal(ff_pool_worker_count(pool), 0);
  ff_task_t *late = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, "sq 1", 4, 0, NULL, NULL, &late),
                   FF_ECLOSED);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* A task killed while it waits behind another in a worker's ring does not
 * run on another worker when that worker dies first. */
static void test_killed_task_behind_a_dying_worker(void **state) {
  (void)state;
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 1;
  o.work = test_work;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  expect_result(pool, "sq 2", "4"); /* the worker is ready */
  /* Deep enough a backlog that the worker holds more than one. */
  ff_task_t *tasks[4];
  tasks[0] = submit(pool, "sleep 300");
  tasks[1] = submit(pool, "exit 3"); /* the worker dies when its turn comes */
  tasks[2] = submit(pool, "sq 5");   /* killed while it waits behind */
  tasks[3] = submit(pool, "sq 6");
  ff_pool_stats_t stats;
  /* The first three are the worker's (a backlog of two lets it take more
   * than one); the fourth waits in the pool. */
  for (int i = 0; i < 300; i++) {
    ff_pool_stats(pool, &stats, NULL, 0);
    if (stats.in_flight >= 3) break;
    usleep(1000);
  }
  assert_true(stats.in_flight >= 3);
  assert_int_equal(ff_task_kill(tasks[2]), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(ff_task_wait(tasks[i], 30), 0);
  assert_int_equal(ff_task_status(tasks[0]), 0);
  assert_int_equal(ff_task_status(tasks[1]), FF_EWORKERLOST);
  assert_int_equal(ff_task_status(tasks[2]), FF_ECANCELED);
  assert_int_equal(ff_task_status(tasks[3]), 0); /* not killed: it ran */
  for (int i = 0; i < 4; i++) ff_task_release(tasks[i]);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* A worker that leaves a corrupt message in its result ring is not
 * trusted: its task fails with FF_EPROTOCOL and the pool goes on. */
static void test_corrupt_message(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_t *pool = make_pool(1, &log);
  ff_task_t *task = submit(pool, "corrupt");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EPROTOCOL);
  ff_task_release(task);
  for (int i = 0; i < 10; i++) expect_result(pool, "sq 4", "16");
  ff_pool_destroy(pool);
  assert_no_children();
}

/* close() runs what is queued, then join() returns with every process gone. */
static void test_clean_shutdown(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_t *pool = make_pool(3, &log);
  ff_task_t *tasks[30];
  for (int i = 0; i < 30; i++) tasks[i] = submit(pool, "sleep 5");
  pid_t pids[8];
  size_t n = ff_pool_worker_pids(pool, pids, 8);
  assert_int_equal(ff_pool_join(pool, 0), -EINVAL); /* still open */
  assert_int_equal(ff_pool_close(pool), 0);
  ff_task_t *late = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, "sq 1", 4, 0, NULL, NULL, &late),
                   FF_ECLOSED);
  assert_null(late);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  for (int i = 0; i < 30; i++) {
    assert_true(ff_task_done(tasks[i]));
    assert_int_equal(ff_task_status(tasks[i]), 0);
    ff_task_release(tasks[i]);
  }
  assert_int_equal(atomic_load(&log.unexpected), 0);
  /* join returns once the workers have run their last code; their reaping
   * is the loop thread's, and destroy also waits for the zygote. */
  for (size_t i = 0; i < n; i++) assert_process_gone(pids[i]);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* After close and join, the workers have said they exit: they no longer
 * count, a terminate leaves them to it, and their statuses, reported by
 * the zygote afterwards, are clean exits. */
static void test_join_before_the_reaping(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  for (int i = 0; i < 4; i++) expect_result(pool, "sq 5", "25");
  pid_t pids[8];
  /* Each pid comes with the zygote's SPAWNED (see test_worker_exit_lookup). */
  size_t n = ff_pool_worker_pids(pool, pids, 8);
  for (int k = 0; n < 2 && k < 500; k++) {
    usleep(10000);
    n = ff_pool_worker_pids(pool, pids, 8);
  }
  assert_int_equal(n, 2);
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  assert_int_equal(ff_pool_worker_count(pool), 0);
  assert_int_equal(ff_pool_worker_pids(pool, pids + 2, 6), 0);
  assert_int_equal(ff_pool_terminate(pool), 0);
  for (size_t i = 0; i < n; i++) {
    ff_exit_t how;
    int rc = ff_pool_worker_exit(pool, pids[i], &how);
    for (int k = 0; rc == -ENOENT && k < 500; k++) {
      usleep(10000);
      rc = ff_pool_worker_exit(pool, pids[i], &how);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(how.exit_code, 0);
    assert_int_equal(how.term_signal, 0);
  }
  ff_pool_destroy(pool);
  assert_no_children();
}

/* terminate() fails everything queued at once and leaves no process. */
static void test_terminate(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  enum { N = 1000 };
  ff_task_t *tasks[N];
  for (int i = 0; i < N; i++) tasks[i] = submit(pool, "sleep 1000");
  usleep(50000);
  assert_int_equal(ff_pool_terminate(pool), 0);
  assert_int_equal(ff_pool_join(pool, 5), 0);
  for (int i = 0; i < N; i++) {
    assert_true(ff_task_done(tasks[i]));
    assert_int_equal(ff_task_status(tasks[i]), FF_ECANCELED);
    ff_task_release(tasks[i]);
  }
  assert_no_children();
  ff_pool_destroy(pool);
}

/* With a task limit, workers are replaced as they reach it and every task
 * still completes. */
static void test_max_tasks_per_worker(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 2;
  o.work = test_work;
  o.max_tasks_per_worker = 3;
  o.on_worker_exit = log_exit;
  o.notify_arg = &log;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  enum { N = 40 };
  ff_task_t *tasks[N];
  for (int i = 0; i < N; i++) tasks[i] = submit(pool, "pid");
  pid_t seen[N];
  size_t distinct = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    size_t len;
    const char *res = ff_task_result(tasks[i], &len);
    char buf[32] = {0};
    memcpy(buf, res, len < 31 ? len : 31);
    pid_t pid = (pid_t)atoi(buf);
    size_t j = 0;
    while (j < distinct && seen[j] != pid) j++;
    if (j == distinct) seen[distinct++] = pid;
    ff_task_release(tasks[i]);
  }
  assert_true(distinct >= N / 3);
  assert_int_equal(atomic_load(&log.unexpected), 0);
  assert_int_equal(ff_pool_close(pool), 0);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* A failing initializer fails the pool once, with its detail, and the pool
 * does not respawn workers in a loop. */
static void test_init_failure(void **state) {
  (void)state;
  exit_log_t log = {0};
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 2;
  o.work = test_work;
  o.worker_init = init_fails;
  o.on_worker_exit = log_exit;
  o.notify_arg = &log;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  /* The pool stops by itself; a task submitted meanwhile fails with the
   * error, whether the failure came first or not. */
  ff_task_t *task = NULL;
  int rc = ff_pool_submit(pool, NULL, "sq 2", 4, 0, NULL, NULL, &task);
  assert_true(rc == 0 || rc == FF_EINITFAILED);
  if (rc == 0) {
    assert_int_equal(ff_task_wait(task, 30), 0);
    assert_int_equal(ff_task_status(task), FF_EINITFAILED);
    size_t len;
    const char *detail = ff_task_result(task, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(detail, "no database", 11);
    ff_task_release(task);
  }
  assert_int_equal(ff_pool_join(pool, 10), 0);
  assert_int_equal(ff_pool_error(pool), FF_EINITFAILED);
  char detail[32];
  assert_int_equal(ff_pool_error_detail(pool, detail, sizeof(detail)), 11);
  assert_memory_equal(detail, "no database", 11);
  ff_task_t *late = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, "sq 1", 4, 0, NULL, NULL, &late),
                   FF_EINITFAILED);
  assert_true(atomic_load(&log.exits) <= 2);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Tasks submitted with a completion queue come out of it as they finish. */
static void test_completion_queue(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  ff_queue_t *queue = NULL;
  assert_int_equal(ff_queue_create(&queue), 0);
  enum { N = 200 };
  int seen[N] = {0};
  for (intptr_t i = 0; i < N; i++) {
    ff_task_t *task = NULL;
    char msg[32];
    int k = snprintf(msg, sizeof(msg), "sq %d", (int)i);
    assert_int_equal(ff_pool_submit(pool, NULL, msg, (size_t)k, 0, queue, (void *)i,
                                    &task),
                     0);
    ff_task_release(task); /* the queue delivers it */
  }
  for (int n = 0; n < N; n++) {
    ff_task_t *task = NULL;
    assert_int_equal(ff_queue_pop(queue, 30, &task), 0);
    intptr_t i = (intptr_t)ff_task_user_data(task);
    assert_true(i >= 0 && i < N);
    assert_int_equal(seen[i], 0);
    seen[i] = 1;
    assert_int_equal(ff_task_status(task), 0);
    ff_task_release(task);
  }
  ff_task_t *none = NULL;
  assert_int_equal(ff_queue_pop(queue, 0.05, &none), -ETIMEDOUT);
  ff_pool_destroy(pool);
  ff_queue_destroy(queue);
}

/* A queue dropped while its tasks still run (an abandoned iterator) stays
 * valid for them; they finish normally. ASan checks the memory. */
static void test_queue_dropped_early(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  ff_queue_t *queue = NULL;
  assert_int_equal(ff_queue_create(&queue), 0);
  ff_task_t *tasks[6];
  for (int i = 0; i < 6; i++)
    assert_int_equal(ff_pool_submit(pool, NULL, "sleep 50", 8, 0, queue, NULL,
                                    &tasks[i]),
                     0);
  ff_queue_destroy(queue);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    ff_task_release(tasks[i]);
  }
  ff_pool_destroy(pool);
}

/* A queued task can be cancelled; a running one cannot (ff_task_kill
 * stops it). */
static void test_cancel(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *running = submit(pool, "sleep 300");
  ff_task_t *queued[5];
  for (int i = 0; i < 5; i++) queued[i] = submit(pool, "sq 3");
  usleep(100000);
  assert_int_equal(ff_task_cancel(running), -EBUSY);
  /* The first queued one may already sit in the worker's socket. */
  int cancelled = 0;
  for (int i = 0; i < 5; i++)
    if (ff_task_cancel(queued[i]) == 0) cancelled++;
  assert_true(cancelled >= 4);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(ff_task_wait(queued[i], 10), 0);
    int status = ff_task_status(queued[i]);
    assert_true(status == FF_ECANCELED || status == 0);
    ff_task_release(queued[i]);
  }
  assert_int_equal(ff_task_wait(running, 10), 0);
  assert_int_equal(ff_task_status(running), 0);
  assert_int_equal(ff_task_kill(running), -EALREADY);
  ff_task_release(running);
  ff_pool_destroy(pool);
}

/* Killing a running task kills its worker, which is replaced; a task queued
 * behind it runs elsewhere, and a killed task that waits behind another
 * stops its worker only when its turn comes. */
static void test_kill_running(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *running = submit(pool, "sleep 30000");
  usleep(100000);
  uint64_t started = monotonic_ns();
  assert_int_equal(ff_task_kill(running), 0);
  assert_int_equal(ff_task_wait(running, 10), 0);
  assert_int_equal(ff_task_status(running), FF_ECANCELED);
  assert_true(monotonic_ns() - started < 2000000000ull);
  ff_task_release(running);
  ff_task_t *after = submit(pool, "sq 7");
  assert_int_equal(ff_task_wait(after, 10), 0);
  assert_int_equal(ff_task_status(after), 0);
  ff_task_release(after);
  ff_pool_destroy(pool);
}

/* A task past its timeout has its worker stopped (SIGTERM) and replaced,
 * and finishes with -ETIMEDOUT; one behind it runs on the replacement. */
static void test_task_timeout(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *slow;
  ff_submit_options_t options = {0.2, -1};
  assert_int_equal(
      ff_pool_submit_with(pool, NULL, "sleep 30000", 11, 0, &options, NULL,
                          NULL, &slow),
      0);
  ff_task_t *after = submit(pool, "sq 5");
  uint64_t started = monotonic_ns();
  assert_int_equal(ff_task_wait(slow, 10), 0);
  uint64_t took = monotonic_ns() - started;
  assert_int_equal(ff_task_status(slow), -ETIMEDOUT);
  assert_int_equal(ff_task_exit(slow)->term_signal, SIGTERM);
  assert_true(took >= 200000000ull && took < 1500000000ull);
  assert_int_equal(ff_task_wait(after, 10), 0);
  assert_int_equal(ff_task_status(after), 0);
  ff_task_t *bad;
  options.timeout = NAN;
  assert_int_equal(ff_pool_submit_with(pool, NULL, "sq 1", 4, 0, &options,
                                       NULL, NULL, &bad),
                   -EINVAL);
  ff_task_release(slow);
  ff_task_release(after);
  ff_pool_destroy(pool);
}

/* A wait times out on time, and the task is unaffected. */
static void test_wait_timeout(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_task_t *task = submit(pool, "sleep 400");
  assert_int_equal(ff_task_wait(task, 0.1), -ETIMEDOUT);
  assert_false(ff_task_done(task));
  assert_int_equal(ff_task_status(task), FF_EPENDING);
  assert_int_equal(ff_task_wait(task, 10), 0);
  assert_int_equal(ff_task_status(task), 0);
  ff_task_release(task);
  ff_pool_destroy(pool);
}

/* A zygote started elsewhere (as the fork server starts one): the pool
 * adopts it, runs tasks through it and learns how its workers die; the
 * zygote exits when the pool is done. */
static void test_adopted_zygote(void **state) {
  (void)state;
  assert_int_equal(ff_zygote_serve(NULL, -1), -EINVAL);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 2;
  o.work = test_work;
  pid_t zygote = fork();
  assert_true(zygote >= 0);
  if (zygote == 0) {
    close(sv[0]);
    ff_zygote_serve(&o, sv[1]);
    _exit(3); /* only on bad arguments */
  }
  close(sv[1]);
  int pidfd = ff__pidfd_open(zygote);
  assert_true(pidfd >= 0);
  o.zygote = (ff_zygote_t){sv[0], zygote, pidfd};
  exit_log_t log = {0};
  o.on_worker_exit = log_exit;
  o.notify_arg = &log;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  expect_result(pool, "sq 7", "49");
  ff_task_t *task = submit(pool, "die 9");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EWORKERLOST);
  assert_int_equal(ff_task_exit(task)->term_signal, SIGKILL);
  ff_task_release(task);
  expect_result(pool, "sq 8", "64"); /* a replacement, from the same zygote */
  ff_pool_destroy(pool);
  assert_no_children(); /* the zygote exited, and the pool reaped it */

  /* Bad zygote arguments fail, and the descriptors are closed anyway. */
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  o.zygote = (ff_zygote_t){sv[0], 0, -1};
  assert_int_equal(ff_pool_create(&pool, &o), -EINVAL);
  assert_int_equal(fcntl(sv[0], F_GETFD), -1);
  assert_int_equal(errno, EBADF);
  close(sv[1]);
}

/* ---- ff_fork ------------------------------------------------------------- */

static int hooks_run[3]; /* prepare, parent, child */

static void count_prepare(void *arg) {
  (void)arg;
  hooks_run[0]++;
}
static void count_parent(void *arg) {
  (void)arg;
  hooks_run[1]++;
}
static void count_child(void *arg) {
  (void)arg;
  hooks_run[2]++;
}

/* The caller forks while a pool runs: both hooks run in the caller, the
 * child hook in the child, which gets a runtime of its own for a pool of
 * its own, and the caller's pool goes on. */
static void test_fork_with_a_running_pool(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(2, NULL);
  expect_result(pool, "sq 3", "9");
  memset(hooks_run, 0, sizeof(hooks_run));
  ff_fork_hooks_t hooks = {count_prepare, count_parent, count_child, NULL};
  pid_t pid = ff_fork(&hooks, FF_FORK_CALLBACK_WAIT);
  assert_true(pid >= 0);
  if (pid == 0) {
    if (hooks_run[0] != 1 || hooks_run[1] != 0 || hooks_run[2] != 1) _exit(10);
    ff_pool_options_t o;
    ff_pool_options_init(&o);
    o.workers = 1;
    o.work = test_work;
    ff_pool_t *mine = NULL;
    if (ff_pool_create(&mine, &o) != 0) _exit(11);
    ff_task_t *task = NULL;
    if (ff_pool_submit(mine, NULL, "sq 5", 4, 0, NULL, NULL, &task) != 0) _exit(12);
    if (ff_task_wait(task, 30) != 0 || ff_task_status(task) != 0) _exit(13);
    size_t len;
    const char *res = ff_task_result(task, &len);
    if (len != 2 || memcmp(res, "25", 2) != 0) _exit(14);
    ff_task_release(task);
    /* The parent's pool is the parent's. */
    if (ff_pool_submit(pool, NULL, "sq 1", 4, 0, NULL, NULL, &task) != FF_EFOREIGN)
      _exit(15);
    ff_pool_destroy(mine);
    _exit(0);
  }
  assert_int_equal(hooks_run[0], 1);
  assert_int_equal(hooks_run[1], 1);
  assert_int_equal(hooks_run[2], 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  expect_result(pool, "sq 4", "16");
  ff_pool_destroy(pool);
  /* Without a runtime, and without hooks, it is a fork. */
  pid = ff_fork(NULL, -1);
  assert_true(pid >= 0);
  if (pid == 0) _exit(7);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_int_equal(WEXITSTATUS(status), 7);
  assert_no_children();
}

/* A completion callback that takes its time (the embedder's code, holding
 * whatever it holds): a fork waits for it to end, or gives up. */
static _Atomic int slow_callback_state; /* 1 running, 2 done */
static _Atomic int forks_from_callback;

static void slow_callback(ff_task_t **tasks, size_t count, void *arg) {
  (void)tasks;
  (void)count;
  (void)arg;
  atomic_store(&slow_callback_state, 1);
  usleep(300000);
  /* A callback may fork: it is between batches itself. */
  pid_t pid = ff_fork(NULL, 0);
  if (pid == 0) _exit(0);
  if (pid > 0 && waitpid(pid, NULL, 0) == pid)
    atomic_fetch_add(&forks_from_callback, 1);
  atomic_store(&slow_callback_state, 2);
}

static void test_fork_waits_for_callbacks(void **state) {
  (void)state;
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 1;
  o.work = test_work;
  o.on_complete = slow_callback;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  atomic_store(&slow_callback_state, 0);
  ff_task_t *task = NULL;
  assert_int_equal(ff_pool_submit(pool, NULL, "sq 2", 4, FF_SUBMIT_NOTIFY,
                                  NULL, NULL, &task),
                   0);
  while (atomic_load(&slow_callback_state) == 0) usleep(1000);
  /* Too short a wait: no fork. */
  assert_int_equal(ff_fork(NULL, 0.01), -EBUSY);
  /* Long enough: the fork comes after the callback, never during it. */
  pid_t pid = ff_fork(NULL, 10);
  assert_true(pid >= 0);
  if (pid == 0) _exit(atomic_load(&slow_callback_state) == 2 ? 0 : 9);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(atomic_load(&forks_from_callback), 1);
  assert_int_equal(ff_task_wait(task, 30), 0);
  ff_task_release(task);
  ff_pool_destroy(pool);
  assert_no_children();
}

static int setup_alarm(void **state) {
  (void)state;
  alarm(120); /* a hang fails the run instead of stalling it */
  return 0;
}

/* ---- contexts ------------------------------------------------------------ */

/* How many contexts this process defined: each worker counts its own. */
static int defines_here;

static void *context_define(void *arg, const void *data, size_t len,
                            ff_buf_t *error) {
  (void)arg;
  if (len == 4 && memcmp(data, "fail", 4) == 0) {
    ff_buf_set(error, "cannot define", 13);
    return NULL;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) return NULL;
  memcpy(copy, data, len);
  copy[len] = 0;
  defines_here++;
  return copy;
}

static void context_free(void *arg, void *context) {
  (void)arg;
  free(context);
}

/* Answers "<context length>:<its first 8 bytes>|<input>|<pid>|<defines>". */
static int context_work(void *arg, void *context, const void *input,
                        size_t len, ff_buf_t *out) {
  (void)arg;
  const char *c = context ? context : "";
  char res[256];
  int k = snprintf(res, sizeof(res), "%zu:%.8s|%.*s|%d|%d", strlen(c), c,
                   (int)(len < 64 ? len : 64), (const char *)input,
                   (int)getpid(), defines_here);
  return ff_buf_set(out, res, (size_t)k);
}

static ff_pool_t *make_context_pool(unsigned workers) {
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = workers;
  o.work = context_work;
  o.define_context = context_define;
  o.free_context = context_free;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  return pool;
}

static ff_context_t *make_context(ff_pool_t *pool, const char *text,
                                  size_t len) {
  ff_context_t *c = NULL;
  assert_int_equal(ff_context_create(pool, text, len, &c), 0);
  return c;
}

static ff_task_t *submit_in(ff_pool_t *pool, ff_context_t *c, int i) {
  char msg[32];
  int k = snprintf(msg, sizeof(msg), "item%d", i);
  ff_task_t *task = NULL;
  assert_int_equal(
      ff_pool_submit(pool, c, msg, (size_t)k, 0, NULL, NULL, &task), 0);
  return task;
}

static void test_context_sent_once_per_worker(void **state) {
  (void)state;
  ff_pool_t *pool = make_context_pool(2);
  ff_context_t *c = make_context(pool, "alpha", 5);
  enum { N = 200 };
  ff_task_t *tasks[N];
  for (int i = 0; i < N; i++) tasks[i] = submit_in(pool, c, i);
  ff_context_release(c); /* the tasks hold their own references */
  for (int i = 0; i < N; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    /* Result bytes are not a C string: terminated here before sscanf. */
    size_t len;
    const char *bytes = ff_task_result(tasks[i], &len);
    char res[256];
    assert_true(len < sizeof(res));
    memcpy(res, bytes, len);
    res[len] = 0;
    char expected[64];
    snprintf(expected, sizeof(expected), "5:alpha|item%d|", i);
    assert_memory_equal(res, expected, strlen(expected));
    int pid, defines;
    assert_int_equal(sscanf(res + strlen(expected), "%d|%d", &pid, &defines),
                     2);
    /* One context, so each worker defined it exactly once. */
    assert_int_equal(defines, 1);
    ff_task_release(tasks[i]);
  }
  ff_pool_destroy(pool);
  assert_no_children();
}

static void test_context_eviction(void **state) {
  (void)state;
  /* More live contexts than a worker keeps: tasks alternate between them,
   * so workers evict and define again, and every task still sees its own. */
  ff_pool_t *pool = make_context_pool(2);
  enum { CONTEXTS = 12, ROUNDS = 20 };
  ff_context_t *contexts[CONTEXTS];
  char names[CONTEXTS][16];
  for (int k = 0; k < CONTEXTS; k++) {
    snprintf(names[k], sizeof(names[k]), "ctx%02d", k);
    contexts[k] = make_context(pool, names[k], strlen(names[k]));
  }
  ff_task_t *tasks[CONTEXTS * ROUNDS];
  for (int r = 0; r < ROUNDS; r++)
    for (int k = 0; k < CONTEXTS; k++)
      tasks[r * CONTEXTS + k] = submit_in(pool, contexts[k], r);
  for (int r = 0; r < ROUNDS; r++) {
    for (int k = 0; k < CONTEXTS; k++) {
      ff_task_t *t = tasks[r * CONTEXTS + k];
      assert_int_equal(ff_task_wait(t, 30), 0);
      assert_int_equal(ff_task_status(t), 0);
      char expected[256];
      snprintf(expected, sizeof(expected), "5:%.5s|item%d|", names[k], r);
      assert_memory_equal(ff_task_result(t, NULL), expected,
                          strlen(expected));
      ff_task_release(t);
    }
  }
  for (int k = 0; k < CONTEXTS; k++) ff_context_release(contexts[k]);
  ff_pool_destroy(pool);
}

static void test_context_define_failure(void **state) {
  (void)state;
  ff_pool_t *pool = make_context_pool(1);
  ff_context_t *bad = make_context(pool, "fail", 4);
  ff_task_t *task = submit_in(pool, bad, 1);
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_ETASKFAILED);
  size_t len;
  const char *detail = ff_task_result(task, &len);
  assert_int_equal(len, 13);
  assert_memory_equal(detail, "cannot define", 13);
  ff_task_release(task);
  ff_context_release(bad);
  /* The worker and the pool carry on. */
  ff_context_t *good = make_context(pool, "fine", 4);
  task = submit_in(pool, good, 2);
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), 0);
  ff_task_release(task);
  ff_context_release(good);
  ff_pool_destroy(pool);
}

static void test_context_larger_than_ring(void **state) {
  (void)state;
  /* A context of 3 MiB travels in fragments through a 1 MiB ring. */
  ff_pool_t *pool = make_context_pool(2);
  size_t size = 3u << 20;
  char *big = malloc(size + 1);
  assert_non_null(big);
  for (size_t i = 0; i < size; i++) big[i] = (char)('a' + i % 26);
  big[size] = 0;
  ff_context_t *c = make_context(pool, big, size);
  free(big);
  ff_task_t *tasks[8];
  for (int i = 0; i < 8; i++) tasks[i] = submit_in(pool, c, i);
  ff_context_release(c);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    assert_int_equal(ff_task_status(tasks[i]), 0);
    char expected[64];
    snprintf(expected, sizeof(expected), "%zu:abcdefgh|item%d|", size, i);
    assert_memory_equal(ff_task_result(tasks[i], NULL), expected,
                        strlen(expected));
    ff_task_release(tasks[i]);
  }
  ff_pool_destroy(pool);
}

static void test_context_needs_define_callback(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, NULL);
  ff_context_t *c = NULL;
  assert_int_equal(ff_context_create(pool, "x", 1, &c), -EINVAL);
  ff_pool_destroy(pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_create_destroy, setup_alarm),
      cmocka_unit_test_setup(test_invalid_options, setup_alarm),
      cmocka_unit_test_setup(test_round_trip, setup_alarm),
      cmocka_unit_test_setup(test_adopted_zygote, setup_alarm),
      cmocka_unit_test_setup(test_fork_with_a_running_pool, setup_alarm),
      cmocka_unit_test_setup(test_fork_waits_for_callbacks, setup_alarm),
      cmocka_unit_test_setup(test_task_failure, setup_alarm),
      cmocka_unit_test_setup(test_many_messages, setup_alarm),
      cmocka_unit_test_setup(test_large_message, setup_alarm),
      cmocka_unit_test_setup(test_worker_killed, setup_alarm),
      cmocka_unit_test_setup(test_worker_exit_codes, setup_alarm),
      cmocka_unit_test_setup(test_worker_exit_lookup, setup_alarm),
      cmocka_unit_test_setup(test_start_on_demand, setup_alarm),
      cmocka_unit_test_setup(test_idle_limit, setup_alarm),
      cmocka_unit_test_setup(test_start_on_demand_replacement, setup_alarm),
      cmocka_unit_test_setup(test_start_on_demand_init_failure, setup_alarm),
      cmocka_unit_test_setup(test_stop_workers, setup_alarm),
      cmocka_unit_test_setup(test_killed_task_behind_a_dying_worker, setup_alarm),
      cmocka_unit_test_setup(test_corrupt_message, setup_alarm),
      cmocka_unit_test_setup(test_clean_shutdown, setup_alarm),
      cmocka_unit_test_setup(test_join_before_the_reaping, setup_alarm),
      cmocka_unit_test_setup(test_terminate, setup_alarm),
      cmocka_unit_test_setup(test_max_tasks_per_worker, setup_alarm),
      cmocka_unit_test_setup(test_init_failure, setup_alarm),
      cmocka_unit_test_setup(test_completion_queue, setup_alarm),
      cmocka_unit_test_setup(test_queue_dropped_early, setup_alarm),
      cmocka_unit_test_setup(test_cancel, setup_alarm),
      cmocka_unit_test_setup(test_kill_running, setup_alarm),
      cmocka_unit_test_setup(test_task_timeout, setup_alarm),
      cmocka_unit_test_setup(test_wait_timeout, setup_alarm),
      cmocka_unit_test_setup(test_context_sent_once_per_worker, setup_alarm),
      cmocka_unit_test_setup(test_context_eviction, setup_alarm),
      cmocka_unit_test_setup(test_context_define_failure, setup_alarm),
      cmocka_unit_test_setup(test_context_larger_than_ring, setup_alarm),
      cmocka_unit_test_setup(test_context_needs_define_callback, setup_alarm),
  };
  /* FF_TEST_FILTER=name_pattern runs a subset, for debugging. */
  const char *filter = getenv("FF_TEST_FILTER");
  if (filter) cmocka_set_test_filter(filter);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
