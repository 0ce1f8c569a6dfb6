/* The pool object's core: its references, and the done list (tasks
 * settled under the pool's lock, published after it).
 *
 * Tasks finished under the lock are collected in a done list and
 * published (completion callbacks, then waiters woken) after the lock is
 * released, so that no callback into an embedding runtime ever runs under
 * it. The worker exits that happened under the lock are reported the same
 * way, through on_worker_exit.
 *
 * Layering: the lowest of the pool's files (see pool_internal.h); it calls
 * task.c and loop.c, and no other file of the pool. */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ff__pool_is_foreign(ff_pool_t *pool) { return pool->owner != getpid(); }

int ff__pool_loop_thread_is_current(ff_pool_t *pool) {
  return ff__runtime_on_loop_thread(pool->runtime);
}

void ff__pool_retain(ff_pool_t *pool) { atomic_fetch_add(&pool->refs, 1); }

void ff__pool_release(ff_pool_t *pool) {
  uint32_t refs = atomic_fetch_sub(&pool->refs, 1);
  assert(refs > 0);
  if (refs != 1) return;
  pthread_cond_destroy(&pool->reader_done);
  pthread_mutex_destroy(&pool->lock);
  free(pool->workers);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++)
    free(pool->stray_output[i].base);
  free(pool->error_detail);
  free((void *)pool->options.lendable);
  free(pool);
}

const ff_pool_options_t *ff__pool_options(ff_pool_t *pool) {
  return &pool->options;
}

void ff__pool_on_handle_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  assert(pool->handles_open > 0);
  if (--pool->handles_open == 0) ff__pool_release(pool); /* the loop's ref */
}

char *ff__copy_bytes(const void *data, size_t length) {
  char *copy = malloc(length ? length : 1);
  if (copy && length) memcpy(copy, data, length);
  return copy;
}

/* ---- the done list ------------------------------------------------------- */

void ff__done_init(ff__done_t *done) {
  memset(done, 0, sizeof(*done));
  ff__list_init(&done->tasks);
}

void ff__pool_settle_at(ff__done_t *done, ff_task_t *task, int status,
                        char *block, size_t offset, size_t length,
                        const ff_exit_t *exit) {
  if (status == 0)
    task->pool->tasks_done++;
  else
    task->pool->tasks_failed++;
  ff__task_settle(task, status, block, offset, length, exit);
  ff__list_push_back(&done->tasks, &task->link);
}

void ff__pool_settle(ff__done_t *done, ff_task_t *task, int status,
                     char *result, size_t length, const ff_exit_t *exit) {
  ff__pool_settle_at(done, task, status, result, 0, length, exit);
}

void ff__pool_fail_task(ff_pool_t *pool, ff_task_t *task, int code,
                        const ff_exit_t *exit, ff__done_t *done) {
  char *detail = NULL;
  size_t length = 0;
  /* Tasks failed by the pool's own error carry its detail (the worker's
   * description of why its initializer failed, say). */
  if (code != 0 && code == atomic_load(&pool->error) &&
      pool->error_detail_length > 0) {
    detail = ff__copy_bytes(pool->error_detail, pool->error_detail_length);
    length = detail ? pool->error_detail_length : 0;
  }
  if (exit == NULL && code != 0 && code == atomic_load(&pool->error) &&
      pool->error_exit.pid != 0)
    exit = &pool->error_exit;
  ff__pool_settle(done, task, code, detail, length, exit);
}

void ff__done_note_exit(ff__done_t *done, const ff_exit_t *how,
                        bool expected) {
  ff__done_exit_t *grown = ff__grow(done->exits, done->exit_count,
                                    &done->exit_capacity, sizeof(*grown));
  /* Without memory the report is lost; the exit itself is still handled
   * and kept for ff_pool_worker_exit. */
  if (grown == NULL) return;
  done->exits = grown;
  done->exits[done->exit_count++] = (ff__done_exit_t){*how, expected};
}

void ff__pool_set_error(ff_pool_t *pool, int code, const void *detail,
                        size_t length, const ff_exit_t *exit) {
  assert(code != 0);
  int expected = 0;
  if (atomic_compare_exchange_strong(&pool->error, &expected, code)) {
    if (exit != NULL) pool->error_exit = *exit;
    if (length > 0) {
      pool->error_detail = ff__copy_bytes(detail, length);
      pool->error_detail_length = pool->error_detail ? length : 0;
    }
  }
  pool->accepting = false;
}

/* Wakes the waiters of the tasks without a completion callback, and hands
 * the others to the callback thread (task.c): a callback never runs here,
 * where the loop thread serves every pool. Called without the lock. */
static void pool_publish(ff_pool_t *pool, ff__done_t *done) {
  for (size_t i = 0; i < done->exit_count; i++)
    if (pool->options.on_worker_exit)
      pool->options.on_worker_exit(pool, &done->exits[i].how,
                                   done->exits[i].expected,
                                   pool->options.notify_arg);
  free(done->exits);
  done->exits = NULL;
  done->exit_count = 0;
  done->exit_capacity = 0;
  ff__link_t deferred;
  ff__list_init(&deferred);
  ff__link_t *l;
  while ((l = ff__list_pop_front(&done->tasks)) != NULL) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    if ((task->flags & FF_SUBMIT_NOTIFY) && pool->options.on_complete)
      ff__list_push_back(&deferred, &task->link);
    else
      ff__task_publish(task);
  }
  ff__task_defer_callbacks(&deferred);
}

void ff__pool_unlock_publish(ff_pool_t *pool, ff__done_t *done) {
  /* A failure noted under the lock was acted on before it is released. */
  assert(done->fail_code == 0);
  /* A drain that stopped at its bounds goes on in the loop's next round. */
  bool again = pool->drain_again;
  pool->drain_again = false;
  bool finish = pool->finish_due;
  pool->finish_due = false;
  pthread_mutex_unlock(&pool->lock);
  if (again) uv_async_send(&pool->wakeup);
  pool_publish(pool, done);
  if (finish) {
    atomic_store(&pool->workers_gone, 1);
    ff__futex_wake_all(&pool->workers_gone);
  }
}
