/* Tasks and completion queues.
 *
 * A task is shared by the caller and the runtime, each holding a reference.
 * Its outcome is written by the loop thread before the task is published;
 * waiters sleep on a futex word that publication flips, so a caller that
 * waits costs no lock and no thread in between. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A queue is shared by its owner and the unfinished tasks bound to it:
 * each holds a reference, so the owner may destroy it while tasks are still
 * running; their completions then go nowhere. */
struct ff_queue_s {
  pthread_mutex_t lock;
  ff__link_t tasks;
  _Atomic uint32_t sequence; /* the futex word: bumped on every push */
  _Atomic uint32_t sleepers;
  _Atomic uint32_t refs;
  bool closed; /* the owner destroyed it: pushes are dropped */
  /* The pool of its first task (a reference): a pop polls its results. */
  _Atomic(ff_pool_t *) pool;
};

static void queue_release(ff_queue_t *q) {
  if (atomic_fetch_sub(&q->refs, 1) != 1) return;
  ff_pool_t *pool = atomic_load(&q->pool);
  if (pool) ff__pool_release(pool);
  pthread_mutex_destroy(&q->lock);
  free(q);
}

ff_task_t *ff__task_new(ff_pool_t *pool, ff_context_t *context,
                        const void *message, size_t length, unsigned flags,
                        ff_queue_t *queue, void *user_data) {
  ff_task_t *task = calloc(1, sizeof(*task));
  if (task == NULL) return NULL;
  task->message = malloc(length ? length : 1);
  if (task->message == NULL) {
    free(task);
    return NULL;
  }
  if (length) memcpy(task->message, message, length);
  task->message_length = length;
  ff__share_pin_message(task->message, length);
  atomic_init(&task->refs, 2); /* the caller's and the runtime's */
  atomic_init(&task->stage, FF__TASK_QUEUED);
  atomic_init(&task->done, 0);
  task->flags = flags;
  task->queue = queue;
  if (queue) {
    atomic_fetch_add(&queue->refs, 1);
    ff_pool_t *none = NULL;
    ff__pool_retain(pool);
    if (!atomic_compare_exchange_strong(&queue->pool, &none, pool))
      ff__pool_release(pool);
  }
  task->context = context;
  if (context) ff__context_retain(context);
  task->user_data = user_data;
  task->status = FF_EPENDING;
  task->exit.pid = 0;
  task->exit.exit_code = -1;
  task->exit.term_signal = 0;
  ff__list_init(&task->link);
  ff__list_init(&task->queue_link);
  task->pool = pool;
  ff__pool_retain(pool);
  return task;
}

/* The message is done with: a worker that took it claimed its buffers, and
 * the rest go back; the segments it pinned are let go. */
static void task_drop_message(ff_task_t *task) {
  if (task->message == NULL) return;
  ff__arena_cancel_message(task->message, task->message_length);
  ff__share_unpin_message(task->message, task->message_length);
  free(task->message);
  task->message = NULL;
}

void ff__task_settle(ff_task_t *task, int status, char *block, size_t offset,
                     size_t result_length, const ff_exit_t *exit) {
  task_drop_message(task);
  ff_context_release(task->context);
  task->context = NULL;
  task->status = status;
  task->result_block = block;
  char *result = block != NULL ? block + offset : NULL;
  task->result = result;
  task->result_length = result_length;
  /* The segments a result names stay lendable while it may be decoded. */
  if (status == 0) ff__share_pin_message(result, result_length);
  if (exit) task->exit = *exit;
  atomic_store(&task->stage, FF__TASK_FINISHED);
}

void ff__task_publish(ff_task_t *task) {
  ff__futex_publish(&task->done, 1, &task->sleepers);
  if (task->queue) ff__queue_push(task->queue, task);
  ff_task_release(task);
}

int ff_task_wait(ff_task_t *task, double timeout) {
  if (atomic_load_explicit(&task->done, memory_order_acquire)) return 0;
  /* The loop thread finishes tasks: waiting there would never end, and
   * neither would waiting in a fork, where no loop thread runs. */
  if (ff__pool_is_foreign(task->pool)) return FF_EFOREIGN;
  if (ff__pool_loop_thread_is_current(task->pool)) return -EDEADLK;
  return ff__pool_wait(task->pool, &task->done, 0, &task->sleepers,
                       ff__deadline(timeout));
}

int ff_task_done(const ff_task_t *task) {
  return atomic_load_explicit(&task->done, memory_order_acquire) ? 1 : 0;
}

int ff_task_cancel(ff_task_t *task) {
  if (ff__pool_is_foreign(task->pool)) return FF_EFOREIGN;
  uint32_t expected = FF__TASK_QUEUED;
  if (atomic_compare_exchange_strong(&task->stage, &expected,
                                     FF__TASK_CANCELLING)) {
    ff__pool_wake(task->pool);
    return 0;
  }
  return expected == FF__TASK_CANCELLING ? 0 : -EBUSY;
}

int ff_task_kill(ff_task_t *task) {
  if (ff_task_cancel(task) == 0) return 0;
  if (ff__pool_is_foreign(task->pool)) return FF_EFOREIGN;
  if (atomic_load(&task->stage) == FF__TASK_FINISHED) return -EALREADY;
  int none = 0;
  atomic_compare_exchange_strong(&task->kill_status, &none, FF_ECANCELED);
  ff__pool_kill_task(task->pool, task);
  return 0;
}

/* The outcome is readable once settled, so a completion callback (which
 * runs before waiters are woken) can read it. */
static int task_settled(const ff_task_t *task) {
  return atomic_load_explicit(&((ff_task_t *)task)->stage,
                              memory_order_acquire) == FF__TASK_FINISHED;
}

int ff_task_status(const ff_task_t *task) {
  if (!task_settled(task)) return FF_EPENDING;
  return task->status;
}

const void *ff_task_result(const ff_task_t *task, size_t *length) {
  if (!task_settled(task)) {
    if (length) *length = 0;
    return NULL;
  }
  if (length) *length = task->result_length;
  return task->result;
}

const ff_exit_t *ff_task_exit(const ff_task_t *task) { return &task->exit; }

uint64_t ff_task_run_ns(const ff_task_t *task) {
  return task_settled(task) ? task->run_ns : 0;
}

void *ff_task_user_data(const ff_task_t *task) { return task->user_data; }

uint64_t ff_task_id(const ff_task_t *task) { return task->id; }

void ff_task_retain(ff_task_t *task) { atomic_fetch_add(&task->refs, 1); }

void ff_task_release(ff_task_t *task) {
  if (task == NULL) return;
  if (atomic_fetch_sub(&task->refs, 1) != 1) return;
  task_drop_message(task); /* a task the pool refused was never settled */
  /* A result nobody decoded gives its buffers back to the worker. */
  if (task->status == 0) {
    ff__arena_discard_message(task->result, task->result_length);
    ff__share_unpin_message(task->result, task->result_length);
  }
  free(task->result_block);
  ff_context_release(task->context);
  if (task->queue) queue_release(task->queue);
  ff__pool_release(task->pool);
  free(task);
}

/* ---- completion queues ---------------------------------------------------- */

int ff_queue_create(ff_queue_t **queue) {
  ff_queue_t *q = calloc(1, sizeof(*q));
  if (q == NULL) return -ENOMEM;
  pthread_mutex_init(&q->lock, NULL);
  ff__list_init(&q->tasks);
  atomic_init(&q->sequence, 0);
  atomic_init(&q->refs, 1);
  atomic_init(&q->pool, NULL);
  *queue = q;
  return 0;
}

void ff_queue_destroy(ff_queue_t *q) {
  if (q == NULL) return;
  ff__link_t drained;
  ff__list_init(&drained);
  pthread_mutex_lock(&q->lock);
  q->closed = true;
  ff__list_splice(&drained, &q->tasks);
  pthread_mutex_unlock(&q->lock);
  /* Released outside the lock: the last task may hold the last reference
   * to the queue itself. */
  ff__link_t *l;
  while ((l = ff__list_pop_front(&drained)) != NULL)
    ff_task_release(FF__CONTAINER_OF(l, ff_task_t, queue_link));
  queue_release(q);
}

void ff__queue_push(ff_queue_t *q, ff_task_t *task) {
  pthread_mutex_lock(&q->lock);
  if (q->closed) {
    pthread_mutex_unlock(&q->lock);
    return;
  }
  ff_task_retain(task);
  ff__list_push_back(&q->tasks, &task->queue_link);
  pthread_mutex_unlock(&q->lock);
  ff__futex_bump(&q->sequence, &q->sleepers);
}

int ff_queue_pop(ff_queue_t *q, double timeout, ff_task_t **task) {
  uint64_t deadline = ff__deadline(timeout);
  bool polled = false;
  for (;;) {
    uint32_t seen = atomic_load(&q->sequence);
    pthread_mutex_lock(&q->lock);
    ff__link_t *l = ff__list_pop_front(&q->tasks);
    pthread_mutex_unlock(&q->lock);
    if (l != NULL) {
      *task = FF__CONTAINER_OF(l, ff_task_t, queue_link);
      return 0;
    }
    ff_pool_t *pool = atomic_load(&q->pool);
    bool drive = pool && !ff__pool_is_foreign(pool) &&
                 !ff__pool_loop_thread_is_current(pool);
    if (drive && !polled) {
      /* Results may be waiting in the rings: collect them first. */
      ff__pool_poll(pool);
      polled = true;
      continue;
    }
    if (deadline != UINT64_MAX && ff__now_ns() >= deadline) return -ETIMEDOUT;
    int rc = drive ? ff__pool_wait(pool, &q->sequence, seen, &q->sleepers,
                                   deadline)
                   : ff__futex_sleep(&q->sequence, seen, &q->sleepers,
                                     deadline);
    if (rc == -ETIMEDOUT || rc == -EINTR) return rc;
  }
}
