/* Tests of captured worker output (lib/output.c) through the public API:
 * each task gets exactly what its worker wrote while it ran it, on each
 * stream, also when tasks are pipelined, when the worker is killed or the
 * pool terminated; what no task owns is the pool's. Every test reaps what
 * it forked. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkfarm.h"

/* The work callback: "out TEXT" printf()s TEXT and a newline through
 * stdio (left in its buffer: the runtime flushes it); "err TEXT" writes it
 * to descriptor 2; "rec TEXT" to the records stream; "die TEXT" writes it
 * to descriptor 1 and dies by SIGKILL; "nap TEXT" writes it, then sleeps
 * for a minute. */
static int output_work(void *arg, void *context, const void *input,
                       size_t len, ff_buf_t *out) {
  (void)arg;
  (void)context;
  char cmd[256];
  size_t n = len < sizeof(cmd) - 1 ? len : sizeof(cmd) - 1;
  memcpy(cmd, input, n);
  cmd[n] = 0;
  const char *text = strchr(cmd, ' ');
  text = text ? text + 1 : "";
  size_t text_len = strlen(text);
  ssize_t rc = 0;
  if (strncmp(cmd, "out ", 4) == 0) {
    printf("%s\n", text);
  } else if (strncmp(cmd, "err ", 4) == 0) {
    rc = write(2, text, text_len);
  } else if (strncmp(cmd, "rec ", 4) == 0) {
    rc = write(ff_worker_output_fd(FF_OUTPUT_RECORDS), text, text_len);
  } else if (strncmp(cmd, "die ", 4) == 0) {
    rc = write(1, text, text_len);
    signal(SIGKILL, SIG_DFL);
    raise(SIGKILL);
  } else if (strncmp(cmd, "nap ", 4) == 0) {
    rc = write(1, text, text_len);
    sleep(60);
  }
  if (rc < 0) return -1;
  return ff_buf_set(out, "ok", 2);
}

/* Runs in each worker just before it exits cleanly. */
static void say_goodbye(void *arg) {
  (void)arg;
  ssize_t rc = write(1, "bye\n", 4);
  (void)rc;
}

static ff_pool_t *make_pool_limited(unsigned workers, int capture,
                                    size_t max_message) {
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.max_message_size = max_message;
  o.workers = workers;
  o.work = output_work;
  o.worker_exit = say_goodbye;
  o.capture_output = capture;
  ff_pool_t *pool = NULL;
  assert_int_equal(ff_pool_create(&pool, &o), 0);
  return pool;
}

static ff_pool_t *make_pool(unsigned workers, int capture) {
  return make_pool_limited(workers, capture, 0);
}

static ff_task_t *submit(ff_pool_t *pool, const char *msg) {
  ff_task_t *task = NULL;
  assert_int_equal(
      ff_pool_submit(pool, NULL, msg, strlen(msg), 0, NULL, NULL, &task), 0);
  return task;
}

static void assert_output(ff_task_t *task, unsigned stream,
                          const char *expected) {
  size_t length;
  const char *data = ff_task_output(task, stream, &length);
  if (expected == NULL) {
    assert_null(data);
    assert_int_equal(length, 0);
    return;
  }
  assert_non_null(data);
  assert_int_equal(length, strlen(expected));
  assert_memory_equal(data, expected, length);
}

static void assert_no_children(void) {
  int status;
  assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

static void test_each_stream_comes_back_with_its_task(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, 1);
  ff_task_t *out = submit(pool, "out hello");
  ff_task_t *err = submit(pool, "err oops");
  ff_task_t *rec = submit(pool, "rec {record}");
  assert_int_equal(ff_task_wait(rec, 30), 0);
  assert_int_equal(ff_task_wait(out, 30), 0);
  assert_int_equal(ff_task_wait(err, 30), 0);
  assert_output(out, FF_OUTPUT_STDOUT, "hello\n");
  assert_output(out, FF_OUTPUT_STDERR, NULL);
  assert_output(err, FF_OUTPUT_STDERR, "oops");
  assert_output(err, FF_OUTPUT_STDOUT, NULL);
  assert_output(rec, FF_OUTPUT_RECORDS, "{record}");
  assert_int_equal(ff_task_output_slot(out), 0);
  ff_task_release(out);
  ff_task_release(err);
  ff_task_release(rec);
  ff_pool_close(pool);
  assert_int_equal(ff_pool_join(pool, 30), 0);
  /* The worker's goodbye, after its last task, is the pool's. */
  ff_buf_t stray = {0};
  assert_int_equal(ff_pool_take_output(pool, FF_OUTPUT_STDOUT, &stray), 0);
  assert_int_equal(stray.len, 4);
  assert_memory_equal(stray.base, "bye\n", 4);
  stray.len = 0;
  assert_int_equal(ff_pool_take_output(pool, FF_OUTPUT_STDOUT, &stray), 0);
  assert_int_equal(stray.len, 0); /* taken once */
  free(stray.base);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Tasks queued behind each other on one worker: each gets its own bytes,
 * never its neighbour's. */
static void test_pipelined_tasks_keep_their_own_output(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, 1);
  enum { COUNT = 200 };
  ff_task_t *tasks[COUNT];
  char msg[64], expected[64];
  for (int i = 0; i < COUNT; i++) {
    snprintf(msg, sizeof(msg), "out line %d", i);
    tasks[i] = submit(pool, msg);
  }
  for (int i = 0; i < COUNT; i++) {
    assert_int_equal(ff_task_wait(tasks[i], 30), 0);
    snprintf(expected, sizeof(expected), "line %d\n", i);
    assert_output(tasks[i], FF_OUTPUT_STDOUT, expected);
    ff_task_release(tasks[i]);
  }
  ff_pool_destroy(pool);
  assert_no_children();
}

static void test_a_killed_worker_output_goes_to_its_task(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, 1);
  ff_task_t *task = submit(pool, "die last words");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_EWORKERLOST);
  assert_output(task, FF_OUTPUT_STDOUT, "last words");
  ff_task_release(task);
  /* The replacement starts with empty streams. */
  task = submit(pool, "out fresh");
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_output(task, FF_OUTPUT_STDOUT, "fresh\n");
  ff_task_release(task);
  ff_pool_destroy(pool);
  assert_no_children();
}

static void test_terminate_keeps_what_the_running_task_wrote(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, 1);
  ff_task_t *task = submit(pool, "nap dozing");
  /* It wrote before it slept; wait until its bytes can be there. */
  usleep(300000);
  ff_pool_terminate(pool);
  assert_int_equal(ff_task_wait(task, 30), 0);
  assert_int_equal(ff_task_status(task), FF_ECANCELED);
  assert_output(task, FF_OUTPUT_STDOUT, "dozing");
  ff_task_release(task);
  ff_pool_destroy(pool);
  assert_no_children();
}

/* Output past max_message_size costs no more memory: its oldest bytes are
 * skipped, and a note says how many. */
static void test_output_is_bounded_by_the_message_limit(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool_limited(1, 1, 100);
  char msg[256] = "out ";
  memset(msg + 4, 'x', 150);
  memcpy(msg + 4 + 150, "END", 4);
  ff_task_t *task = submit(pool, msg);
  assert_int_equal(ff_task_wait(task, 30), 0);
  size_t length;
  const char *data = ff_task_output(task, FF_OUTPUT_STDOUT, &length);
  assert_non_null(data);
  const char *note = "[forkfarm: 54 bytes of output dropped: over max_message_size]\n";
  assert_true(length > strlen(note) + 100 - 1);
  const char *said = "54 bytes of output dropped";
  assert_non_null(memmem(data, length, said, strlen(said)));
  /* The newest bytes are kept, the end of the line included. */
  assert_memory_equal(data + length - 4, "END\n", 4);
  ff_task_release(task);
  ff_pool_destroy(pool);
  assert_no_children();
}

static void test_nothing_is_captured_unless_asked(void **state) {
  (void)state;
  ff_pool_t *pool = make_pool(1, 0);
  ff_task_t *task = submit(pool, "rec lost");
  assert_int_equal(ff_task_wait(task, 30), 0);
  /* No records stream in the worker: its write failed, and so did the
   * task. */
  assert_int_equal(ff_task_status(task), FF_ETASKFAILED);
  assert_output(task, FF_OUTPUT_STDOUT, NULL);
  assert_int_equal(ff_task_output_slot(task), -1);
  ff_task_release(task);
  assert_int_equal(ff_worker_output_fd(FF_OUTPUT_STDOUT), -1);
  ff_buf_t stray = {0};
  assert_int_equal(ff_pool_take_output(pool, 7, &stray), -EINVAL);
  ff_pool_destroy(pool);
  assert_no_children();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_each_stream_comes_back_with_its_task),
      cmocka_unit_test(test_pipelined_tasks_keep_their_own_output),
      cmocka_unit_test(test_a_killed_worker_output_goes_to_its_task),
      cmocka_unit_test(test_terminate_keeps_what_the_running_task_wrote),
      cmocka_unit_test(test_output_is_bounded_by_the_message_limit),
      cmocka_unit_test(test_nothing_is_captured_unless_asked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
