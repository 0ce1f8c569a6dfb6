/* The pool: its API and its lifecycle (create, submit, close, terminate,
 * destroy, join, stats), and the pool's side of its zygote (the control
 * socket's messages, the zygote's exit).
 *
 * Each worker has a shared-memory segment with two rings: tasks go in
 * through one and results come back through the other (pool_slot.c);
 * scheduling, dispatch and timeouts are pool_dispatch.c's. The loop thread
 * alone runs the lifecycle: spawning through the zygote, exits (reported
 * by the zygote with their wait status), replacement, close and terminate.
 * A task lost with its worker fails alone with FF_EWORKERLOST and the
 * worker is replaced.
 *
 * Layering (see pool_internal.h): the top of the pool's files; it calls
 * pool_dispatch.c, pool_slot.c and pool_core.c, and none of them calls it. */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the zygote ---------------------------------------------------------- */

static void pool_on_zygote_poll_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__fd_untrack(pool->zygote_pidfd);
  close(pool->zygote_pidfd);
  pool->zygote_pidfd = -1;
  ff__pool_on_handle_closed(handle);
}

/* Frees the libuv handles once the pool is stopped and its owner is gone. */
static void pool_teardown(ff_pool_t *pool) {
  if (pool->state != POOL_STOPPED || pool->torn_down ||
      !(pool->destroyed || pool->idle_closed))
    return;
  pool->torn_down = true;
  ff__pool_close_ctl(pool);
  uv_close((uv_handle_t *)&pool->zygote_poll, pool_on_zygote_poll_closed);
  uv_close((uv_handle_t *)&pool->wakeup, ff__pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->arm, ff__pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->timeouts, ff__pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->idle, ff__pool_on_handle_closed);
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
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  ff__pool_drain(pool, &done);
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    bool had_work = !ff__list_empty(&pool->pending) || pool->live_workers > 0;
    if (pool->state == POOL_RUNNING || had_work)
      ff__pool_fail(pool, FF_EZYGOTELOST, NULL, 0, &how, &done);
  }
  /* Its workers died with it (their death signal follows the zygote). */
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    ff__slot_fail_in_flight(w, FF_EWORKERLOST, &how, &done);
    ff__slot_release_process(w);
  }
  ff__pool_close_ctl(pool);
  pool->spawns_wanted = 0;
  pool->state = POOL_STOPPED;
  ff__pool_unlock_publish(pool, &done);
  atomic_store(&pool->stopped, 1);
  ff__futex_wake_all(&pool->stopped);
  atomic_store(&pool->workers_gone, 1);
  ff__futex_wake_all(&pool->workers_gone);
  pool_teardown(pool);
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
    ff__done_t done;
    ff__done_init(&done);
    pthread_mutex_lock(&pool->lock);
    if (msg.type == FF__CTL_SPAWNED && msg.slot < pool->options.workers &&
        pool->workers[msg.slot].state != WORKER_EMPTY &&
        pool->workers[msg.slot].pid == 0) {
      ff__worker_t *w = &pool->workers[msg.slot];
      if (msg.status < 0 || nfds != 1) {
        ff__sock_close_fds(fds, &nfds);
        if (msg.pid > 0) kill(msg.pid, SIGKILL); /* reported as it exits */
        ff__slot_release_process(w);
        /* The zygote's fork failed (a process limit, say): the pool cannot
         * run, and says why, with the errno. */
        int err = msg.status < 0 && msg.status > -4096 ? -msg.status : EIO;
        ff__pool_fail(pool, FF_ESPAWN(err), NULL, 0, NULL, &done);
      } else {
        ff__fd_track(fds[0]);
        w->pidfd = fds[0];
        w->pid = msg.pid;
        if (w->doomed) ff__slot_kill(w);
      }
    } else {
      ff__sock_close_fds(fds, &nfds);
      if (msg.type == FF__CTL_EXITED) {
        ff__worker_t *w = pool_worker_by_pid(pool, msg.pid);
        if (w) ff__pool_worker_exited(pool, w, msg.status, &done);
      }
    }
    ff__pool_unlock_publish(pool, &done);
  }
}

/* ---- lifecycle ----------------------------------------------------------- */

void ff_pool_options_init(ff_pool_options_t *options) {
  memset(options, 0, sizeof(*options));
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  options->workers = cpus > 0 ? (unsigned)cpus : 1u;
  options->kill_grace = 1.0;
  options->zygote.ctl = -1;
  options->zygote.pidfd = -1;
}

int ff_context_create(ff_pool_t *pool, const void *data, size_t length,
                      ff_context_t **out) {
  if (pool == NULL || out == NULL || (data == NULL && length > 0))
    return -EINVAL;
  if (pool->options.define_context == NULL) return -EINVAL;
  return ff__context_new(data, length, out);
}

static void pool_start_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  uv_loop_t *loop = ff__runtime_loop(pool->runtime);
  uv_handle_t *handles[] = {(uv_handle_t *)&pool->wakeup,
                            (uv_handle_t *)&pool->arm,
                            (uv_handle_t *)&pool->ctl_poll,
                            (uv_handle_t *)&pool->zygote_poll};
  uv_async_init(loop, &pool->wakeup, ff__pool_on_wakeup);
  uv_prepare_init(loop, &pool->arm);
  uv_timer_init(loop, &pool->timeouts);
  pool->timeouts.data = pool;
  uv_timer_init(loop, &pool->idle);
  pool->idle.data = pool;
  uv_poll_init(loop, &pool->ctl_poll, pool->ctl_fd);
  uv_poll_init(loop, &pool->zygote_poll, pool->zygote_pidfd);
  for (size_t i = 0; i < sizeof(handles) / sizeof(handles[0]); i++)
    handles[i]->data = pool;
  pool->handles_open = 6;
  pool->ctl_open = true;
  uv_prepare_start(&pool->arm, ff__pool_on_arm);
  uv_poll_start(&pool->ctl_poll, UV_READABLE, pool_on_ctl);
  uv_poll_start(&pool->zygote_poll, UV_READABLE, pool_on_zygote_exit);
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers &&
                       !atomic_load(&pool->error) &&
                       !pool->options.start_on_demand;
       i++)
    ff__pool_spawn(pool, &pool->workers[i], &done);
  ff__pool_unlock_publish(pool, &done);
}

int ff_pool_create(ff_pool_t **out, const ff_pool_options_t *options) {
  ff__runtime_t *runtime = NULL;
  ff_pool_t *pool = NULL;
  bool zygote_taken = false; /* the adopted descriptors are no longer ours */
  bool zygote_started = false;
  bool locks = false;
  int rc;
  if (out == NULL || options == NULL || options->work == NULL ||
      options->workers == 0 || !(options->task_timeout >= 0) ||
      !(options->kill_grace >= 0)) {
    rc = -EINVAL;
    goto fail;
  }
  rc = ff__runtime_acquire(&runtime);
  if (rc < 0) goto fail;
  pool = calloc(1, sizeof(*pool));
  if (pool == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  pool->options = *options;
  pool->options.lendable = NULL;
  pool->zygote_pidfd = -1;
  pool->ctl_fd = -1;
  pool->workers = calloc(options->workers, sizeof(ff__worker_t));
  if (pool->workers == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  if (options->lendable_count > 0) {
    uint64_t *copy = malloc(options->lendable_count * sizeof(*copy));
    if (copy == NULL) {
      rc = -ENOMEM;
      goto fail;
    }
    memcpy(copy, options->lendable, options->lendable_count * sizeof(*copy));
    pool->options.lendable = copy;
  }
  atomic_init(&pool->refs, 2); /* the owner's and the loop's */
  pool->owner = getpid();
  pool->runtime = runtime;
  if (pool->options.max_message_size == 0)
    pool->options.max_message_size = ff__default_max_message();
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->reader_done, NULL);
  locks = true;
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
    ff__output_init(&w->output);
    ff__list_init(&w->in_flight);
  }
  zygote_taken = true; /* adopting closes them on error */
  if (options->zygote.ctl >= 0)
    rc = ff__zygote_adopt(&options->zygote, &pool->zygote_pid,
                          &pool->zygote_pidfd, &pool->ctl_fd);
  else
    rc = ff__zygote_fork(runtime, &pool->options, &pool->zygote_pid,
                         &pool->zygote_pidfd, &pool->ctl_fd);
  if (rc < 0) goto fail;
  zygote_started = true;
  rc = ff__runtime_call(runtime, pool_start_in_loop, pool);
  if (rc < 0) goto fail;
  *out = pool;
  return 0;

fail:
  if (zygote_started) {
    kill(pool->zygote_pid, SIGKILL);
    waitpid(pool->zygote_pid, NULL, 0);
    ff__fd_untrack(pool->ctl_fd);
    ff__fd_untrack(pool->zygote_pidfd);
    close(pool->ctl_fd);
    close(pool->zygote_pidfd);
  } else if (!zygote_taken && options != NULL && options->zygote.ctl >= 0) {
    /* An adopted zygote's descriptors are the pool's, even now. */
    close(options->zygote.ctl);
    if (options->zygote.pidfd >= 0) close(options->zygote.pidfd);
  }
  if (locks) {
    pthread_cond_destroy(&pool->reader_done);
    pthread_mutex_destroy(&pool->lock);
  }
  if (pool != NULL) {
    free(pool->workers);
    free((void *)pool->options.lendable);
    free(pool);
  }
  return rc;
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
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  ff_task_t *task = ff__task_new(pool, &pool_task_host, context, message,
                                 length, flags, queue, user_data);
  if (task == NULL) return -ENOMEM;
  task->timeout_ns = (uint64_t)(timeout * 1e9);
  task->retries = retries;
  ff__done_t done;
  ff__done_init(&done);
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
  ff__pool_dispatch(pool, &done);
  ff__pool_unlock_publish(pool, &done);
  *task_out = task;
  return 0;
}

/* Runs in the caller's thread: everything it touches is under the lock, and
 * the one libuv handle it may close goes through the loop. */
static void pool_begin_close(ff_pool_t *pool) {
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  if (pool->state == POOL_RUNNING) {
    pool->state = POOL_CLOSING;
    ff__pool_drain(pool, &done);
    ff__pool_dispatch(pool, &done);
    ff__pool_maybe_finish(pool);
  }
  ff__pool_unlock_publish(pool, &done);
}

int ff_pool_close(ff_pool_t *pool) {
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  pool_begin_close(pool);
  return 0;
}

static void pool_terminate_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  ff__pool_terminate_locked(pool, &done);
  ff__pool_unlock_publish(pool, &done);
}

/* ---- the idle limit ------------------------------------------------------ */

/* Everything that moves when the pool is used: tasks submitted and tasks
 * settled. */
static uint64_t pool_activity(const ff_pool_t *pool) {
  return pool->next_id + pool->tasks_done + pool->tasks_failed;
}

static bool pool_is_idle(const ff_pool_t *pool) {
  if (pool->pending_count > 0) return false;
  for (unsigned i = 0; i < pool->options.workers; i++)
    if (pool->workers[i].in_flight_count > 0) return false;
  return true;
}

/* Every idle_limit: a pool idle since the last tick, with nothing
 * submitted or finished in between, is closed or loses its idle workers. */
static void pool_on_idle(uv_timer_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  uint64_t activity = pool_activity(pool);
  if (!pool->accepting || pool->state != POOL_RUNNING) {
    uv_timer_stop(handle);
  } else if (activity != pool->idle_mark || !pool_is_idle(pool)) {
    pool->idle_mark = activity;
  } else if (pool->idle_action == FF_IDLE_CLOSE) {
    uv_timer_stop(handle);
    atomic_store(&pool->closed_by_user, true);
    pool->idle_closed = true;
    pool->accepting = false;
    pool->state = POOL_CLOSING;
    ff__pool_drain(pool, &done);
    ff__pool_dispatch(pool, &done);
    ff__pool_maybe_finish(pool);
  } else {
    for (unsigned i = 0; i < pool->options.workers; i++) {
      ff__worker_t *w = &pool->workers[i];
      if (w->state == WORKER_READY && !w->exiting && w->in_flight_count == 0) {
        w->state = WORKER_RETIRING;
        ff__slot_send_stop(w);
      }
    }
    ff__pool_dispatch(pool, &done); /* wakes them to read their STOP */
  }
  ff__pool_unlock_publish(pool, &done);
}

typedef struct {
  ff_pool_t *pool;
  double seconds;
  int action;
  int rc;
} idle_request_t;

static void pool_set_idle_in_loop(void *arg) {
  idle_request_t *request = arg;
  ff_pool_t *pool = request->pool;
  pthread_mutex_lock(&pool->lock);
  bool open = pool->accepting && pool->state == POOL_RUNNING;
  if (!open || request->seconds < 0) {
    if (!uv_is_closing((uv_handle_t *)&pool->idle)) uv_timer_stop(&pool->idle);
    request->rc = open ? 0 : FF_ECLOSED;
  } else {
    uint64_t ms = (uint64_t)(request->seconds * 1e3);
    if (ms == 0) ms = 1;
    pool->idle_action = request->action;
    pool->idle_mark = pool_activity(pool);
    uv_timer_start(&pool->idle, pool_on_idle, ms, ms);
    request->rc = 0;
  }
  pthread_mutex_unlock(&pool->lock);
}

int ff_pool_set_idle_limit(ff_pool_t *pool, double seconds, int action) {
  if (pool == NULL || seconds != seconds || seconds == 0 || seconds > 1e9 ||
      (action != FF_IDLE_CLOSE && action != FF_IDLE_STOP_WORKERS))
    return -EINVAL;
  if (action == FF_IDLE_STOP_WORKERS && !pool->options.start_on_demand)
    return -EINVAL;
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  idle_request_t request = {pool, seconds, action, 0};
  int rc = ff__runtime_call(pool->runtime, pool_set_idle_in_loop, &request);
  return rc < 0 ? rc : request.rc;
}

typedef struct {
  ff_pool_t *pool;
  int signum;
} stop_request_t;


static void pool_stop_workers_in_loop(void *arg) {
  stop_request_t *request = arg;
  ff_pool_t *pool = request->pool;
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    pool->state = POOL_CLOSING;
    pool->stopping = true;
    pool->spawns_wanted = 0;
    ff__link_t *l;
    while ((l = ff__list_pop_front(&pool->pending)) != NULL)
      ff__pool_settle(&done, FF__CONTAINER_OF(l, ff_task_t, link), FF_ECANCELED,
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
    ff__pool_maybe_finish(pool);
  }
  ff__pool_unlock_publish(pool, &done);
}

int ff_pool_stop_workers(ff_pool_t *pool, int signum) {
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  if (signum <= 0 || signum >= NSIG) return -EINVAL;
  atomic_store(&pool->closed_by_user, true);
  stop_request_t request = {pool, signum};
  return ff__runtime_call(pool->runtime, pool_stop_workers_in_loop, &request);
}

int ff_pool_terminate(ff_pool_t *pool) {
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  return ff__runtime_call(pool->runtime, pool_terminate_in_loop, pool);
}

static int pool_wait_until(ff_pool_t *pool, _Atomic uint32_t *word,
                           uint64_t deadline) {
  if (atomic_load(word)) return 0;
  if (ff__runtime_on_loop_thread(pool->runtime)) return -EDEADLK;
  while (!atomic_load(word)) {
    int rc = ff__futex_wait(word, 0, deadline);
    if ((rc == -ETIMEDOUT || rc == -EINTR) && !atomic_load(word)) return rc;
  }
  return 0;
}

static int pool_wait_word(ff_pool_t *pool, _Atomic uint32_t *word,
                          double timeout) {
  return pool_wait_until(pool, word, ff__deadline(timeout));
}

int ff_pool_join(ff_pool_t *pool, double timeout) {
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
  if (!atomic_load(&pool->closed_by_user) && atomic_load(&pool->error) == 0)
    return -EINVAL;
  uint64_t deadline = ff__deadline(timeout);
  int rc = pool_wait_until(pool, &pool->workers_gone, deadline);
  /* The completion callbacks of its tasks have run, as they have after
   * multiprocessing's join (its result handler thread has ended). */
  return rc < 0 ? rc : ff__task_callbacks_flush(deadline);
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
  if (ff__pool_is_foreign(pool)) return;
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
  ff__pool_release(pool); /* the post's */
}

void ff_pool_abandon(ff_pool_t *pool) {
  if (pool == NULL) return;
  if (ff__pool_is_foreign(pool)) return;
  atomic_store(&pool->closed_by_user, true);
  /* The post holds a reference of its own: the loop's may be gone already
   * (a pool its idle limit closed is torn down without its owner). If
   * even the post fails, waiting is the only safe way left. */
  ff__pool_retain(pool);
  if (ff__runtime_post(pool->runtime, pool_abandon_in_loop, pool) < 0) {
    ff__pool_release(pool);
    ff_pool_destroy(pool);
    return;
  }
  ff__pool_release(pool);
}

/* ---- inspecting ---------------------------------------------------------- */

size_t ff_pool_worker_pids(ff_pool_t *pool, pid_t *pids, size_t capacity) {
  if (ff__pool_is_foreign(pool)) return 0;
  size_t count = 0;
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->pid <= 0 || w->state == WORKER_EMPTY || w->exiting ||
        w->finished)
      continue;
    if (count < capacity) pids[count] = w->pid;
    count++;
  }
  pthread_mutex_unlock(&pool->lock);
  return count;
}

size_t ff_pool_worker_count(ff_pool_t *pool) {
  if (ff__pool_is_foreign(pool)) return 0;
  pthread_mutex_lock(&pool->lock);
  size_t count = pool->spawns_wanted;
  /* One that said it exits runs nothing more: only its reaping is left. */
  for (unsigned i = 0; i < pool->options.workers; i++)
    if (pool->workers[i].state != WORKER_EMPTY && !pool->workers[i].finished)
      count++;
  pthread_mutex_unlock(&pool->lock);
  return count;
}

int ff_pool_worker_pidfd(ff_pool_t *pool, pid_t pid) {
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
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
  if (ff__pool_is_foreign(pool)) return FF_EFOREIGN;
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

int ff_pool_take_output(ff_pool_t *pool, unsigned stream, ff_buf_t *into) {
  if (pool == NULL || into == NULL || stream >= FF_OUTPUT_STREAMS)
    return -EINVAL;
  pthread_mutex_lock(&pool->lock);
  ff_buf_t *stray = &pool->stray_output[stream];
  size_t old = into->len;
  int rc = 0;
  if (stray->len > 0) {
    if (ff_buf_reserve(into, old + stray->len) == NULL) {
      into->len = old;
      rc = -ENOMEM;
    } else {
      memcpy(into->base + old, stray->base, stray->len);
      stray->len = 0;
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

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

