/* libFuzzer harness: a pool's parent reading what a hostile worker left in
 * its result ring.
 *
 * A real pool of one worker runs each input as a task: the worker writes
 * the input's records straight into its own result ring (type, flags, id,
 * payload: results for its task or for others, READY, RETIRE, FORGET and
 * RELEASE records with any payload, types that do not exist, fragments
 * that never end), then exits or returns. The parent must settle the task
 * (a result, or a failure; at worst when its 2 s limit kills the worker)
 * within seconds, replace the worker, and go on serving: the next task, a
 * plain one, must come back right. */
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../lib/internal.h"

static ff_pool_t *pool;
static uint64_t next_id = 1; /* the pool numbers its tasks from 1 */

/* The worker's segment of rings, found by its memfd's name. */
static void *worker_segment(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  if (maps == NULL) return NULL;
  char line[512];
  void *base = NULL;
  while (base == NULL && fgets(line, sizeof(line), maps)) {
    unsigned long start;
    if (strstr(line, "memfd:forkfarm-worker") && sscanf(line, "%lx-", &start) == 1)
      base = (void *)start;
  }
  fclose(maps);
  return base;
}

/* In the worker: "ping" answers "pong"; anything else is [its task id]
 * [mode] then records of [type][flags][length][id mode] and payload. */
static int work(void *arg, void *context, const void *input, size_t len,
                ff_buf_t *out) {
  (void)arg;
  (void)context;
  if (len == 4 && memcmp(input, "ping", 4) == 0) return ff_buf_set(out, "pong", 4);
  const uint8_t *in = input;
  if (len < 9) return ff_buf_set(out, "short", 5);
  uint64_t own;
  memcpy(&own, in, sizeof(own));
  uint8_t mode = in[8];
  void *base = worker_segment();
  ff__ring_t tasks, results;
  if (base == NULL || ff__worker_rings(base, &tasks, &results, 0) < 0) _exit(3);
  static char payload[1 << 17];
  for (size_t at = 9; at + 5 <= len;) {
    uint16_t type = in[at], flags = in[at + 1];
    size_t n = ((size_t)in[at + 2] << 8 | in[at + 3]) * (in[at + 4] & 0x80 ? 64 : 1);
    uint64_t id = in[at + 4] & 1 ? own : in[at + 4] >> 1;
    at += 5;
    if (n > sizeof(payload)) n = sizeof(payload);
    size_t have = len - at < n ? len - at : n;
    memcpy(payload, in + at, have);
    memset(payload + have, 0, n - have);
    at += have;
    size_t offset = 0;
    /* As far as the ring takes: the parent reads only once this returns. */
    ff__ring_write(&results, type, flags, id, payload, n, &offset);
  }
  if (mode % 3 == 0) _exit(0);
  if (mode % 3 == 1) raise(SIGKILL);
  return ff_buf_set(out, "done", 4);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  ff_pool_options_t o;
  ff_pool_options_init(&o);
  o.workers = 1;
  o.work = work;
  o.max_message_size = 1 << 20;
  if (ff_pool_create(&pool, &o) != 0) abort();
  return 0;
}

/* Runs one task. A hostile worker can leave its own task unfinished for
 * good and stay alive (a message it never completes), as a worker in an
 * endless loop can: the task gets a time limit, as a user would give it,
 * and then fails; nothing else may keep it from finishing. */
static ff_task_t *run(const void *message, size_t length) {
  ff_task_t *task;
  ff_submit_options_t limit = {2.0, 0};
  if (ff_pool_submit_with(pool, NULL, message, length, 0, &limit, NULL, NULL,
                          &task) != 0)
    abort();
  next_id++;
  /* A hang is a failure: the parent must settle every task. libFuzzer's
   * own timer interrupts the wait now and then (-EINTR): it goes on. */
  uint64_t deadline = ff__deadline(8);
  int rc;
  do {
    uint64_t now = ff__now_ns();
    rc = ff_task_wait(task, now >= deadline ? 0 : (double)(deadline - now) / 1e9);
  } while (rc == -EINTR);
  if (rc != 0) {
    ff_pool_stats_t stats;
    ff_worker_stats_t worker;
    ff_pool_stats(pool, &stats, &worker, 1);
    fprintf(stderr, "task %llu did not finish (%d): %llu queued, %llu in "
            "flight, worker pid %d\n", (unsigned long long)ff_task_id(task), rc,
            (unsigned long long)stats.queued,
            (unsigned long long)stats.in_flight, (int)worker.pid);
    abort();
  }
  return task;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 1 << 16) return 0;
  char *message = malloc(size + 8);
  if (message == NULL) return 0;
  uint64_t id = next_id;
  memcpy(message, &id, sizeof(id));
  memcpy(message + 8, data, size);
  ff_task_t *task = run(message, size + 8);
  int status = ff_task_status(task);
  if (status == FF_EPENDING) abort();
  ff_task_release(task);
  free(message);
  /* The pool goes on: a plain task comes back right. The first may still
   * meet the hostile worker (one that returned lives on until the parent
   * finds what it wrote) and fail with it; never with a wrong answer. */
  for (int tries = 0;; tries++) {
    task = run("ping", 4);
    size_t length;
    const char *result = ff_task_result(task, &length);
    status = ff_task_status(task);
    bool pong = status == 0 && length == 4 && memcmp(result, "pong", 4) == 0;
    ff_task_release(task);
    if (pong) break;
    if (tries == 2 || status == 0 ||
        (status != FF_EPROTOCOL && status != FF_EWORKERLOST &&
         status != -ETIMEDOUT)) {
      fprintf(stderr, "ping: status %d (%s)\n", status, ff_strerror(status));
      abort();
    }
  }
  return 0;
}
