/* The worker process: initialize, then run tasks until told to stop.
 *
 * A worker is single-threaded. It pops tasks from its task ring, runs them
 * in order and pushes one RESULT per TASK, with the same id, onto its result
 * ring, so the parent matches results to tasks by position and checks the
 * id. Between tasks it spins briefly, then sleeps on the ring's futex. It
 * wakes the parent only when the parent announced that it sleeps. It exits
 * after max_tasks_per_worker tasks or on STOP; when the parent dies, the
 * zygote kills it. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct context_slot_s {
  void *context;  /* what define_context made of it, or NULL */
  ff_buf_t error; /* why define_context failed, when context is NULL */
  bool defined;
} context_slot_t;

typedef struct worker_s {
  const ff_pool_options_t *options;
  size_t max_message; /* the largest result the parent accepts */
  bool retiring; /* asked the parent for a STOP */
  uint64_t memory_checked_ns;
  ff__ring_t tasks;
  ff__ring_t results;
  ff__ring_reader_t reader;
  context_slot_t slots[FF__CONTEXT_SLOTS];
  ff_buf_t out;
} worker_t;

int ff__worker_rings(void *segment, ff__ring_t *tasks, ff__ring_t *results,
                     int init) {
  int rc = ff__ring_attach(tasks, segment, FF__TASK_RING_CAPACITY, init);
  if (rc < 0) return rc;
  return ff__ring_attach(
      results, (char *)segment + ff__ring_size(FF__TASK_RING_CAPACITY),
      FF__RESULT_RING_CAPACITY, init);
}

size_t ff__default_max_message(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return (size_t)1 << 30;
  return (size_t)pages * (size_t)page / 4;
}

static _Noreturn void worker_exit(worker_t *w, int code) {
  const ff_pool_options_t *o = w->options;
  if (o->worker_exit) o->worker_exit(o->worker_arg);
  /* _exit, not exit: the atexit handlers and stdio buffers inherited from
   * the parent belong to the parent. */
  _exit(code);
}

/* A clean exit, asked for (STOP) or due (max_tasks_per_worker): once the
 * exit hook has run, the worker tells the parent, after its last result,
 * that it runs nothing more, so that join() need not wait for the zygote
 * to reap it. Only if the record fits at once: the exit is reported by the
 * zygote anyway. */
static _Noreturn void worker_finish(worker_t *w) {
  const ff_pool_options_t *o = w->options;
  if (o->worker_exit) o->worker_exit(o->worker_arg);
  size_t offset = 0;
  if (ff__ring_write2(&w->results, FF__RING_EXIT, 0, 0, NULL, 0, "", 0,
                      &offset) == 1)
    ff__ring_wake_consumer(&w->results);
  _exit(0);
}

/* Pushes a whole message onto the result ring, waiting for room when the
 * parent is behind, and wakes the parent if it sleeps. */
static void worker_send(worker_t *w, uint16_t type, uint16_t flags,
                        uint64_t id, const void *prefix, size_t prefix_length,
                        const void *data, size_t length) {
  size_t offset = 0;
  for (;;) {
    int rc = ff__ring_write2(&w->results, type, flags, id, prefix,
                             prefix_length, data, length, &offset);
    if (rc < 0) worker_exit(w, 0); /* broken: the parent gave up on us */
    ff__ring_wake_consumer(&w->results);
    if (rc == 1) return;
    rc = ff__ring_wait_writable(&w->results, prefix_length + length - offset,
                                FF__WORKER_SPIN_NS, UINT64_MAX);
    if (rc == -EPIPE) worker_exit(w, 0);
  }
}

/* Tells the parent which of its arena bytes this worker is done with:
 * before the task's result, so that a caller that sends again at once
 * finds the bytes free. A worker that lost its lender socket asks to be
 * replaced. */
static void worker_report_releases(worker_t *w) {
  ff__arena_report_t reports[64];
  size_t n;
  while ((n = ff__arena_take_reports(reports, 64)) > 0)
    worker_send(w, FF__RING_RELEASE, 0, 0, NULL, 0, reports,
                n * sizeof(reports[0]));
  if (ff__share_lender_lost() && !w->retiring) {
    w->retiring = true;
    worker_send(w, FF__RING_RETIRE, 0, 0, NULL, 0, "", 0);
  }
}

/* Tells the parent which segments it made for this worker were let go,
 * after the results that may name them. */
static void worker_report_forgotten(worker_t *w) {
  uint64_t ids[64];
  size_t n;
  while ((n = ff__share_take_forgotten(ids, 64)) > 0)
    worker_send(w, FF__RING_FORGET, 0, 0, NULL, 0, ids, n * sizeof(ids[0]));
}

/* The memory this process alone holds, in bytes (its private pages: pages
 * it shares with the parent it was forked from, untouched since, do not
 * count), or 0 if unknown. */
static size_t private_bytes(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  if (f == NULL) return 0;
  char line[256];
  unsigned long kb, total = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (sscanf(line, "Private_Clean: %lu kB", &kb) == 1 ||
        sscanf(line, "Private_Dirty: %lu kB", &kb) == 1)
      total += kb;
  }
  fclose(f);
  return (size_t)total * 1024;
}

/* How often a worker looks at its memory at most: reading it costs tens of
 * microseconds, more than a short task. */
#define MEMORY_CHECK_NS 2000000u

/* Past its memory limit, a worker asks to be stopped: the parent sends no
 * more tasks and a STOP once those it holds are done, so none is lost. */
static void worker_check_memory(worker_t *w) {
  size_t limit = w->options->max_memory_per_worker;
  if (limit == 0 || w->retiring) return;
  uint64_t now = ff__now_ns();
  if (now - w->memory_checked_ns < MEMORY_CHECK_NS) return;
  w->memory_checked_ns = now;
  if (private_bytes() <= limit) return;
  w->retiring = true;
  worker_send(w, FF__RING_RETIRE, 0, 0, NULL, 0, "", 0);
}

static void worker_define(worker_t *w, const ff__ring_msg_t *msg) {
  const ff_pool_options_t *o = w->options;
  unsigned slot = msg->flags >> FF__RING_SLOT_SHIFT;
  if (slot >= FF__CONTEXT_SLOTS || o->define_context == NULL)
    worker_exit(w, FF__EXIT_PROTOCOL);
  context_slot_t *s = &w->slots[slot];
  if (s->defined && s->context && o->free_context)
    o->free_context(o->work_arg, s->context);
  s->error.len = 0;
  s->context = o->define_context(o->work_arg, msg->data, msg->length,
                                 &s->error);
  s->defined = true;
}

static void worker_run(worker_t *w, const ff__ring_msg_t *msg) {
  const ff_pool_options_t *o = w->options;
  void *context = NULL;
  w->out.len = 0;
  int rc = 0;
  uint64_t started = ff__now_ns();
  if (msg->flags & FF__RING_CONTEXT) {
    unsigned slot = msg->flags >> FF__RING_SLOT_SHIFT;
    if (slot >= FF__CONTEXT_SLOTS || !w->slots[slot].defined)
      worker_exit(w, FF__EXIT_PROTOCOL);
    context = w->slots[slot].context;
    if (context == NULL) {
      /* The context could not be defined here: its tasks fail with why. */
      const ff_buf_t *e = &w->slots[slot].error;
      if (ff_buf_set(&w->out, e->base ? e->base : "", e->len) < 0)
        w->out.len = 0;
      rc = -1;
    }
  }
  if (rc == 0)
    rc = o->work(o->work_arg, context, msg->data, msg->length, &w->out);
  uint64_t took = ff__now_ns() - started;
  uint64_t id = msg->id;
  /* The task's bytes are no longer needed: give the room back first, so
   * the parent can queue more while this result travels. */
  ff__ring_release(&w->tasks, msg);
  ff__ring_wake_producer(&w->tasks);
  worker_report_releases(w);
  /* What the task printed is in its streams' files before its result
   * says it is done: the parent reads up to these ends for it. */
  uint64_t ends[FF_OUTPUT_STREAMS];
  if (ff__output_worker_ends(ends)) {
    /* The RESULT right behind it wakes the parent: one wake-up, not two
     * (a parent woken for this record alone would sleep again). */
    size_t offset = 0;
    if (ff__ring_write2(&w->results, FF__RING_OUTPUT, 0, id, NULL, 0, ends,
                        sizeof(ends), &offset) != 1)
      worker_send(w, FF__RING_OUTPUT, 0, id, NULL, 0, ends, sizeof(ends));
  }
  uint16_t flags = rc != 0 ? FF__RING_FAILED : 0;
  if (w->out.len > w->max_message) {
    /* The parent would refuse it: only its size goes. */
    uint64_t size = w->out.len;
    worker_send(w, FF__RING_RESULT, FF__RING_OVERSIZE, id, &took,
                sizeof(took), &size, sizeof(size));
  } else {
    worker_send(w, FF__RING_RESULT, flags, id, &took, sizeof(took),
                w->out.base ? w->out.base : "", w->out.len);
  }
  worker_report_forgotten(w);
}

/* The slot this process fills, in a worker; -1 elsewhere. */
static int worker_slot = -1;

int ff_worker_slot(void) { return worker_slot; }

_Noreturn void ff__worker_main(const ff_pool_options_t *o, unsigned slot,
                               int shm_fd, int doorbell_fd, int lender_fd) {
  worker_slot = (int)slot;
  worker_t w;
  memset(&w, 0, sizeof(w));
  w.options = o;
  w.max_message = o->max_message_size ? o->max_message_size
                                      : ff__default_max_message();
  ff__shm_t shm;
  if (ff__shm_attach(&shm, shm_fd) < 0 ||
      ff__worker_rings(shm.base, &w.tasks, &w.results, 0) < 0)
    _exit(FF__EXIT_PROTOCOL);
  /* Both of the parent's sides sleep in its event loop. */
  w.results.consumer_fd = doorbell_fd;
  w.tasks.producer_fd = doorbell_fd;
  ff__arena_forget_reports();
  ff__share_set_lender(lender_fd);

  int rc = o->worker_init ? o->worker_init(o->worker_arg, &w.out) : 0;
  if (rc != 0) {
    worker_send(&w, FF__RING_READY, FF__RING_FAILED, 0, NULL, 0,
                w.out.base ? w.out.base : "", w.out.len);
    worker_exit(&w, FF__EXIT_INIT_FAILED);
  }
  worker_send(&w, FF__RING_READY, 0, 0, NULL, 0, "", 0);

  unsigned done = 0;
  for (;;) {
    ff__ring_msg_t msg;
    rc = ff__ring_read(&w.tasks, &w.reader, &msg, NULL);
    if (rc < 0) worker_exit(&w, FF__EXIT_PROTOCOL);
    if (rc == 0) {
      worker_report_releases(&w);
      worker_report_forgotten(&w);
      rc = ff__ring_wait_readable(&w.tasks, FF__WORKER_SPIN_NS, UINT64_MAX);
      if (rc == -EPIPE) worker_exit(&w, 0);
      continue;
    }
    switch (msg.type) {
      case FF__RING_STOP:
        worker_finish(&w);
      case FF__RING_DEFINE:
        worker_define(&w, &msg);
        ff__ring_release(&w.tasks, &msg);
        ff__ring_wake_producer(&w.tasks);
        break;
      case FF__RING_RELEASE:
        /* The parent is done with bytes of this worker's results. */
        ff__arena_reported(FF__RECEIVER_PARENT, msg.data, msg.length);
        ff__ring_release(&w.tasks, &msg);
        ff__ring_wake_producer(&w.tasks);
        break;
      case FF__RING_TASK:
        worker_run(&w, &msg);
        worker_check_memory(&w);
        done++;
        if (o->max_tasks_per_worker && done >= o->max_tasks_per_worker)
          worker_finish(&w);
        break;
      default:
        worker_exit(&w, FF__EXIT_PROTOCOL);
    }
  }
}
