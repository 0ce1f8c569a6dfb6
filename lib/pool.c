/* The pool: task dispatch, result collection, and the lifecycle of the
 * workers and the zygote.
 *
 * Each worker has a shared-memory segment with two rings: tasks go in
 * through one and results come back through the other. The scheduling
 * state (the pending queue, each worker's tasks in flight, both ends of the
 * parent's rings) is under the pool's lock, and any thread may drive it:
 *
 * - a submitting thread puts its task straight into an idle worker's ring;
 * - a thread waiting for a task first spins for a short while, draining the
 *   result rings itself, so a quick task costs no wake-up of the parent;
 * - the loop thread drains whatever arrives while nobody spins: before it
 *   sleeps it tells every worker so, and a worker that pushes a result then
 *   rings the worker's doorbell, an eventfd the loop polls.
 *
 * The loop thread alone runs the lifecycle: spawning through the zygote,
 * exits (reported by the zygote with their wait status), replacement,
 * close and terminate. A task lost with its worker fails alone with
 * FF_EWORKERLOST and the worker is replaced.
 *
 * Tasks finished under the lock are collected in a list and published
 * (completion callbacks, then waiters woken) after the lock is released,
 * so that no callback into an embedding runtime ever runs under it. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Tasks in flight per worker. Tasks queued in a worker's ring save it a
 * round trip to the parent between tasks, but they cannot move to another
 * worker that falls idle: so a worker gets more than one only when the
 * backlog is deep enough (FF__PREFETCH_BACKLOG tasks per worker) that idle
 * workers have other work anyway, and then about FF__PREFETCH_NS of work
 * by the recent average run time, at least FF__WORKER_CREDIT tasks. */
#define FF__WORKER_CREDIT 2u
#define FF__MAX_CREDIT 256u
#define FF__PREFETCH_BACKLOG 2u
#define FF__PREFETCH_NS 400000u
/* How long a waiting thread polls the result rings itself before it
 * sleeps: a few round trips of a quick task. It polls only while the
 * recent tasks are shorter than FF__WAIT_SPIN_TASKS_NS: waiting for longer
 * ones, polling would only take a core from the workers. */
#define FF__WAIT_SPIN_NS 100000u
#define FF__WAIT_SPIN_TASKS_NS 50000u

enum pool_state {
  POOL_RUNNING,
  POOL_CLOSING,     /* no new tasks; queued ones still run */
  POOL_TERMINATING, /* everything is failed and killed; waiting for reaping */
  POOL_STOPPED,     /* the zygote has been reaped */
};

enum worker_state {
  WORKER_EMPTY,    /* no process */
  WORKER_STARTING, /* SPAWN sent; waiting for READY (and the zygote's pid) */
  WORKER_READY,    /* takes tasks */
  WORKER_RETIRING, /* takes no more tasks; will exit by itself */
};

typedef struct ff__worker_s ff__worker_t;

/* The loop's watch on a worker's doorbell. It lives in its own allocation
 * because libuv frees handles later than the worker slot is reused. */
typedef struct doorbell_s {
  uv_poll_t poll;
  int fd;
  ff__worker_t *worker;
} doorbell_t;

/* The loop's watch on a worker's lender socket (share.c), in its own
 * allocation for the same reason. */
typedef struct lender_s {
  uv_poll_t poll;
  int fd;
  uint64_t owner; /* the worker's receiver id */
} lender_t;

struct ff__worker_s {
  ff_pool_t *pool;
  unsigned slot;
  int state;
  /* Names this worker process (never reused) to the arena and the lender:
   * what was given to it, and what only it may give back. */
  uint64_t receiver;
  pid_t pid;
  int pidfd;
  ff__shm_t shm;
  ff__ring_t tasks;   /* this process produces */
  ff__ring_t results; /* this process consumes */
  ff__ring_reader_t reader;
  doorbell_t *doorbell;
  lender_t *lender;
  ff__link_t in_flight; /* sent (or being sent), in order */
  unsigned in_flight_count;
  unsigned tasks_sent;
  /* The task whose records did not all fit in the ring yet: the rest goes
   * when the worker makes room, before anything else. */
  ff_task_t *sending;
  size_t send_offset;
  bool send_define; /* the context's DEFINE goes first */
  bool wake;        /* records were written: wake the worker */
  uint64_t context_keys[FF__CONTEXT_SLOTS];
  unsigned context_next;
  bool exiting; /* its exit is being handled: dispatch skips it */
  bool stop_when_idle; /* it asked to retire: STOP once in_flight empties */
  /* A thread is copying fragments of this worker's results without the
   * pool's lock: nobody else reads its result ring, and its process is not
   * released, until it is done (reader_done). */
  bool reading;
  bool doomed;  /* to be killed as soon as its pidfd arrives */
  bool corrupt; /* killed for a corrupt message: its task fails so */
  /* Killed for a message past max_message_size: the bytes that had come,
   * which its task fails with. */
  uint64_t oversize;
  /* What ff_pool_stats reports of this slot, across its processes. */
  uint64_t tasks_done;
  uint64_t busy_ns;
  uint64_t bytes_sent;
  uint64_t bytes_received;
  uint64_t first_spawn_ns; /* 0 until the slot's first process */
  unsigned restarts;
  /* How the slot's last processes ended, for ff_pool_worker_exit. */
  ff_exit_t exits[FF_EXITS_KEPT];
  unsigned exits_next;
};

/* Tasks finished under the lock, published after it. */
typedef struct done_list_s {
  ff__link_t tasks;
  /* A worker exit to report through on_worker_exit. */
  ff_exit_t exits[4];
  bool expected[4];
  unsigned exit_count;
} done_list_t;

struct ff_pool_s {
  _Atomic uint32_t refs;
  pid_t owner; /* the process that created the pool: a fork of it (a
                  worker, say) holds a copy it must not drive */
  ff__runtime_t *runtime;
  ff_pool_options_t options;

  pid_t zygote_pid;
  int zygote_pidfd;
  int ctl_fd;
  uv_poll_t ctl_poll;
  uv_poll_t zygote_poll;
  uv_async_t wakeup;
  uv_prepare_t arm;
  /* Watches the running tasks that have a timeout, while there are any. */
  uv_timer_t timeouts;
  _Atomic bool timeouts_wanted; /* a task with a timeout went to a worker */
  unsigned handles_open;
  bool ctl_open;
  bool ctl_close_requested; /* under lock */

  _Atomic int error;
  _Atomic uint32_t cancels;
  _Atomic bool closed_by_user;
  _Atomic uint32_t stopped;      /* futex word: the zygote is reaped */
  _Atomic uint32_t workers_gone; /* futex word for join: every worker is */

  pthread_mutex_t lock; /* everything below */
  pthread_cond_t reader_done; /* a worker's reading went back to false */
  bool accepting;
  uint64_t next_id;
  int state;
  bool destroyed;
  unsigned spinners; /* threads polling the result rings themselves */
  bool drain_again;  /* a drain left messages for the next round */
  /* Of recent tasks, for the prefetch depth and whether waiting threads
   * poll; written under the lock, read without it. */
  _Atomic uint64_t run_average_ns;
  ff__link_t pending;
  size_t pending_count;
  ff__worker_t *workers;
  unsigned live_workers;
  /* With start_on_demand: workers another thread asked the loop to start. */
  unsigned spawns_wanted;
  /* ff_pool_stop_workers was called: the tasks of a worker that exits are
   * not run again. */
  bool stopping;
  /* Workers in a row that died before they were ready, by SIGKILL and
   * otherwise (under the lock). */
  uint64_t tasks_done;   /* settled with a result */
  uint64_t tasks_failed; /* settled otherwise */
  unsigned startup_failures;
  unsigned startup_kills;
  char *error_detail;
  size_t error_detail_length;
  ff_exit_t error_exit; /* the worker exit that failed the pool, if one did */
};

static void pool_dispatch(ff_pool_t *pool, done_list_t *done);
static void pool_fail(ff_pool_t *pool, int code, const void *detail,
                      size_t length, const ff_exit_t *exit, done_list_t *done);
static void pool_terminate_locked(ff_pool_t *pool, done_list_t *done);
static void worker_spawn(ff__worker_t *w, done_list_t *done);
static void pool_drain(ff_pool_t *pool, done_list_t *done);

/* A forked child inherits a copy of its parent's pools, whose loop thread
 * does not exist in the child: every call on them fails. */
static int pool_foreign(const ff_pool_t *pool) {
  return pool->owner != getpid();
}

void ff_pool_options_init(ff_pool_options_t *options) {
  memset(options, 0, sizeof(*options));
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  options->workers = cpus > 0 ? (unsigned)cpus : 1u;
  options->kill_grace = 1.0;
  options->zygote.ctl = -1;
  options->zygote.pidfd = -1;
}

void ff__pool_retain(ff_pool_t *pool) { atomic_fetch_add(&pool->refs, 1); }

void ff__pool_release(ff_pool_t *pool) {
  if (atomic_fetch_sub(&pool->refs, 1) != 1) return;
  pthread_cond_destroy(&pool->reader_done);
  pthread_mutex_destroy(&pool->lock);
  free(pool->workers);
  free(pool->error_detail);
  free((void *)pool->options.lendable);
  free(pool);
}

int ff__pool_loop_thread_is_current(ff_pool_t *pool) {
  return ff__runtime_on_loop_thread(pool->runtime);
}

int ff__pool_is_foreign(ff_pool_t *pool) { return pool_foreign(pool); }

void ff__pool_wake(ff_pool_t *pool) {
  if (pool_foreign(pool)) return;
  atomic_fetch_add(&pool->cancels, 1);
  uv_async_send(&pool->wakeup);
}

/* ---- contexts --------------------------------------------------------------- */

int ff_context_create(ff_pool_t *pool, const void *data, size_t length,
                      ff_context_t **out) {
  if (pool == NULL || out == NULL || (data == NULL && length > 0))
    return -EINVAL;
  if (pool->options.define_context == NULL) return -EINVAL;
  return ff__context_new(data, length, out);
}

/* ---- completing tasks ------------------------------------------------------ */

static void done_init(done_list_t *done) {
  ff__list_init(&done->tasks);
  done->exit_count = 0;
}

/* Settles a task under the lock; it is published once the lock is gone. */
static void pool_settle_at(done_list_t *done, ff_task_t *task, int status,
                           char *block, size_t offset, size_t length,
                           const ff_exit_t *exit) {
  if (status == 0)
    task->pool->tasks_done++;
  else
    task->pool->tasks_failed++;
  ff__task_settle(task, status, block, offset, length, exit);
  ff__list_push_back(&done->tasks, &task->link);
}

static void pool_settle(done_list_t *done, ff_task_t *task, int status,
                        char *result, size_t length, const ff_exit_t *exit) {
  pool_settle_at(done, task, status, result, 0, length, exit);
}

const ff_pool_options_t *ff__pool_options(ff_pool_t *pool) {
  return &pool->options;
}

/* Wakes the waiters of the tasks without a completion callback, and hands
 * the others to the callback thread (task.c): a callback never runs here,
 * where the loop thread serves every pool. Called without the lock. */
static void pool_publish(ff_pool_t *pool, done_list_t *done) {
  for (unsigned i = 0; i < done->exit_count; i++)
    if (pool->options.on_worker_exit)
      pool->options.on_worker_exit(pool, &done->exits[i], done->expected[i],
                                   pool->options.notify_arg);
  done->exit_count = 0;
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

static void pool_unlock_publish(ff_pool_t *pool, done_list_t *done) {
  /* A drain that stopped at its bounds goes on in the loop's next round. */
  bool again = pool->drain_again;
  pool->drain_again = false;
  pthread_mutex_unlock(&pool->lock);
  if (again) uv_async_send(&pool->wakeup);
  pool_publish(pool, done);
}

static char *copy_bytes(const void *data, size_t length) {
  char *copy = malloc(length ? length : 1);
  if (copy && length) memcpy(copy, data, length);
  return copy;
}

static void pool_fail_task(ff_pool_t *pool, ff_task_t *task, int code,
                           const ff_exit_t *exit, done_list_t *done) {
  char *detail = NULL;
  size_t length = 0;
  /* Tasks failed by the pool's own error carry its detail (the worker's
   * description of why its initializer failed, say). */
  if (code != 0 && code == atomic_load(&pool->error) &&
      pool->error_detail_length > 0) {
    detail = copy_bytes(pool->error_detail, pool->error_detail_length);
    length = detail ? pool->error_detail_length : 0;
  }
  if (exit == NULL && code != 0 && code == atomic_load(&pool->error) &&
      pool->error_exit.pid != 0)
    exit = &pool->error_exit;
  pool_settle(done, task, code, detail, length, exit);
}

/* ---- stopping ------------------------------------------------------------- */

static void pool_on_handle_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  if (--pool->handles_open == 0) ff__pool_release(pool); /* the loop's ref */
}

static void pool_on_ctl_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__fd_untrack(pool->ctl_fd);
  close(pool->ctl_fd);
  pool->ctl_fd = -1;
  pool_on_handle_closed(handle);
}

/* Closing the control socket tells the zygote to kill what is left of the
 * pool and exit. Handles belong to the loop thread: another thread (one
 * that found a failed READY while it polled, say) asks the loop to do it. */
static void pool_close_ctl(ff_pool_t *pool) {
  if (!ff__runtime_on_loop_thread(pool->runtime)) {
    pool->ctl_close_requested = true;
    uv_async_send(&pool->wakeup);
    return;
  }
  if (!pool->ctl_open) return;
  pool->ctl_open = false;
  uv_close((uv_handle_t *)&pool->ctl_poll, pool_on_ctl_closed);
}

static void pool_on_zygote_poll_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__fd_untrack(pool->zygote_pidfd);
  close(pool->zygote_pidfd);
  pool->zygote_pidfd = -1;
  pool_on_handle_closed(handle);
}

/* Frees the libuv handles once the pool is stopped and its owner is gone. */
static void pool_teardown(ff_pool_t *pool) {
  if (pool->state != POOL_STOPPED || !pool->destroyed) return;
  pool_close_ctl(pool);
  uv_close((uv_handle_t *)&pool->zygote_poll, pool_on_zygote_poll_closed);
  uv_close((uv_handle_t *)&pool->wakeup, pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->arm, pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->timeouts, pool_on_handle_closed);
}

static void doorbell_on_closed(uv_handle_t *handle) {
  doorbell_t *d = handle->data;
  ff__fd_untrack(d->fd);
  close(d->fd);
  free(d);
}

static void lender_on_closed(uv_handle_t *handle) {
  lender_t *l = handle->data;
  ff__share_drop_owner(l->owner);
  ff__fd_untrack(l->fd);
  close(l->fd);
  free(l);
}

static void lender_on_request(uv_poll_t *handle, int status, int events) {
  FF__UNUSED(events);
  lender_t *l = handle->data;
  /* A worker that is gone, or that sends nonsense, is not served again. */
  if (status < 0 || ff__share_serve(l->fd, l->owner) < 0)
    uv_poll_stop(handle);
}

/* Watches the parent's end of a new worker's lender socket. */
static int lender_start(ff__worker_t *w, int fd) {
  lender_t *l = calloc(1, sizeof(*l));
  if (l == NULL) return -ENOMEM;
  ff_pool_t *pool = w->pool;
  int rc = ff__share_add_owner(w->receiver, pool->options.lendable,
                               pool->options.lendable_count);
  if (rc == 0) rc = uv_poll_init(ff__runtime_loop(pool->runtime), &l->poll, fd);
  if (rc < 0) {
    ff__share_drop_owner(w->receiver);
    free(l);
    return rc;
  }
  l->fd = fd;
  l->owner = w->receiver;
  l->poll.data = l;
  ff__fd_track(fd);
  uv_poll_start(&l->poll, UV_READABLE, lender_on_request);
  w->lender = l;
  return 0;
}

static void worker_release_process(ff__worker_t *w) {
  /* Another thread may be copying its fragments, without the lock, from
   * the ring about to be unmapped. */
  while (w->reading) pthread_cond_wait(&w->pool->reader_done, &w->pool->lock);
  if (w->doorbell) {
    uv_close((uv_handle_t *)&w->doorbell->poll, doorbell_on_closed);
    w->doorbell = NULL;
  }
  if (w->lender) {
    uv_close((uv_handle_t *)&w->lender->poll, lender_on_closed);
    w->lender = NULL;
  }
  if (w->shm.base) {
    /* Whatever the worker left, nobody reads or writes it any more. */
    ff__ring_break(&w->tasks);
    ff__ring_break(&w->results);
    ff__shm_close(&w->shm);
  }
  ff__ring_reader_free(&w->reader);
  /* What was given to it and not given back is free again. */
  if (w->receiver) ff__arena_drop_receiver(w->receiver);
  w->receiver = 0;
  if (w->pidfd >= 0) {
    ff__fd_untrack(w->pidfd);
    close(w->pidfd);
    w->pidfd = -1;
  }
  if (w->state != WORKER_EMPTY) w->pool->live_workers--;
  w->state = WORKER_EMPTY;
  w->pid = 0;
  w->sending = NULL;
}

static void worker_fail_in_flight(ff__worker_t *w, int code,
                                  const ff_exit_t *exit, done_list_t *done) {
  ff__link_t *l;
  w->sending = NULL;
  while ((l = ff__list_pop_front(&w->in_flight)) != NULL) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    pool_fail_task(w->pool, task, code, exit, done);
  }
  w->in_flight_count = 0;
}

static void pool_on_zygote_exit(uv_poll_t *handle, int status, int events) {
  FF__UNUSED(status);
  FF__UNUSED(events);
  ff_pool_t *pool = handle->data;
  int wstatus = 0;
  pid_t got;
  do {
    got = waitpid(pool->zygote_pid, &wstatus, WNOHANG);
  } while (got < 0 && errno == EINTR);
  if (got == 0) return; /* spurious: not exited yet */
  uv_poll_stop(&pool->zygote_poll);

  ff_exit_t how;
  if (got > 0)
    ff__exit_from_status(&how, pool->zygote_pid, wstatus);
  else
    how = (ff_exit_t){pool->zygote_pid, -1, 0}; /* reaped by someone else */
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool_drain(pool, &done);
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    bool had_work = !ff__list_empty(&pool->pending) || pool->live_workers > 0;
    if (pool->state == POOL_RUNNING || had_work)
      pool_fail(pool, FF_EZYGOTELOST, NULL, 0, &how, &done);
  }
  /* Its workers died with it (their death signal follows the zygote). */
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    worker_fail_in_flight(w, FF_EWORKERLOST, &how, &done);
    worker_release_process(w);
  }
  pool_close_ctl(pool);
  pool->spawns_wanted = 0;
  pool->state = POOL_STOPPED;
  pool_unlock_publish(pool, &done);
  atomic_store(&pool->stopped, 1);
  ff__futex_wake_all(&pool->stopped);
  atomic_store(&pool->workers_gone, 1);
  ff__futex_wake_all(&pool->workers_gone);
  pool_teardown(pool);
}

/* Once a closing pool has run its last task and its workers are gone, the
 * zygote is told to exit. */
static void pool_maybe_finish(ff_pool_t *pool) {
  if (pool->state != POOL_CLOSING) return;
  if (!ff__list_empty(&pool->pending) || pool->live_workers > 0) return;
  /* Every worker has been reaped (the zygote reported each exit): join
   * may return while the zygote, which holds nothing of the user's, exits
   * and is reaped in the background. */
  atomic_store(&pool->workers_gone, 1);
  ff__futex_wake_all(&pool->workers_gone);
  pool_close_ctl(pool);
}

static void pool_fail(ff_pool_t *pool, int code, const void *detail,
                      size_t length, const ff_exit_t *exit,
                      done_list_t *done) {
  int expected = 0;
  if (atomic_compare_exchange_strong(&pool->error, &expected, code)) {
    if (exit != NULL) pool->error_exit = *exit;
    if (length > 0) {
      pool->error_detail = copy_bytes(detail, length);
      pool->error_detail_length = pool->error_detail ? length : 0;
    }
  }
  pool->accepting = false;
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, exit,
                   done);
  pool->pending_count = 0;
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING)
    pool_terminate_locked(pool, done);
}

/* ---- workers ---------------------------------------------------------------- */

static void worker_kill(ff__worker_t *w) {
  /* The worker's READY and first results can arrive before the zygote's
   * SPAWNED (two channels, no order between them): without a pidfd yet,
   * the kill waits for it. */
  if (w->pidfd >= 0)
    ff__pidfd_send_signal(w->pidfd, SIGKILL);
  else
    w->doomed = true;
}

/* Tells the worker to exit (it has nothing left to run). */
static void worker_send_stop(ff__worker_t *w) {
  size_t offset = 0;
  if (ff__ring_write(&w->tasks, FF__RING_STOP, 0, 0, NULL, 0, &offset) != 1)
    worker_kill(w);
  w->wake = true;
  w->stop_when_idle = false;
}

/* A worker runs its tasks in order: the one at the head of its in-flight
 * list, if it was killed (ff_task_kill), takes its worker with it. */
static void worker_kill_if_head_killed(ff__worker_t *w) {
  if (ff__list_empty(&w->in_flight)) return;
  ff_task_t *head = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
  if (atomic_load(&head->kill_status) != 0) worker_kill(w);
}

void ff__pool_kill_task(ff_pool_t *pool, ff_task_t *task) {
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state == WORKER_EMPTY) continue;
    for (ff__link_t *l = w->in_flight.next; l != &w->in_flight; l = l->next) {
      if (l == &task->link) {
        /* Behind others, it waits for its turn: killing the worker now
         * would lose the task it runs. */
        worker_kill_if_head_killed(w);
        pthread_mutex_unlock(&pool->lock);
        return;
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
}

/* The longest run a worker's report is believed: the figure comes from
 * the worker, and a garbage one must not overflow the averages. */
#define FF__RUN_NS_MAX (UINT64_C(1) << 50)

/* Settles the task at the head of the worker's in-flight list with the
 * result in msg: the joined buffer itself when the message came in
 * fragments (no copy), else a copy of the record. */
static void worker_settle_result(ff__worker_t *w, ff_task_t *task,
                                 const ff__ring_msg_t *msg,
                                 done_list_t *done) {
  ff_pool_t *pool = w->pool;
  uint64_t run_ns;
  memcpy(&run_ns, msg->data, sizeof(run_ns));
  if (run_ns > FF__RUN_NS_MAX) run_ns = FF__RUN_NS_MAX;
  size_t length = msg->length - FF__RESULT_PREFIX;
  ff__list_remove(&task->link);
  w->in_flight_count--;
  task->run_ns = run_ns;
  w->tasks_done++;
  w->busy_ns += run_ns;
  w->bytes_received += length;
  /* A moving average over about the last eight tasks. */
  int64_t average = (int64_t)atomic_load_explicit(&pool->run_average_ns,
                                                  memory_order_relaxed);
  average += ((int64_t)run_ns - average) / 8;
  atomic_store_explicit(&pool->run_average_ns,
                        average > 0 ? (uint64_t)average : 1,
                        memory_order_relaxed);
  if (msg->flags & FF__RING_OVERSIZE) {
    /* The worker found its own result too large to send: it sent the
     * size instead. */
    uint64_t size = 0;
    if (length >= sizeof(size)) memcpy(&size, msg->data + FF__RESULT_PREFIX, sizeof(size));
    uint64_t detail[3] = {size, 1, pool->options.max_message_size};
    pool_settle(done, task, FF_EMSGSIZE,
                copy_bytes(detail, sizeof(detail)), sizeof(detail), NULL);
    return;
  }
  size_t offset = FF__RESULT_PREFIX;
  char *block = ff__ring_reader_take(&w->reader, msg);
  if (block == NULL) {
    block = copy_bytes(msg->data + FF__RESULT_PREFIX, length);
    offset = 0;
  }
  if (block == NULL) {
    pool_settle(done, task, -ENOMEM, NULL, 0, NULL);
    return;
  }
  int status = (msg->flags & FF__RING_FAILED) ? FF_ETASKFAILED : 0;
  pool_settle_at(done, task, status, block, offset, length, NULL);
}

/* Takes one message off the worker's result ring. */
static void worker_on_message(ff__worker_t *w, const ff__ring_msg_t *msg,
                              done_list_t *done) {
  ff_pool_t *pool = w->pool;
  if (msg->type == FF__RING_READY && w->state == WORKER_STARTING) {
    if (msg->flags & FF__RING_FAILED) {
      ff_exit_t how = {w->pid, -1, 0};
      pool_fail(pool, FF_EINITFAILED, msg->data, msg->length, &how, done);
      return;
    }
    w->state = WORKER_READY;
    pool->startup_failures = 0;
    pool->startup_kills = 0;
    return;
  }
  if (msg->type == FF__RING_RESULT && !ff__list_empty(&w->in_flight) &&
      msg->length >= FF__RESULT_PREFIX) {
    ff_task_t *task = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
    if (task->id == msg->id && task != w->sending) {
      worker_settle_result(w, task, msg, done);
      if (!ff__list_empty(&w->in_flight))
        FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link)->started_ns =
            ff__now_ns();
      worker_kill_if_head_killed(w);
      if (w->stop_when_idle && ff__list_empty(&w->in_flight))
        worker_send_stop(w);
      return;
    }
  }
  if (msg->type == FF__RING_RETIRE && w->state == WORKER_READY) {
    /* Over its memory limit: no more tasks, and STOP once it is idle. */
    w->state = WORKER_RETIRING;
    w->stop_when_idle = true;
    if (ff__list_empty(&w->in_flight)) worker_send_stop(w);
    return;
  }
  if (msg->type == FF__RING_FORGET && msg->length % sizeof(uint64_t) == 0) {
    for (size_t i = 0; i < msg->length / sizeof(uint64_t); i++) {
      uint64_t id;
      memcpy(&id, msg->data + i * sizeof(id), sizeof(id));
      ff__share_forget_owned(id, w->receiver);
    }
    return;
  }
  if (msg->type == FF__RING_RELEASE &&
      msg->length % sizeof(ff__arena_report_t) == 0) {
    ff__arena_reported(w->receiver, msg->data, msg->length);
    return;
  }
  /* Anything else breaks the protocol: the worker cannot be trusted. It is
   * killed, and its exit fails its tasks. */
  worker_kill(w);
}

/* What one drain takes from one worker at most, so that a worker that
 * streams results cannot keep the thread that drains (the loop thread,
 * which serves every pool) or the pool's lock to itself: the rest waits
 * for the next round, after the other workers and pools had theirs. */
#define FF__DRAIN_MESSAGES 256u
#define FF__DRAIN_BYTES ((size_t)4 << 20)
/* A reassembly buffer larger than this is freed once its message is
 * taken: a big result's memory is not kept for the next one. */
#define FF__READER_KEEP ((size_t)1 << 20)

/* Copies the fragments of a long message into the worker's reader, up to
 * *budget bytes, without the pool's lock: what takes time in a long
 * message is the copy, and the lock is every caller's and the loop's (a
 * stats() call, a submit, the other workers' results would wait for it).
 * Called and returning with the lock held. */
static int worker_read_fragments(ff__worker_t *w, ff__ring_msg_t *msg,
                                 size_t *budget) {
  ff_pool_t *pool = w->pool;
  w->reading = true;
  pthread_mutex_unlock(&pool->lock);
  int rc = ff__ring_read(&w->results, &w->reader, msg, budget);
  pthread_mutex_lock(&pool->lock);
  w->reading = false;
  pthread_cond_broadcast(&pool->reader_done);
  return rc;
}

/* Reads the whole messages the worker has pushed, within the drain's
 * bounds (all of them with unbounded, for a worker that exited: what it
 * left is all there will be). Returns true if some were left. */
static bool worker_drain_some(ff__worker_t *w, done_list_t *done,
                              bool unbounded) {
  if (unbounded)
    while (w->reading) pthread_cond_wait(&w->pool->reader_done, &w->pool->lock);
  if (w->shm.base == NULL || w->state == WORKER_EMPTY || w->corrupt ||
      w->oversize)
    return false;
  /* Another thread is copying this worker's fragments: it goes on. */
  if (w->reading) return true;
  bool freed = false, more = false;
  size_t budget = FF__DRAIN_BYTES;
  for (unsigned count = 0;; count++) {
    if (!unbounded && count == FF__DRAIN_MESSAGES) {
      more = ff__ring_readable(&w->results);
      break;
    }
    ff__ring_msg_t msg;
    size_t none = 0;
    /* Whole records are taken under the lock; fragments are copied
     * without it (unless the worker is gone: then there is no hurry). */
    int rc = ff__ring_read(&w->results, &w->reader, &msg,
                           unbounded ? NULL : &none);
    if (rc == FF__RING_FRAGMENT) {
      rc = budget > 0 ? worker_read_fragments(w, &msg, &budget)
                      : FF__RING_FRAGMENT;
      if (w->shm.base == NULL) return false;
    }
    if (rc == 0 || rc == FF__RING_FRAGMENT) {
      more = !unbounded && (rc == FF__RING_FRAGMENT ||
                            ff__ring_readable(&w->results));
      break;
    }
    if (rc == FF_EMSGSIZE) {
      /* A message past the limit: the worker is stopped, and its task
       * fails with how much had come. */
      w->oversize = msg.length > 0 ? msg.length : 1;
      ff__ring_reader_free(&w->reader);
      worker_kill(w);
      break;
    }
    if (rc < 0) {
      /* Nothing more of this ring can be trusted. */
      w->corrupt = true;
      worker_kill(w);
      break;
    }
    worker_on_message(w, &msg, done);
    ff__ring_release(&w->results, &msg);
    ff__ring_reader_trim(&w->reader, FF__READER_KEEP);
    freed = true;
    if (w->shm.base == NULL) return false; /* the pool failed and let it go */
  }
  if (freed) ff__ring_wake_producer(&w->results);
  return more;
}

static void worker_drain(ff__worker_t *w, done_list_t *done) {
  if (worker_drain_some(w, done, false)) w->pool->drain_again = true;
}

static void pool_drain(ff_pool_t *pool, done_list_t *done) {
  for (unsigned i = 0; i < pool->options.workers; i++)
    worker_drain(&pool->workers[i], done);
}

/* Writes the worker's current task (its context's DEFINE first, when the
 * worker lacks the context) into the task ring, as far as it fits. */
static int worker_write(ff__worker_t *w) {
  ff_task_t *task = w->sending;
  int rc;
  if (w->send_define) {
    ff_context_t *c = task->context;
    rc = ff__ring_write(&w->tasks, FF__RING_DEFINE, task->ring_flags, c->key,
                        c->data, c->length, &w->send_offset);
    w->wake = true;
    if (rc <= 0) return rc;
    w->send_define = false;
    w->send_offset = 0;
  }
  rc = ff__ring_write(&w->tasks, FF__RING_TASK, task->ring_flags, task->id,
                      task->message, task->message_length, &w->send_offset);
  w->wake = true;
  if (rc <= 0) return rc;
  w->sending = NULL;
  return 1;
}

/* Goes on with a message that did not fit: when the ring is still full,
 * asks the worker to ring the doorbell once it makes room. */
static void worker_flush(ff__worker_t *w) {
  while (w->sending) {
    int rc = worker_write(w);
    if (rc < 0) {
      if (rc == FF_EPROTOCOL) w->corrupt = true;
      worker_kill(w);
      return;
    }
    if (rc == 0) {
      size_t left = w->send_define ? w->sending->context->length
                                   : w->sending->message_length;
      left -= w->send_offset;
      if (!ff__ring_arm_producer(&w->tasks, left)) return;
    }
  }
}

/* Starts sending task to the worker. */
static void worker_send_task(ff__worker_t *w, ff_task_t *task) {
  task->ring_flags = 0;
  w->send_define = false;
  ff_context_t *c = task->context;
  if (c) {
    unsigned slot = FF__CONTEXT_SLOTS;
    for (unsigned i = 0; i < FF__CONTEXT_SLOTS; i++)
      if (w->context_keys[i] == c->key) slot = i;
    if (slot == FF__CONTEXT_SLOTS) {
      slot = w->context_next++ % FF__CONTEXT_SLOTS;
      w->context_keys[slot] = c->key;
      w->send_define = true;
    }
    task->ring_flags =
        (uint16_t)(FF__RING_CONTEXT | (slot << FF__RING_SLOT_SHIFT));
  }
  w->sending = task;
  w->send_offset = 0;
  worker_flush(w);
}

/* Writes what this process let go of the worker's results (RELEASE
 * records) into its task ring, between tasks: the worker reads them there
 * and reuses the memory. What does not fit waits for the next round. */
static void worker_write_reports(ff__worker_t *w) {
  if (w->shm.base == NULL || w->sending || w->state == WORKER_EMPTY) return;
  ff__arena_report_t reports[64];
  size_t n;
  while ((n = ff__arena_take_reports_for(w->receiver, reports, 64)) > 0) {
    size_t offset = 0;
    int rc = ff__ring_write(&w->tasks, FF__RING_RELEASE, 0, 0, reports,
                            n * sizeof(reports[0]), &offset);
    if (rc != 1) {
      ff__arena_put_back_reports(w->receiver, reports, n);
      return;
    }
    w->wake = true;
  }
}

static void worker_wake(ff__worker_t *w) {
  if (!w->wake) return;
  w->wake = false;
  if (w->shm.base) ff__ring_wake_consumer(&w->tasks);
}

static void doorbell_on_ring(uv_poll_t *handle, int status, int events) {
  FF__UNUSED(status);
  FF__UNUSED(events);
  doorbell_t *d = handle->data;
  uint64_t count;
  ssize_t n = read(d->fd, &count, sizeof(count));
  FF__UNUSED(n);
  ff__worker_t *w = d->worker;
  ff_pool_t *pool = w->pool;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool_drain(pool, &done);
  if (w->doorbell == d && w->sending) worker_flush(w);
  pool_dispatch(pool, &done);
  pool_unlock_publish(pool, &done);
}

static void worker_spawn(ff__worker_t *w, done_list_t *done) {
  ff_pool_t *pool = w->pool;
  static _Atomic uint64_t next_receiver = 2; /* 0 and 1 mean none */
  if (w->first_spawn_ns == 0)
    w->first_spawn_ns = ff__now_ns();
  else
    w->restarts++;
  w->receiver = atomic_fetch_add(&next_receiver, 1);
  int rc = ff__shm_create(&w->shm, "forkfarm-worker", FF__WORKER_SEGMENT_SIZE);
  if (rc < 0) {
    pool_fail(pool, FF_ESPAWN(-rc), NULL, 0, NULL, done);
    return;
  }
  /* Other forks of this process (other pools' zygotes, the user's) have no
   * business with this worker's rings. */
  madvise(w->shm.base, w->shm.size, MADV_DONTFORK);
  doorbell_t *d = calloc(1, sizeof(*d));
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int lender[2] = {-1, -1};
  if (d == NULL || fd < 0 ||
      socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, lender) < 0 ||
      ff__worker_rings(w->shm.base, &w->tasks, &w->results, 1) < 0) {
    rc = d == NULL ? -ENOMEM : fd < 0 || lender[0] < 0 ? -errno : -EINVAL;
    free(d);
    if (fd >= 0) close(fd);
    if (lender[0] >= 0) close(lender[0]);
    if (lender[1] >= 0) close(lender[1]);
    ff__shm_close(&w->shm);
    pool_fail(pool, FF_ESPAWN(-rc), NULL, 0, NULL, done);
    return;
  }
  ff__ctl_msg_t msg = {FF__CTL_SPAWN, w->slot, 0, 0};
  int fds[3] = {w->shm.fd, fd, lender[1]};
  rc = ff__sock_send(pool->ctl_fd, &msg, sizeof(msg), fds, 3);
  /* The mapping is all this process needs of the segment. */
  close(w->shm.fd);
  w->shm.fd = -1;
  close(lender[1]);
  /* The loop thread serves the lender socket; it must never block on it. */
  if (rc == 0 && fcntl(lender[0], F_SETFL, O_NONBLOCK) < 0) rc = -errno;
  if (rc == 0) rc = lender_start(w, lender[0]);
  if (rc < 0 && w->lender == NULL) close(lender[0]);
  if (rc == 0) {
    d->fd = fd;
    d->worker = w;
    ff__fd_track(fd);
    rc = uv_poll_init(ff__runtime_loop(pool->runtime), &d->poll, fd);
    if (rc == 0) {
      d->poll.data = d;
      uv_poll_start(&d->poll, UV_READABLE, doorbell_on_ring);
    } else {
      ff__fd_untrack(fd);
    }
  }
  if (rc < 0) {
    close(fd);
    free(d);
    if (w->lender) {
      uv_close((uv_handle_t *)&w->lender->poll, lender_on_closed);
      w->lender = NULL;
    }
    ff__shm_close(&w->shm);
    pool_fail(pool, rc > -4096 ? FF_ESPAWN(-rc) : rc, NULL, 0, NULL, done);
    return;
  }
  w->doorbell = d;
  w->tasks.producer_fd = -1;
  w->results.consumer_fd = -1;
  memset(&w->reader, 0, sizeof(w->reader));
  w->reader.limit = (size_t)pool->options.max_message_size + FF__RESULT_PREFIX;
  memset(w->context_keys, 0, sizeof(w->context_keys));
  w->context_next = 0;
  w->sending = NULL;
  w->state = WORKER_STARTING;
  w->doomed = false;
  w->corrupt = false;
  w->oversize = 0;
  w->stop_when_idle = false;
  w->pid = 0;
  w->pidfd = -1;
  w->tasks_sent = 0;
  w->in_flight_count = 0;
  pool->live_workers++;
  /* The loop sleeps until the worker says it is ready. */
  ff__ring_arm_consumer(&w->results);
}

static void worker_exited(ff__worker_t *w, int wstatus, done_list_t *done) {
  ff_pool_t *pool = w->pool;
  /* What the worker pushed before it exited (results, or how its start
   * went) is still in its ring. */
  w->exiting = true;
  worker_drain_some(w, done, true);
  bool expected = w->state == WORKER_RETIRING;
  bool was_ready = w->state == WORKER_READY || w->state == WORKER_RETIRING;
  w->exiting = false;
  ff_exit_t how;
  ff__exit_from_status(&how, w->pid, wstatus);
  w->exits[w->exits_next++ % FF_EXITS_KEPT] = how;
  w->sending = NULL;
  if (!ff__list_empty(&w->in_flight)) {
    expected = false;
    /* A worker runs its tasks in order: the first one left is the one it
     * died running. Those behind it never started, so they go back to the
     * front of the queue rather than fail with it. */
    ff_task_t *lost =
        FF__CONTAINER_OF(ff__list_pop_front(&w->in_flight), ff_task_t, link);
    w->in_flight_count--;
    while (!ff__list_empty(&w->in_flight)) {
      ff_task_t *task =
          FF__CONTAINER_OF(w->in_flight.prev, ff_task_t, link);
      ff__list_remove(&task->link);
      int task_killed = atomic_load(&task->kill_status);
      if (task_killed || pool->stopping) {
        /* Killed while it waited its turn, or its pool's workers are being
         * stopped: it never runs. */
        pool_settle(done, task, task_killed ? task_killed : FF_ECANCELED, NULL,
                    0, NULL);
        continue;
      }
      if (!ff__arena_unassign_message(task->message, task->message_length,
                                      w->receiver)) {
        /* The worker let its bytes go before it died: they may be
         * another message's by now, so the task is not sent again. */
        pool_settle(done, task, FF_EWORKERLOST, NULL, 0, &how);
        continue;
      }
      atomic_store(&task->stage, FF__TASK_QUEUED);
      ff__list_push_front(&pool->pending, &task->link);
      pool->pending_count++;
    }
    w->in_flight_count = 0;
    int killed = atomic_load(&lost->kill_status);
    if (!killed && !w->corrupt && lost->retries > 0 && !pool->stopping &&
        (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) &&
        ff__arena_unassign_message(lost->message, lost->message_length,
                                   w->receiver)) {
      /* Retried: it goes first, to the next worker free. */
      lost->retries--;
      atomic_store(&lost->stage, FF__TASK_QUEUED);
      ff__list_push_front(&pool->pending, &lost->link);
      pool->pending_count++;
    } else if (w->oversize && !killed) {
      uint64_t detail[3] = {w->oversize, 0, pool->options.max_message_size};
      pool_settle(done, lost, FF_EMSGSIZE, copy_bytes(detail, sizeof(detail)),
                  sizeof(detail), &how);
    } else {
      pool_settle(done, lost,
                  killed      ? killed
                  : w->corrupt ? FF_EPROTOCOL
                               : FF_EWORKERLOST,
                  NULL, 0, &how);
    }
  }
  worker_release_process(w);
  if (done->exit_count < sizeof(done->exits) / sizeof(done->exits[0])) {
    done->exits[done->exit_count] = how;
    done->expected[done->exit_count] = expected;
    done->exit_count++;
  }
  if (!was_ready && atomic_load(&pool->error) == 0 &&
      (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING)) {
    /* Workers that keep dying before they can run anything (their
     * initializer crashes or exits) would make respawning loop. A SIGKILL
     * is most likely from outside (a user, the OOM killer) and counts for
     * less; a ready worker clears the count. */
    if (how.term_signal == SIGKILL)
      pool->startup_kills++;
    else
      pool->startup_failures++;
    if (pool->startup_failures >= FF__STARTUP_FAILURES ||
        pool->startup_kills >= FF__STARTUP_KILLS) {
      pool_fail(pool, FF_EINITFAILED, NULL, 0, &how, done);
      return;
    }
  }
  /* Started on demand, a worker is replaced only when tasks wait for one,
   * which pool_dispatch sees to. */
  bool needed = !pool->options.start_on_demand &&
                (pool->state == POOL_RUNNING ||
                 (pool->state == POOL_CLOSING && !ff__list_empty(&pool->pending)));
  if (needed && atomic_load(&pool->error) == 0) worker_spawn(w, done);
  pool_dispatch(pool, done);
  pool_maybe_finish(pool);
}

static ff__worker_t *pool_worker_by_pid(ff_pool_t *pool, pid_t pid) {
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state != WORKER_EMPTY && w->pid == pid) return w;
  }
  return NULL;
}

static void pool_on_ctl(uv_poll_t *handle, int status, int events) {
  FF__UNUSED(events);
  ff_pool_t *pool = handle->data;
  if (status < 0) {
    uv_poll_stop(handle);
    return;
  }
  for (;;) {
    ff__ctl_msg_t msg;
    int fds[FF__SOCK_MAX_FDS];
    unsigned nfds;
    int rc = ff__sock_recv(pool->ctl_fd, &msg, sizeof(msg), fds, &nfds, 0);
    if (rc == -EAGAIN) return;
    if (rc <= 0) {
      /* The zygote is gone; its pidfd reports how. */
      uv_poll_stop(handle);
      return;
    }
    done_list_t done;
    done_init(&done);
    pthread_mutex_lock(&pool->lock);
    if (msg.type == FF__CTL_SPAWNED && msg.slot < pool->options.workers &&
        pool->workers[msg.slot].state != WORKER_EMPTY &&
        pool->workers[msg.slot].pid == 0) {
      ff__worker_t *w = &pool->workers[msg.slot];
      if (msg.status < 0 || nfds != 1) {
        ff__sock_close_fds(fds, &nfds);
        if (msg.pid > 0) kill(msg.pid, SIGKILL); /* reported as it exits */
        worker_release_process(w);
        /* The zygote's fork failed (a process limit, say): the pool cannot
         * run, and says why, with the errno. */
        int err = msg.status < 0 && msg.status > -4096 ? -msg.status : EIO;
        pool_fail(pool, FF_ESPAWN(err), NULL, 0, NULL, &done);
      } else {
        ff__fd_track(fds[0]);
        w->pidfd = fds[0];
        w->pid = msg.pid;
        if (w->doomed) worker_kill(w);
      }
    } else {
      ff__sock_close_fds(fds, &nfds);
      if (msg.type == FF__CTL_EXITED) {
        ff__worker_t *w = pool_worker_by_pid(pool, msg.pid);
        if (w) worker_exited(w, msg.status, &done);
      }
    }
    pool_unlock_publish(pool, &done);
  }
}

/* ---- dispatch ------------------------------------------------------------------ */

static void pool_drop_cancelled(ff_pool_t *pool, done_list_t *done) {
  if (atomic_exchange(&pool->cancels, 0) == 0) return;
  for (ff__link_t *l = pool->pending.next; l != &pool->pending;) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    l = l->next;
    if (atomic_load(&task->stage) == FF__TASK_CANCELLING) {
      ff__list_remove(&task->link);
      pool->pending_count--;
      pool_settle(done, task, FF_ECANCELED, NULL, 0, NULL);
    }
  }
}

/* With start_on_demand: a worker for each queued task that no worker, ready
 * or starting, will take, up to the pool's size. Only the loop thread starts
 * workers; another thread counts them as wanted (ff_pool_worker_count sees
 * them at once) and wakes the loop. */
static void pool_want_workers(ff_pool_t *pool, done_list_t *done) {
  if (!pool->options.start_on_demand) return;
  if (atomic_load(&pool->error) != 0 || pool->pending_count == 0 ||
      (pool->state != POOL_RUNNING && pool->state != POOL_CLOSING)) {
    /* Nothing waits (a worker took what did): none is wanted any more. */
    pool->spawns_wanted = 0;
    return;
  }
  size_t coming = pool->spawns_wanted;
  unsigned empty = 0;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    const ff__worker_t *w = &pool->workers[i];
    if (w->state == WORKER_EMPTY)
      empty++;
    else if (w->state == WORKER_STARTING)
      coming++;
  }
  if (pool->pending_count > coming && empty > pool->spawns_wanted) {
    size_t more = pool->pending_count - coming;
    size_t room = empty - pool->spawns_wanted;
    pool->spawns_wanted += (unsigned)(more < room ? more : room);
  }
  if (pool->spawns_wanted == 0) return;
  if (!ff__runtime_on_loop_thread(pool->runtime)) {
    uv_async_send(&pool->wakeup);
    return;
  }
  for (unsigned i = 0; i < pool->options.workers && pool->spawns_wanted > 0 &&
                       atomic_load(&pool->error) == 0;
       i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state != WORKER_EMPTY || w->exiting) continue;
    pool->spawns_wanted--;
    worker_spawn(w, done);
  }
  /* A start that failed failed the pool: nothing more will start. */
  if (atomic_load(&pool->error) != 0) pool->spawns_wanted = 0;
}

static unsigned pool_credit(const ff_pool_t *pool) {
  if (pool->pending_count < FF__PREFETCH_BACKLOG * pool->options.workers)
    return 1;
  uint64_t average =
      atomic_load_explicit(&pool->run_average_ns, memory_order_relaxed);
  if (average == 0) return FF__WORKER_CREDIT;
  uint64_t credit = FF__PREFETCH_NS / average;
  if (credit < FF__WORKER_CREDIT) return FF__WORKER_CREDIT;
  return credit > FF__MAX_CREDIT ? FF__MAX_CREDIT : (unsigned)credit;
}

static ff__worker_t *pool_pick_worker(ff_pool_t *pool, unsigned credit) {
  ff__worker_t *best = NULL;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state != WORKER_READY || w->exiting || w->sending ||
        w->in_flight_count >= credit)
      continue;
    if (best == NULL || w->in_flight_count < best->in_flight_count) best = w;
    if (w->in_flight_count == 0) break;
  }
  return best;
}

static void pool_dispatch(ff_pool_t *pool, done_list_t *done) {
  if (pool->state != POOL_RUNNING && pool->state != POOL_CLOSING) return;
  pool_drop_cancelled(pool, done);
  ff__worker_t *w;
  unsigned credit = pool_credit(pool);
  while (!ff__list_empty(&pool->pending) &&
         (w = pool_pick_worker(pool, credit)) != NULL) {
    ff_task_t *task =
        FF__CONTAINER_OF(ff__list_pop_front(&pool->pending), ff_task_t, link);
    pool->pending_count--;
    uint32_t expected = FF__TASK_QUEUED;
    if (!atomic_compare_exchange_strong(&task->stage, &expected,
                                        FF__TASK_DISPATCHED)) {
      pool_settle(done, task, FF_ECANCELED, NULL, 0, NULL);
      continue;
    }
    task->started_ns = ff__list_empty(&w->in_flight) ? ff__now_ns() : 0;
    task->stopped_ns = 0;
    /* Given to this worker: it may open what the message names, and only
     * it may give its arena bytes back. */
    ff__arena_assign_message(task->message, task->message_length,
                             w->receiver);
    ff__share_allow_message(w->receiver, task->message, task->message_length);
    /* The loop thread starts watching it (uv handles are its alone). */
    if (task->timeout_ns && !atomic_exchange(&pool->timeouts_wanted, true))
      uv_async_send(&pool->wakeup);
    w->bytes_sent += task->message_length;
    ff__list_push_back(&w->in_flight, &task->link);
    w->in_flight_count++;
    w->tasks_sent++;
    unsigned max = pool->options.max_tasks_per_worker;
    if (max && w->tasks_sent >= max) w->state = WORKER_RETIRING;
    worker_send_task(w, task);
  }
  for (unsigned i = 0; i < pool->options.workers; i++) {
    w = &pool->workers[i];
    worker_write_reports(w);
    if (pool->state == POOL_CLOSING && ff__list_empty(&pool->pending) &&
        w->state == WORKER_READY && !w->exiting && w->in_flight_count == 0) {
      w->state = WORKER_RETIRING;
      worker_send_stop(w);
    }
    worker_wake(w);
  }
  pool_want_workers(pool, done);
}

#define TIMEOUT_TICK_MS 10

/* Stops the worker of each running task past its timeout: SIGTERM first,
 * SIGKILL kill_grace later. Runs every TIMEOUT_TICK_MS while any task with
 * a timeout is in flight. */
static void pool_on_timeouts(uv_timer_t *handle) {
  ff_pool_t *pool = handle->data;
  uint64_t grace = (uint64_t)(pool->options.kill_grace * 1e9);
  bool any = false;
  pthread_mutex_lock(&pool->lock);
  /* Read under the lock: a task a caller started in between would
   * otherwise look as if it started after now. */
  uint64_t now = ff__now_ns();
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state == WORKER_EMPTY) continue;
    for (ff__link_t *l = w->in_flight.next; l != &w->in_flight; l = l->next) {
      ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
      if (task->timeout_ns == 0) continue;
      any = true;
      if (l != w->in_flight.next || task->started_ns == 0 ||
          now < task->started_ns || now - task->started_ns < task->timeout_ns)
        continue;
      int none = 0;
      atomic_compare_exchange_strong(&task->kill_status, &none, -ETIMEDOUT);
      if (task->stopped_ns == 0) {
        task->stopped_ns = now;
        if (w->pidfd >= 0)
          ff__pidfd_send_signal(w->pidfd, SIGTERM);
        else
          w->doomed = true;
      } else if (now - task->stopped_ns >= grace) {
        worker_kill(w); /* it ignored SIGTERM */
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
  if (!any) uv_timer_stop(handle);
}

/* In the loop thread: starts the timeout watch if a task needs it. */
static void pool_watch_timeouts(ff_pool_t *pool) {
  if (atomic_exchange(&pool->timeouts_wanted, false) &&
      !uv_is_active((uv_handle_t *)&pool->timeouts) &&
      !uv_is_closing((uv_handle_t *)&pool->timeouts))
    uv_timer_start(&pool->timeouts, pool_on_timeouts, TIMEOUT_TICK_MS,
                   TIMEOUT_TICK_MS);
}

static void pool_on_wakeup(uv_async_t *handle) {
  ff_pool_t *pool = handle->data;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool_drain(pool, &done);
  pool_dispatch(pool, &done);
  if (atomic_load(&pool->cancels)) pool_drop_cancelled(pool, &done);
  if (pool->ctl_close_requested) {
    pool->ctl_close_requested = false;
    pool_close_ctl(pool);
  }
  pool_unlock_publish(pool, &done);
  pool_watch_timeouts(pool);
}

/* Before the loop sleeps: every worker must ring its doorbell when it
 * pushes something, unless a waiting thread polls the rings itself. */
static void pool_arm_all(ff_pool_t *pool, done_list_t *done) {
  bool readable = false;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->shm.base && w->state != WORKER_EMPTY && !w->reading &&
        ff__ring_arm_consumer(&w->results))
      readable = true;
  }
  if (readable) {
    pool_drain(pool, done);
    pool_dispatch(pool, done);
  }
}

static void pool_on_arm(uv_prepare_t *handle) {
  ff_pool_t *pool = handle->data;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  if (pool->spinners == 0) pool_arm_all(pool, &done);
  /* Reports that another thread queued (the kick that woke the loop). */
  for (unsigned i = 0; i < pool->options.workers; i++) {
    worker_write_reports(&pool->workers[i]);
    worker_wake(&pool->workers[i]);
  }
  pool_unlock_publish(pool, &done);
}

/* ---- waiting ----------------------------------------------------------------- */

void ff__pool_poll(ff_pool_t *pool) {
  if (pthread_mutex_trylock(&pool->lock) != 0) return;
  done_list_t done;
  done_init(&done);
  pool_drain(pool, &done);
  pool_dispatch(pool, &done);
  pool_unlock_publish(pool, &done);
}

int ff__pool_wait(ff_pool_t *pool, _Atomic uint32_t *word, uint32_t value,
                  _Atomic uint32_t *sleepers, uint64_t deadline_ns) {
  if (atomic_load_explicit(word, memory_order_acquire) != value) return 0;
  if (atomic_load_explicit(&pool->run_average_ns, memory_order_relaxed) >
      FF__WAIT_SPIN_TASKS_NS) {
    ff__pool_poll(pool);
    return ff__futex_sleep(word, value, sleepers, deadline_ns);
  }
  /* Poll the result rings for a little while: a quick task's result is
   * picked up here, with no wake-up of the loop thread or of this one. */
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->spinners++;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->shm.base) ff__ring_disarm_consumer(&w->results);
  }
  pool_drain(pool, &done);
  pool_dispatch(pool, &done);
  pool_unlock_publish(pool, &done);
  uint64_t until = ff__now_ns() + FF__WAIT_SPIN_NS;
  if (until > deadline_ns) until = deadline_ns;
  for (unsigned i = 1;
       atomic_load_explicit(word, memory_order_acquire) == value; i++) {
    ff__spin_pause(i);
    if (i % 8 == 0) {
      ff__pool_poll(pool);
      if (ff__now_ns() >= until) break;
    }
  }
  /* Hand the rings back to the loop thread: results pushed from now on
   * ring the doorbell, and those pushed before are drained here. */
  pthread_mutex_lock(&pool->lock);
  if (--pool->spinners == 0) pool_arm_all(pool, &done);
  pool_unlock_publish(pool, &done);
  return ff__futex_sleep(word, value, sleepers, deadline_ns);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static void pool_start_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  uv_loop_t *loop = ff__runtime_loop(pool->runtime);
  uv_handle_t *handles[] = {(uv_handle_t *)&pool->wakeup,
                            (uv_handle_t *)&pool->arm,
                            (uv_handle_t *)&pool->ctl_poll,
                            (uv_handle_t *)&pool->zygote_poll};
  uv_async_init(loop, &pool->wakeup, pool_on_wakeup);
  uv_prepare_init(loop, &pool->arm);
  uv_timer_init(loop, &pool->timeouts);
  pool->timeouts.data = pool;
  uv_poll_init(loop, &pool->ctl_poll, pool->ctl_fd);
  uv_poll_init(loop, &pool->zygote_poll, pool->zygote_pidfd);
  for (size_t i = 0; i < sizeof(handles) / sizeof(handles[0]); i++)
    handles[i]->data = pool;
  pool->handles_open = 5;
  pool->ctl_open = true;
  uv_prepare_start(&pool->arm, pool_on_arm);
  uv_poll_start(&pool->ctl_poll, UV_READABLE, pool_on_ctl);
  uv_poll_start(&pool->zygote_poll, UV_READABLE, pool_on_zygote_exit);
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers && !atomic_load(&pool->error) &&
                       !pool->options.start_on_demand;
       i++)
    worker_spawn(&pool->workers[i], &done);
  pool_unlock_publish(pool, &done);
}

int ff_pool_create(ff_pool_t **out, const ff_pool_options_t *options) {
  int rc = 0;
  if (out == NULL || options == NULL || options->work == NULL ||
      options->workers == 0 || !(options->task_timeout >= 0) ||
      !(options->kill_grace >= 0))
    rc = -EINVAL;
  ff__runtime_t *runtime = NULL;
  if (rc == 0) rc = ff__runtime_acquire(&runtime);
  ff_pool_t *pool = rc == 0 ? calloc(1, sizeof(*pool)) : NULL;
  if (rc == 0 && pool == NULL) rc = -ENOMEM;
  if (pool != NULL) {
    pool->workers = calloc(options->workers, sizeof(ff__worker_t));
    if (pool->workers == NULL) {
      free(pool);
      rc = -ENOMEM;
    }
  }
  if (rc < 0) {
    /* An adopted zygote's descriptors are the pool's, even now. */
    if (options != NULL && options->zygote.ctl >= 0) {
      close(options->zygote.ctl);
      if (options->zygote.pidfd >= 0) close(options->zygote.pidfd);
    }
    return rc;
  }
  atomic_init(&pool->refs, 2); /* the owner's and the loop's */
  pool->owner = getpid();
  pool->runtime = runtime;
  pool->options = *options;
  if (pool->options.max_message_size == 0)
    pool->options.max_message_size = ff__default_max_message();
  pool->options.lendable = NULL;
  if (options->lendable_count > 0) {
    uint64_t *copy = malloc(options->lendable_count * sizeof(*copy));
    if (copy == NULL) {
      free(pool->workers);
      free(pool);
      if (options->zygote.ctl >= 0) {
        close(options->zygote.ctl);
        if (options->zygote.pidfd >= 0) close(options->zygote.pidfd);
      }
      return -ENOMEM;
    }
    memcpy(copy, options->lendable, options->lendable_count * sizeof(*copy));
    pool->options.lendable = copy;
  }
  pool->zygote_pidfd = -1;
  pool->ctl_fd = -1;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->reader_done, NULL);
  ff__list_init(&pool->pending);
  pool->accepting = true;
  pool->next_id = 1;
  pool->state = POOL_RUNNING;
  for (unsigned i = 0; i < options->workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    w->pool = pool;
    w->slot = i;
    w->pidfd = -1;
    w->shm.fd = -1;
    ff__list_init(&w->in_flight);
  }
  if (options->zygote.ctl >= 0)
    rc = ff__zygote_adopt(&options->zygote, &pool->zygote_pid,
                          &pool->zygote_pidfd, &pool->ctl_fd);
  else
    rc = ff__zygote_fork(runtime, &pool->options, &pool->zygote_pid,
                         &pool->zygote_pidfd, &pool->ctl_fd);
  if (rc < 0) {
    pthread_cond_destroy(&pool->reader_done);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free((void *)pool->options.lendable);
    free(pool);
    return rc;
  }
  rc = ff__runtime_call(runtime, pool_start_in_loop, pool);
  if (rc < 0) {
    kill(pool->zygote_pid, SIGKILL);
    waitpid(pool->zygote_pid, NULL, 0);
    ff__fd_untrack(pool->ctl_fd);
    ff__fd_untrack(pool->zygote_pidfd);
    close(pool->ctl_fd);
    close(pool->zygote_pidfd);
    pthread_cond_destroy(&pool->reader_done);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free((void *)pool->options.lendable);
    free(pool);
    return rc;
  }
  *out = pool;
  return 0;
}

/* What a task may ask of its pool (task.c is below the pool). */
static const ff__task_host_t pool_task_host = {
    .retain = ff__pool_retain,
    .release = ff__pool_release,
    .is_foreign = ff__pool_is_foreign,
    .on_loop_thread = ff__pool_loop_thread_is_current,
    .options = ff__pool_options,
    .poll = ff__pool_poll,
    .wait = ff__pool_wait,
    .wake = ff__pool_wake,
    .kill = ff__pool_kill_task,
};

int ff_pool_submit(ff_pool_t *pool, ff_context_t *context,
                   const void *message, size_t length, unsigned flags,
                   ff_queue_t *queue, void *user_data, ff_task_t **task_out) {
  return ff_pool_submit_with(pool, context, message, length, flags, NULL,
                             queue, user_data, task_out);
}

int ff_pool_submit_with(ff_pool_t *pool, ff_context_t *context,
                        const void *message, size_t length, unsigned flags,
                        const ff_submit_options_t *options, ff_queue_t *queue,
                        void *user_data, ff_task_t **task_out) {
  if (pool == NULL || task_out == NULL || (message == NULL && length > 0) ||
      (flags & ~(FF_SUBMIT_NOTIFY | FF_SUBMIT_CLAIMABLE)) ||
      (options != NULL && options->timeout != options->timeout))
    return -EINVAL;
  double timeout = options == NULL || options->timeout < 0
                       ? pool->options.task_timeout
                       : options->timeout;
  unsigned retries = options == NULL || options->retries < 0
                         ? pool->options.task_retries
                         : (unsigned)options->retries;
  if (pool_foreign(pool)) return FF_EFOREIGN;
  ff_task_t *task = ff__task_new(pool, &pool_task_host, context, message,
                                 length, flags, queue, user_data);
  if (task == NULL) return -ENOMEM;
  task->timeout_ns = (uint64_t)(timeout * 1e9);
  task->retries = retries;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  if (!pool->accepting) {
    pthread_mutex_unlock(&pool->lock);
    int error = atomic_load(&pool->error);
    /* Neither reference leaves: drop both. */
    ff_task_release(task);
    ff_task_release(task);
    return error ? error : FF_ECLOSED;
  }
  task->id = pool->next_id++;
  ff__list_push_back(&pool->pending, &task->link);
  pool->pending_count++;
  pool_dispatch(pool, &done);
  pool_unlock_publish(pool, &done);
  *task_out = task;
  return 0;
}

/* Runs in the caller's thread: everything it touches is under the lock, and
 * the one libuv handle it may close goes through the loop. */
static void pool_begin_close(ff_pool_t *pool) {
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  if (pool->state == POOL_RUNNING) {
    pool->state = POOL_CLOSING;
    pool_drain(pool, &done);
    pool_dispatch(pool, &done);
    pool_maybe_finish(pool);
  }
  pool_unlock_publish(pool, &done);
}

int ff_pool_close(ff_pool_t *pool) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  pool_begin_close(pool);
  return 0;
}

static void pool_terminate_locked(ff_pool_t *pool, done_list_t *done) {
  pool->accepting = false;
  pool->spawns_wanted = 0;
  if (pool->state == POOL_TERMINATING || pool->state == POOL_STOPPED) return;
  pool->state = POOL_TERMINATING;
  int code = atomic_load(&pool->error);
  if (code == 0) code = FF_ECANCELED;
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, NULL,
                   done);
  pool->pending_count = 0;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    worker_fail_in_flight(w, code, NULL, done);
    worker_kill(w);
  }
  pool_close_ctl(pool);
}

static void pool_terminate_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool_terminate_locked(pool, &done);
  pool_unlock_publish(pool, &done);
}

typedef struct {
  ff_pool_t *pool;
  int signum;
} stop_request_t;

static void pool_stop_workers_in_loop(void *arg) {
  stop_request_t *request = arg;
  ff_pool_t *pool = request->pool;
  done_list_t done;
  done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    pool->state = POOL_CLOSING;
    pool->stopping = true;
    pool->spawns_wanted = 0;
    ff__link_t *l;
    while ((l = ff__list_pop_front(&pool->pending)) != NULL)
      pool_settle(&done, FF__CONTAINER_OF(l, ff_task_t, link), FF_ECANCELED,
                  NULL, 0, NULL);
    pool->pending_count = 0;
    for (unsigned i = 0; i < pool->options.workers; i++) {
      ff__worker_t *w = &pool->workers[i];
      if (w->state == WORKER_EMPTY) continue;
      if (w->pidfd >= 0)
        ff__pidfd_send_signal(w->pidfd, request->signum);
      else
        w->doomed = true; /* killed when its pidfd arrives */
    }
    pool_maybe_finish(pool);
  }
  pool_unlock_publish(pool, &done);
}

int ff_pool_stop_workers(ff_pool_t *pool, int signum) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  if (signum <= 0 || signum >= NSIG) return -EINVAL;
  atomic_store(&pool->closed_by_user, true);
  stop_request_t request = {pool, signum};
  return ff__runtime_call(pool->runtime, pool_stop_workers_in_loop, &request);
}

int ff_pool_terminate(ff_pool_t *pool) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  return ff__runtime_call(pool->runtime, pool_terminate_in_loop, pool);
}

static int pool_wait_word(ff_pool_t *pool, _Atomic uint32_t *word,
                          double timeout) {
  if (atomic_load(word)) return 0;
  if (ff__runtime_on_loop_thread(pool->runtime)) return -EDEADLK;
  uint64_t deadline = ff__deadline(timeout);
  while (!atomic_load(word)) {
    int rc = ff__futex_wait(word, 0, deadline);
    if ((rc == -ETIMEDOUT || rc == -EINTR) && !atomic_load(word)) return rc;
  }
  return 0;
}

int ff_pool_join(ff_pool_t *pool, double timeout) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  if (!atomic_load(&pool->closed_by_user) && atomic_load(&pool->error) == 0)
    return -EINVAL;
  return pool_wait_word(pool, &pool->workers_gone, timeout);
}

static void pool_destroy_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  pool->destroyed = true;
  pool_teardown(pool);
}

void ff_pool_destroy(ff_pool_t *pool) {
  if (pool == NULL) return;
  /* In a fork, the copy is left alone: its locks may be held by threads
   * that do not exist here, and the processes are the parent's. */
  if (pool_foreign(pool)) return;
  ff_pool_terminate(pool);
  if (!ff__runtime_on_loop_thread(pool->runtime)) {
    /* Reap the zygote before returning, so that no child outlives the pool
     * object (a signal interrupting the wait is no reason to leave early). */
    while (pool_wait_word(pool, &pool->stopped, -1) == -EINTR) {
    }
  }
  ff__runtime_call(pool->runtime, pool_destroy_in_loop, pool);
  ff__pool_release(pool);
}

static void pool_abandon_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  pool_terminate_in_loop(pool);
  pool->destroyed = true;
  pool_teardown(pool);
}

void ff_pool_abandon(ff_pool_t *pool) {
  if (pool == NULL) return;
  if (pool_foreign(pool)) return;
  atomic_store(&pool->closed_by_user, true);
  /* The loop's own reference keeps the pool alive until it is torn down;
   * if even the post fails, waiting is the only safe way left. */
  if (ff__runtime_post(pool->runtime, pool_abandon_in_loop, pool) < 0) {
    ff_pool_destroy(pool);
    return;
  }
  ff__pool_release(pool);
}

size_t ff_pool_worker_pids(ff_pool_t *pool, pid_t *pids, size_t capacity) {
  if (pool_foreign(pool)) return 0;
  size_t count = 0;
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->pid <= 0 || w->state == WORKER_EMPTY || w->exiting) continue;
    if (count < capacity) pids[count] = w->pid;
    count++;
  }
  pthread_mutex_unlock(&pool->lock);
  return count;
}

size_t ff_pool_worker_count(ff_pool_t *pool) {
  if (pool_foreign(pool)) return 0;
  pthread_mutex_lock(&pool->lock);
  size_t count = pool->spawns_wanted;
  for (unsigned i = 0; i < pool->options.workers; i++)
    if (pool->workers[i].state != WORKER_EMPTY) count++;
  pthread_mutex_unlock(&pool->lock);
  return count;
}

int ff_pool_worker_pidfd(ff_pool_t *pool, pid_t pid) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  if (pid <= 0) return -EINVAL;
  int rc = -ENOENT;
  pthread_mutex_lock(&pool->lock);
  ff__worker_t *w = pool_worker_by_pid(pool, pid);
  if (w != NULL && w->pidfd >= 0 && !w->exiting) {
    rc = fcntl(w->pidfd, F_DUPFD_CLOEXEC, 0);
    if (rc < 0) rc = -errno;
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

int ff_pool_worker_exit(ff_pool_t *pool, pid_t pid, ff_exit_t *how) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  if (pid <= 0 || how == NULL) return -EINVAL;
  int rc = -ENOENT;
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers && rc != 0; i++) {
    const ff__worker_t *w = &pool->workers[i];
    for (unsigned k = 0; k < FF_EXITS_KEPT; k++) {
      if (w->exits[k].pid == pid) {
        *how = w->exits[k];
        rc = 0;
        break;
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

int ff_pool_error(ff_pool_t *pool) { return atomic_load(&pool->error); }

size_t ff_pool_stats(ff_pool_t *pool, ff_pool_stats_t *stats,
                     ff_worker_stats_t *workers, size_t capacity) {
  pthread_mutex_lock(&pool->lock);
  uint64_t now = ff__now_ns(); /* after every start recorded so far */
  stats->queued = pool->pending_count;
  stats->in_flight = 0;
  stats->done = pool->tasks_done;
  stats->failed = pool->tasks_failed;
  size_t count = pool->options.workers;
  for (size_t i = 0; i < count; i++) {
    ff__worker_t *w = &pool->workers[i];
    stats->in_flight += w->in_flight_count;
    if (i >= capacity) continue;
    ff_worker_stats_t *out = &workers[i];
    memset(out, 0, sizeof(*out));
    out->pid = w->state == WORKER_EMPTY ? 0 : w->pid;
    out->tasks_done = w->tasks_done;
    out->busy_ns = w->busy_ns;
    uint64_t alive = w->first_spawn_ns ? now - w->first_spawn_ns : 0;
    out->idle_ns = alive > w->busy_ns ? alive - w->busy_ns : 0;
    out->bytes_sent = w->bytes_sent;
    out->bytes_received = w->bytes_received;
    out->restarts = w->restarts;
    if (!ff__list_empty(&w->in_flight)) {
      ff_task_t *head = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
      out->current_task = head->id;
      out->current_user_data = head->user_data;
      out->current_ns = head->started_ns ? now - head->started_ns : 0;
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return count;
}

void ff_pool_error_exit(ff_pool_t *pool, ff_exit_t *how) {
  pthread_mutex_lock(&pool->lock);
  *how = pool->error_exit;
  pthread_mutex_unlock(&pool->lock);
}

size_t ff_pool_error_detail(ff_pool_t *pool, void *buf, size_t capacity) {
  pthread_mutex_lock(&pool->lock);
  size_t length = pool->error_detail_length;
  if (buf && length)
    memcpy(buf, pool->error_detail, length < capacity ? length : capacity);
  pthread_mutex_unlock(&pool->lock);
  return length;
}
