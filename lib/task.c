/* Tasks, their contexts, completion queues, and the callback thread.
 *
 * Layering: task.c sits below the pool. It reaches the pool a task belongs
 * to only through the operations the pool gave with the task
 * (ff__task_host_t), never by name: the pool calls task.c, not the other
 * way round. Below it: arena.c, share.c and futex.c.
 *
 * A task is shared by the caller and the runtime, each holding a reference.
 * Its outcome is written by the loop thread before the task is published;
 * waiters sleep on a futex word that publication flips, so a caller that
 * waits costs no lock and no thread in between.
 *
 * A task submitted with FF_SUBMIT_NOTIFY has a completion callback (a
 * Pool's callback=, a Future's completion), which runs before the task's
 * waiters are woken. Callbacks never run on the loop thread, which serves
 * every pool's workers and their requests: one slow callback would stall
 * them all. They run on the callback thread, one per process, in the order
 * the tasks finished; or, for a task submitted FF_SUBMIT_CLAIMABLE (a
 * future) that a thread waits for, in that thread, at once (it "claims"
 * the callback), so that a caller waiting for its own result pays no hop
 * through another thread. */
#include "internal.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
  /* The pool of its first task (a reference), and what task.c may ask of
   * it (under lock): a pop polls its results. */
  ff_pool_t *pool;
  const ff__task_host_t *host;
};

static void queue_release(ff_queue_t *q) {
  uint32_t refs = atomic_fetch_sub(&q->refs, 1);
  assert(refs > 0);
  if (refs != 1) return;
  if (q->pool) q->host->release(q->pool);
  pthread_mutex_destroy(&q->lock);
  free(q);
}

static void callbacks_atfork_child(void);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void callbacks_register_atfork(void) {
  pthread_atfork(NULL, NULL, callbacks_atfork_child);
}

ff_task_t *ff__task_new(ff_pool_t *pool, const ff__task_host_t *host,
                        ff_context_t *context, const void *message,
                        size_t length, unsigned flags, ff_queue_t *queue,
                        void *user_data) {
  /* Before the first callback could be queued: a child never inherits the
   * callback thread's queue or its locks held. */
  pthread_once(&atfork_once, callbacks_register_atfork);
  ff_task_t *task = calloc(1, sizeof(*task));
  if (task == NULL) return NULL;
  task->message = malloc(length ? length : 1);
  if (task->message == NULL) {
    free(task);
    return NULL;
  }
  if (length) memcpy(task->message, message, length);
  task->message_length = length;
  task->output_slot = -1;
  ff__share_pin_message(task->message, length);
  atomic_init(&task->refs, 2); /* the caller's and the runtime's */
  atomic_init(&task->stage, FF__TASK_QUEUED);
  atomic_init(&task->done, 0);
  task->flags = flags;
  task->queue = queue;
  if (queue) {
    atomic_fetch_add(&queue->refs, 1);
    pthread_mutex_lock(&queue->lock);
    if (queue->pool == NULL) {
      host->retain(pool);
      queue->pool = pool;
      queue->host = host;
    }
    pthread_mutex_unlock(&queue->lock);
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
  task->host = host;
  host->retain(pool);
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
  /* A task is settled once, before it is published. */
  assert(atomic_load(&task->stage) != FF__TASK_FINISHED);
  assert(atomic_load(&task->done) == FF__TASK_RUNNING);
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
  assert(atomic_load(&task->stage) == FF__TASK_FINISHED);
  ff__futex_publish(&task->done, FF__TASK_PUBLISHED, &task->sleepers);
  if (task->queue) ff__queue_push(task->queue, task);
  ff_task_release(task);
}

/* ---- the callback thread ------------------------------------------------- */

static pthread_mutex_t callbacks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t callbacks_ready = PTHREAD_COND_INITIALIZER;
static ff__link_t callbacks = {&callbacks, &callbacks};
static bool callbacks_started;
/* Held by the callback thread while it runs a batch, and by a fork
 * (ff__task_callbacks_hold): the embedder's code the callbacks run may
 * hold its locks, which a child must not inherit held. */
static pthread_mutex_t callbacks_running = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local bool on_callback_thread;
/* Tasks handed to the callback thread (under callbacks_lock), and those it
 * is done with (a futex word): ff__task_callbacks_flush waits for the
 * second to reach the first. */
static uint32_t callbacks_queued;
static _Atomic uint32_t callbacks_done;

/* Takes the task's callback for the calling thread: true once, for the
 * first thread that asks. */
static bool callback_claim(ff_task_t *task) {
  uint32_t none = 0;
  return atomic_compare_exchange_strong(&task->callback_claimed, &none, 1);
}

/* Runs the callback of tasks[0..count) (one pool's, claimed), then wakes
 * their waiters. */
static void callbacks_run(ff_task_t **tasks, size_t count) {
  const ff_pool_options_t *o = tasks[0]->host->options(tasks[0]->pool);
  o->on_complete(tasks, count, o->notify_arg);
  for (size_t i = 0; i < count; i++) ff__task_publish(tasks[i]);
}

/* A batch on the callback thread: not while a fork holds the callbacks. */
static void callbacks_run_held(ff_task_t **tasks, size_t count) {
  pthread_mutex_lock(&callbacks_running);
  callbacks_run(tasks, count);
  pthread_mutex_unlock(&callbacks_running);
}

static void *callbacks_main(void *arg) {
  (void)arg;
  on_callback_thread = true;
  for (;;) {
    ff__link_t taken;
    ff__list_init(&taken);
    pthread_mutex_lock(&callbacks_lock);
    while (ff__list_empty(&callbacks))
      pthread_cond_wait(&callbacks_ready, &callbacks_lock);
    ff__list_splice(&taken, &callbacks);
    pthread_mutex_unlock(&callbacks_lock);
    /* In order, one batch per run of tasks of the same pool. */
    ff_task_t *batch[64];
    size_t count = 0;
    uint32_t ntaken = 0;
    ff__link_t *l;
    while ((l = ff__list_pop_front(&taken)) != NULL) {
      ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
      ntaken++;
      if (count > 0 &&
          (batch[0]->pool != task->pool ||
           count == sizeof(batch) / sizeof(batch[0]))) {
        callbacks_run_held(batch, count);
        for (size_t i = 0; i < count; i++) ff_task_release(batch[i]);
        count = 0;
      }
      if (callback_claim(task))
        batch[count++] = task;
      else
        ff_task_release(task); /* a waiter ran it */
    }
    if (count > 0) {
      callbacks_run_held(batch, count);
      for (size_t i = 0; i < count; i++) ff_task_release(batch[i]);
    }
    atomic_fetch_add(&callbacks_done, ntaken);
    ff__futex_wake_all(&callbacks_done);
  }
  return NULL;
}

/* Starts the callback thread (under callbacks_lock), with every signal
 * blocked: signals are the application's threads' to take. */
static int callbacks_start(void) {
  if (callbacks_started) return 0;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, callbacks_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) return -rc;
  callbacks_started = true;
  return 0;
}

void ff__task_defer_callbacks(ff__link_t *tasks) {
  if (ff__list_empty(tasks)) return;
  /* Settled, with a callback to run: waiters wake up to claim it. */
  uint32_t n = 0;
  ff__link_t *l = tasks->next;
  while (l != tasks) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    l = l->next;
    /* The queue's reference, taken before a waiter may run the callback
     * and let the task go. */
    ff_task_retain(task);
    ff__futex_publish(&task->done, FF__TASK_CALLBACK, &task->sleepers);
    /* A thread waits to claim it: it runs the callback itself, with no
     * hop through the callback thread (a wake-up, and on a busy machine a
     * wait for a CPU). A waiter that leaves first claims it on its way out
     * (ff_task_wait): one of the two sees the other. */
    if ((task->flags & FF_SUBMIT_CLAIMABLE) && atomic_load(&task->claimers)) {
      ff__list_remove(&task->link);
      ff_task_release(task);
      continue;
    }
    n++;
  }
  if (ff__list_empty(tasks)) return;
  pthread_mutex_lock(&callbacks_lock);
  int rc = callbacks_start();
  if (rc == 0) {
    callbacks_queued += n;
    ff__list_splice(&callbacks, tasks);
    pthread_cond_signal(&callbacks_ready);
  }
  pthread_mutex_unlock(&callbacks_lock);
  if (rc == 0) return;
  /* No thread for them: they run here rather than never. */
  ff__link_t *left;
  while ((left = ff__list_pop_front(tasks)) != NULL) {
    ff_task_t *task = FF__CONTAINER_OF(left, ff_task_t, link);
    if (callback_claim(task)) callbacks_run(&task, 1);
    ff_task_release(task);
  }
}

/* In a forked child (a pthread_atfork handler, set with the first task). */
static void callbacks_atfork_child(void) {
  /* The thread does not exist here; its queue held the parent's tasks. */
  pthread_mutex_init(&callbacks_lock, NULL);
  pthread_cond_init(&callbacks_ready, NULL);
  pthread_mutex_init(&callbacks_running, NULL);
  ff__list_init(&callbacks);
  callbacks_started = false;
  callbacks_queued = 0;
  atomic_store(&callbacks_done, 0);
}

int ff__task_callbacks_flush(uint64_t deadline_ns) {
  if (on_callback_thread) return 0; /* its own queue waits for it */
  pthread_mutex_lock(&callbacks_lock);
  uint32_t target = callbacks_queued;
  pthread_mutex_unlock(&callbacks_lock);
  for (;;) {
    uint32_t done = atomic_load(&callbacks_done);
    if ((int32_t)(done - target) >= 0) return 0;
    int rc = ff__futex_wait(&callbacks_done, done, deadline_ns);
    if (rc == -ETIMEDOUT || rc == -EINTR) return rc;
  }
}

int ff__task_callbacks_hold(uint64_t deadline_ns) {
  /* A callback that forks runs between batches, at a safe point. */
  if (on_callback_thread) return 0;
  for (;;) {
    int rc = pthread_mutex_trylock(&callbacks_running);
    if (rc == 0) return 1;
    if (rc != EBUSY) return -rc;
    if (ff__now_ns() >= deadline_ns) return -ETIMEDOUT;
    usleep(200);
  }
}

void ff__task_callbacks_unhold(int held) {
  if (held == 1) pthread_mutex_unlock(&callbacks_running);
}

int ff_task_wait(ff_task_t *task, double timeout) {
  if (atomic_load_explicit(&task->done, memory_order_acquire) ==
      FF__TASK_PUBLISHED)
    return 0;
  /* The loop thread finishes tasks: waiting there would never end, and
   * neither would waiting in a fork, where no loop thread runs. */
  if (task->host->is_foreign(task->pool)) return FF_EFOREIGN;
  if (task->host->on_loop_thread(task->pool)) return -EDEADLK;
  uint64_t deadline = ff__deadline(timeout);
  bool claimable = task->flags & FF_SUBMIT_CLAIMABLE;
  if (claimable) atomic_fetch_add(&task->claimers, 1);
  int rc;
  for (;;) {
    uint32_t done = atomic_load_explicit(&task->done, memory_order_acquire);
    if (done == FF__TASK_PUBLISHED) {
      rc = 0;
      break;
    }
    if (done == FF__TASK_CALLBACK) {
      /* Its callback waits to run: this thread runs it, if it may, unless
       * another thread took it first. */
      if (claimable && callback_claim(task)) {
        callbacks_run(&task, 1);
        rc = 0;
        break;
      }
      rc = ff__futex_sleep(&task->done, FF__TASK_CALLBACK, &task->sleepers,
                           deadline);
    } else {
      rc = task->host->wait(task->pool, &task->done, 0, &task->sleepers,
                            deadline);
    }
    if (rc == -ETIMEDOUT || rc == -EINTR) {
      if (atomic_load(&task->done) == FF__TASK_PUBLISHED) {
        rc = 0;
        break;
      }
      if (rc == -EINTR || ff__now_ns() >= deadline) break;
    }
  }
  if (claimable && atomic_fetch_sub(&task->claimers, 1) == 1 &&
      atomic_load(&task->done) == FF__TASK_CALLBACK && callback_claim(task)) {
    /* Its callback was left to the waiters, and this is the last one:
     * it runs here rather than never. */
    callbacks_run(&task, 1);
    rc = 0;
  }
  return rc;
}

int ff_task_done(const ff_task_t *task) {
  return atomic_load_explicit(&task->done, memory_order_acquire) ==
                 FF__TASK_PUBLISHED
             ? 1
             : 0;
}

int ff_task_cancel(ff_task_t *task) {
  if (task->host->is_foreign(task->pool)) return FF_EFOREIGN;
  uint32_t expected = FF__TASK_QUEUED;
  if (atomic_compare_exchange_strong(&task->stage, &expected,
                                     FF__TASK_CANCELLING)) {
    task->host->wake(task->pool);
    return 0;
  }
  return expected == FF__TASK_CANCELLING ? 0 : -EBUSY;
}

int ff_task_kill(ff_task_t *task) {
  if (ff_task_cancel(task) == 0) return 0;
  if (task->host->is_foreign(task->pool)) return FF_EFOREIGN;
  if (atomic_load(&task->stage) == FF__TASK_FINISHED) return -EALREADY;
  int none = 0;
  atomic_compare_exchange_strong(&task->kill_status, &none, FF_ECANCELED);
  task->host->kill(task->pool, task);
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

const void *ff_task_output(const ff_task_t *task, unsigned stream,
                           size_t *length) {
  if (!task_settled(task) || stream >= FF_OUTPUT_STREAMS ||
      task->output[stream].len == 0) {
    if (length) *length = 0;
    return NULL;
  }
  if (length) *length = task->output[stream].len;
  return task->output[stream].base;
}

int ff_task_output_slot(const ff_task_t *task) {
  return task_settled(task) ? task->output_slot : -1;
}

void ff_task_result_taken(ff_task_t *task) {
  if (task_settled(task)) task->result_taken = true;
}

void ff_task_result_consumed(ff_task_t *task, size_t offset) {
  if (!task_settled(task) || task->result == NULL) return;
  if (offset > task->result_length) offset = task->result_length;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)task->result + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)task->result + offset) & ~(page - 1);
  /* Whole pages of the result's own allocation only: whatever else shares
   * its first and last pages is left alone. */
  if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
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
  uint32_t refs = atomic_fetch_sub(&task->refs, 1);
  assert(refs > 0);
  if (refs != 1) return;
  task_drop_message(task); /* a task the pool refused was never settled */
  /* A result nobody decoded gives its buffers back to the worker; a
   * decoded one's go back as the decoder lets go of each. */
  if (task->status == 0) {
    if (!task->result_taken)
      ff__arena_discard_message(task->result, task->result_length);
    ff__share_unpin_message(task->result, task->result_length);
  }
  free(task->result_block);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) free(task->output[i].base);
  ff_context_release(task->context);
  if (task->queue) queue_release(task->queue);
  task->host->release(task->pool);
  free(task);
}

/* ---- contexts ---------------------------------------------------------------
 * A context is immutable once made, and shared by the tasks that run with
 * it (each holds a reference) and the pool's caller. */

int ff__context_new(const void *data, size_t length, ff_context_t **out) {
  static _Atomic uint64_t next_key = 1;
  ff_context_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return -ENOMEM;
  c->data = malloc(length ? length : 1);
  if (c->data == NULL) {
    free(c);
    return -ENOMEM;
  }
  if (length) memcpy(c->data, data, length);
  c->length = length;
  c->key = atomic_fetch_add(&next_key, 1);
  atomic_init(&c->refs, 1);
  *out = c;
  return 0;
}

void ff__context_retain(ff_context_t *c) { atomic_fetch_add(&c->refs, 1); }

void ff_context_release(ff_context_t *c) {
  if (c == NULL) return;
  uint32_t refs = atomic_fetch_sub(&c->refs, 1);
  assert(refs > 0);
  if (refs != 1) return;
  free(c->data);
  free(c);
}

/* ---- completion queues ---------------------------------------------------- */

int ff_queue_create(ff_queue_t **queue) {
  ff_queue_t *q = calloc(1, sizeof(*q));
  if (q == NULL) return -ENOMEM;
  pthread_mutex_init(&q->lock, NULL);
  ff__list_init(&q->tasks);
  atomic_init(&q->sequence, 0);
  atomic_init(&q->refs, 1);
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
    ff_pool_t *pool = q->pool;
    const ff__task_host_t *host = q->host;
    pthread_mutex_unlock(&q->lock);
    if (l != NULL) {
      *task = FF__CONTAINER_OF(l, ff_task_t, queue_link);
      return 0;
    }
    bool drive = pool && !host->is_foreign(pool) && !host->on_loop_thread(pool);
    if (drive && !polled) {
      /* Results may be waiting in the rings: collect them first. */
      host->poll(pool);
      polled = true;
      continue;
    }
    if (deadline != UINT64_MAX && ff__now_ns() >= deadline) return -ETIMEDOUT;
    int rc = drive ? host->wait(pool, &q->sequence, seen, &q->sleepers,
                                deadline)
                   : ff__futex_sleep(&q->sequence, seen, &q->sleepers,
                                     deadline);
    if (rc == -ETIMEDOUT || rc == -EINTR) return rc;
  }
}
