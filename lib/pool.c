/* The pool: task dispatch, result collection, and the lifecycle of the
 * workers and the zygote.
 *
 * Callers submit from any thread into a locked incoming list and wake the
 * loop with the pool's uv_async. Everything else runs in the loop thread:
 * pending tasks go to ready workers, at most FF__WORKER_CREDIT at a time per
 * worker and idle workers first; results come back in order on the worker's
 * channel; exits come from the zygote with their wait status. A task lost
 * with its worker fails alone with FF_EWORKERLOST and the worker is
 * replaced. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Tasks in flight per worker. A second task waiting in a worker's socket
 * saves it a round trip between tasks, but it cannot move to another worker
 * that falls idle: so a worker gets one only when the backlog is deep
 * enough (FF__PREFETCH_BACKLOG tasks per worker) that idle workers have
 * other work anyway. */
#define FF__WORKER_CREDIT 2u
#define FF__PREFETCH_BACKLOG 2u

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

typedef struct ff__worker_s {
  ff_pool_t *pool;
  unsigned slot;
  int state;
  pid_t pid;
  int pidfd;
  ff__channel_t *channel;
  ff__link_t in_flight;
  unsigned in_flight_count;
  unsigned tasks_sent;
  bool exiting; /* its exit is being handled: dispatch skips it */
  bool doomed;  /* to be killed as soon as its pidfd arrives */
} ff__worker_t;

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
  uv_check_t flush;
  unsigned handles_open;
  bool ctl_open;

  /* Shared with submitting threads, under lock. */
  pthread_mutex_t lock;
  ff__link_t incoming;
  size_t incoming_count;
  bool accepting;
  uint64_t next_id;
  _Atomic int error;
  _Atomic uint32_t cancels;
  _Atomic bool closed_by_user;
  _Atomic uint32_t stopped; /* futex word for join */

  /* Loop thread only. */
  int state;
  bool destroyed;
  ff__link_t pending;
  size_t pending_count;
  ff__worker_t *workers;
  unsigned live_workers;
  char *error_detail;
  size_t error_detail_length;
  ff_task_t **notify;
  size_t notify_count;
  size_t notify_capacity;
};

static void pool_dispatch(ff_pool_t *pool);
static void pool_fail(ff_pool_t *pool, int code, const void *detail,
                      size_t length, const ff_exit_t *exit);
static void pool_terminate_in_loop(void *arg);
static void worker_spawn(ff__worker_t *w);

/* A forked child inherits a copy of its parent's pools, whose loop thread
 * does not exist in the child: every call on them fails. */
static int pool_foreign(const ff_pool_t *pool) {
  return pool->owner != getpid();
}

void ff_pool_options_init(ff_pool_options_t *options) {
  memset(options, 0, sizeof(*options));
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  options->workers = cpus > 0 ? (unsigned)cpus : 1u;
}

void ff__pool_retain(ff_pool_t *pool) { atomic_fetch_add(&pool->refs, 1); }

void ff__pool_release(ff_pool_t *pool) {
  if (atomic_fetch_sub(&pool->refs, 1) != 1) return;
  pthread_mutex_destroy(&pool->lock);
  free(pool->workers);
  free(pool->error_detail);
  free(pool->notify);
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

/* ---- completing tasks ------------------------------------------------------ */

/* Hands a settled task to its waiters: at once, or after the pool's
 * completion callback when the task asked for one. */
static void pool_complete(ff_pool_t *pool, ff_task_t *task) {
  if ((task->flags & FF_SUBMIT_NOTIFY) && pool->options.on_complete) {
    if (pool->notify_count == pool->notify_capacity) {
      size_t capacity = pool->notify_capacity ? pool->notify_capacity * 2 : 64;
      ff_task_t **grown = realloc(pool->notify, capacity * sizeof(*grown));
      if (grown == NULL) {
        /* Publishing without the callback beats losing the task. */
        ff__task_publish(task);
        return;
      }
      pool->notify = grown;
      pool->notify_capacity = capacity;
    }
    pool->notify[pool->notify_count++] = task;
    return;
  }
  ff__task_publish(task);
}

static void pool_flush_notify(ff_pool_t *pool) {
  if (pool->notify_count == 0) return;
  size_t count = pool->notify_count;
  pool->notify_count = 0;
  pool->options.on_complete(pool->notify, count, pool->options.notify_arg);
  for (size_t i = 0; i < count; i++) ff__task_publish(pool->notify[i]);
}

static void pool_on_flush(uv_check_t *handle) {
  pool_flush_notify(FF__CONTAINER_OF(handle, ff_pool_t, flush));
}

static char *copy_bytes(const void *data, size_t length) {
  char *copy = malloc(length ? length : 1);
  if (copy && length) memcpy(copy, data, length);
  return copy;
}

static void pool_fail_task(ff_pool_t *pool, ff_task_t *task, int code,
                           const ff_exit_t *exit) {
  char *detail = NULL;
  size_t length = 0;
  /* Tasks failed by the pool's own error carry its detail (the worker's
   * description of why its initializer failed, say). */
  if (code != 0 && code == atomic_load(&pool->error) &&
      pool->error_detail_length > 0) {
    detail = copy_bytes(pool->error_detail, pool->error_detail_length);
    length = detail ? pool->error_detail_length : 0;
  }
  ff__task_settle(task, code, detail, length, exit);
  pool_complete(pool, task);
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
 * pool and exit. */
static void pool_close_ctl(ff_pool_t *pool) {
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
  pool_flush_notify(pool);
  pool_close_ctl(pool);
  uv_close((uv_handle_t *)&pool->zygote_poll, pool_on_zygote_poll_closed);
  uv_close((uv_handle_t *)&pool->wakeup, pool_on_handle_closed);
  uv_close((uv_handle_t *)&pool->flush, pool_on_handle_closed);
}

static void worker_release_process(ff__worker_t *w) {
  if (w->channel) {
    ff__channel_close(w->channel);
    w->channel = NULL;
  }
  if (w->pidfd >= 0) {
    ff__fd_untrack(w->pidfd);
    close(w->pidfd);
    w->pidfd = -1;
  }
  if (w->state != WORKER_EMPTY) w->pool->live_workers--;
  w->state = WORKER_EMPTY;
  w->pid = 0;
}

static void worker_fail_in_flight(ff__worker_t *w, int code,
                                  const ff_exit_t *exit) {
  ff__link_t *l;
  while ((l = ff__list_pop_front(&w->in_flight)) != NULL) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    pool_fail_task(w->pool, task, code, exit);
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
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    bool had_work = !ff__list_empty(&pool->pending) || pool->live_workers > 0;
    if (pool->state == POOL_RUNNING || had_work)
      pool_fail(pool, FF_EZYGOTELOST, NULL, 0, &how);
  }
  /* Its workers died with it (their death signal follows the zygote). */
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    worker_fail_in_flight(w, FF_EWORKERLOST, &how);
    worker_release_process(w);
  }
  pool_close_ctl(pool);
  pool->state = POOL_STOPPED;
  pool_flush_notify(pool);
  atomic_store(&pool->stopped, 1);
  ff__futex_wake_all(&pool->stopped);
  pool_teardown(pool);
}

/* Once a closing pool has run its last task and its workers are gone, the
 * zygote is told to exit. */
static void pool_maybe_finish(ff_pool_t *pool) {
  if (pool->state != POOL_CLOSING) return;
  if (!ff__list_empty(&pool->pending) || pool->live_workers > 0) return;
  pool_close_ctl(pool);
}

static void pool_fail(ff_pool_t *pool, int code, const void *detail,
                      size_t length, const ff_exit_t *exit) {
  int expected = 0;
  pthread_mutex_lock(&pool->lock);
  if (atomic_compare_exchange_strong(&pool->error, &expected, code) &&
      length > 0) {
    pool->error_detail = copy_bytes(detail, length);
    pool->error_detail_length = pool->error_detail ? length : 0;
  }
  pool->accepting = false;
  ff__list_splice(&pool->pending, &pool->incoming);
  pool->incoming_count = 0;
  pthread_mutex_unlock(&pool->lock);
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, exit);
  pool->pending_count = 0;
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING)
    pool_terminate_in_loop(pool);
}

/* ---- workers ---------------------------------------------------------------- */

static void worker_kill(ff__worker_t *w) {
  /* The worker's READY and first results can arrive before the zygote's
   * SPAWNED (two sockets, no order between them): without a pidfd yet, the
   * kill waits for it. */
  if (w->pidfd >= 0)
    ff__pidfd_send_signal(w->pidfd, SIGKILL);
  else
    w->doomed = true;
}

static void worker_on_frame(ff__channel_t *channel, ff__frame_t *frame) {
  ff__worker_t *w = ff__channel_data(channel);
  ff_pool_t *pool = w->pool;
  const ff__frame_header_t *h = &frame->header;
  if (h->type == FF__FRAME_READY && w->state == WORKER_STARTING) {
    if (h->flags & FF__FRAME_FLAG_FAILED) {
      ff_exit_t how = {w->pid, -1, 0};
      pool_fail(pool, FF_EINITFAILED, frame->payload, (size_t)h->length, &how);
      free(frame->payload);
      return;
    }
    free(frame->payload);
    w->state = WORKER_READY;
    pool_dispatch(pool);
    return;
  }
  if (h->type == FF__FRAME_RESULT && !ff__list_empty(&w->in_flight)) {
    ff_task_t *task = FF__CONTAINER_OF(w->in_flight.next, ff_task_t, link);
    if (task->id == h->id) {
      ff__list_remove(&task->link);
      w->in_flight_count--;
      int status = (h->flags & FF__FRAME_FLAG_FAILED) ? FF_ETASKFAILED : 0;
      ff__task_settle(task, status, frame->payload, (size_t)h->length, NULL);
      pool_complete(pool, task);
      pool_dispatch(pool);
      return;
    }
  }
  /* Anything else breaks the protocol: the worker cannot be trusted. It is
   * killed, and its exit fails its tasks. */
  free(frame->payload);
  worker_kill(w);
}

static void worker_on_end(ff__channel_t *channel, int error) {
  ff__worker_t *w = ff__channel_data(channel);
  if (error != 0) worker_kill(w);
  /* A clean end means the worker is exiting: the zygote reports how. */
}

static const ff__channel_callbacks_t worker_callbacks = {worker_on_frame,
                                                         worker_on_end};

static void worker_spawn(ff__worker_t *w) {
  ff_pool_t *pool = w->pool;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    pool_fail(pool, -errno, NULL, 0, NULL);
    return;
  }
  int flags = fcntl(sv[0], F_GETFL);
  int rc = (flags < 0 || fcntl(sv[0], F_SETFL, flags | O_NONBLOCK) < 0)
               ? -errno
               : 0;
  if (rc == 0) {
    ff__ctl_msg_t msg = {FF__CTL_SPAWN, w->slot, 0, 0};
    rc = ff__ctl_send(pool->ctl_fd, &msg, sv[1]);
  }
  close(sv[1]);
  if (rc == 0) {
    ff__fd_track(sv[0]);
    rc = ff__channel_open(&w->channel, ff__runtime_loop(pool->runtime), sv[0],
                          &worker_callbacks, w);
    if (rc < 0) ff__fd_untrack(sv[0]);
  }
  if (rc < 0) {
    close(sv[0]);
    pool_fail(pool, rc, NULL, 0, NULL);
    return;
  }
  w->state = WORKER_STARTING;
  w->doomed = false;
  w->pid = 0;
  w->pidfd = -1;
  w->tasks_sent = 0;
  w->in_flight_count = 0;
  pool->live_workers++;
}

static void worker_exited(ff__worker_t *w, int wstatus) {
  ff_pool_t *pool = w->pool;
  /* Frames the worker wrote before it exited (results, or how its start
   * went) are still in the socket. */
  w->exiting = true;
  if (w->channel) ff__channel_drain(w->channel);
  bool expected = w->state == WORKER_RETIRING;
  bool was_ready = w->state == WORKER_READY || w->state == WORKER_RETIRING;
  w->exiting = false;
  ff_exit_t how;
  ff__exit_from_status(&how, w->pid, wstatus);
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
      atomic_store(&task->stage, FF__TASK_QUEUED);
      ff__list_push_front(&pool->pending, &task->link);
      pool->pending_count++;
    }
    w->in_flight_count = 0;
    ff__task_settle(lost, FF_EWORKERLOST, NULL, 0, &how);
    pool_complete(pool, lost);
  }
  worker_release_process(w);
  if (pool->options.on_worker_exit)
    pool->options.on_worker_exit(pool, &how, expected,
                                 pool->options.notify_arg);
  if (!was_ready && atomic_load(&pool->error) == 0 &&
      (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING)) {
    /* It died before it could run anything: respawning would loop. */
    pool_fail(pool, FF_EINITFAILED, NULL, 0, &how);
    return;
  }
  bool needed = pool->state == POOL_RUNNING ||
                (pool->state == POOL_CLOSING && !ff__list_empty(&pool->pending));
  if (needed && atomic_load(&pool->error) == 0) worker_spawn(w);
  pool_dispatch(pool);
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
    int fd;
    int rc = ff__ctl_recv(pool->ctl_fd, &msg, &fd);
    if (rc == -EAGAIN) return;
    if (rc <= 0) {
      /* The zygote is gone; its pidfd reports how. */
      uv_poll_stop(handle);
      return;
    }
    if (msg.type == FF__CTL_SPAWNED && msg.slot < pool->options.workers &&
        pool->workers[msg.slot].state != WORKER_EMPTY &&
        pool->workers[msg.slot].pid == 0) {
      ff__worker_t *w = &pool->workers[msg.slot];
      if (msg.status < 0 || fd < 0) {
        if (fd >= 0) close(fd);
        if (msg.pid > 0) kill(msg.pid, SIGKILL); /* reported as it exits */
        worker_release_process(w);
        pool_fail(pool, msg.status < 0 ? msg.status : -EIO, NULL, 0, NULL);
        continue;
      }
      ff__fd_track(fd);
      w->pidfd = fd;
      w->pid = msg.pid;
      if (w->doomed) worker_kill(w);
      continue;
    }
    if (fd >= 0) close(fd);
    if (msg.type == FF__CTL_EXITED) {
      ff__worker_t *w = pool_worker_by_pid(pool, msg.pid);
      if (w) worker_exited(w, msg.status);
    }
  }
}

/* ---- dispatch ------------------------------------------------------------------ */

static void pool_drop_cancelled(ff_pool_t *pool) {
  if (atomic_exchange(&pool->cancels, 0) == 0) return;
  for (ff__link_t *l = pool->pending.next; l != &pool->pending;) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    l = l->next;
    if (atomic_load(&task->stage) == FF__TASK_CANCELLING) {
      ff__list_remove(&task->link);
      pool->pending_count--;
      ff__task_settle(task, FF_ECANCELED, NULL, 0, NULL);
      pool_complete(pool, task);
    }
  }
}

static ff__worker_t *pool_pick_worker(ff_pool_t *pool) {
  ff__worker_t *best = NULL;
  unsigned credit =
      pool->pending_count >= FF__PREFETCH_BACKLOG * pool->options.workers
          ? FF__WORKER_CREDIT
          : 1;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->state != WORKER_READY || w->exiting || w->in_flight_count >= credit)
      continue;
    if (best == NULL || w->in_flight_count < best->in_flight_count) best = w;
    if (w->in_flight_count == 0) break;
  }
  return best;
}

static void pool_dispatch(ff_pool_t *pool) {
  if (pool->state != POOL_RUNNING && pool->state != POOL_CLOSING) return;
  pool_drop_cancelled(pool);
  ff__worker_t *w;
  while (!ff__list_empty(&pool->pending) &&
         (w = pool_pick_worker(pool)) != NULL) {
    ff_task_t *task =
        FF__CONTAINER_OF(ff__list_pop_front(&pool->pending), ff_task_t, link);
    pool->pending_count--;
    uint32_t expected = FF__TASK_QUEUED;
    if (!atomic_compare_exchange_strong(&task->stage, &expected,
                                        FF__TASK_DISPATCHED)) {
      ff__task_settle(task, FF_ECANCELED, NULL, 0, NULL);
      pool_complete(pool, task);
      continue;
    }
    ff__list_push_back(&w->in_flight, &task->link);
    w->in_flight_count++;
    w->tasks_sent++;
    unsigned max = pool->options.max_tasks_per_worker;
    if (max && w->tasks_sent >= max) w->state = WORKER_RETIRING;
    if (ff__channel_send(w->channel, FF__FRAME_TASK, 0, task->id,
                         task->message, task->message_length, NULL,
                         NULL) < 0)
      worker_kill(w); /* its exit fails the task */
  }
  if (pool->state == POOL_CLOSING && ff__list_empty(&pool->pending)) {
    for (unsigned i = 0; i < pool->options.workers; i++) {
      w = &pool->workers[i];
      if (w->state == WORKER_READY && !w->exiting && w->in_flight_count == 0) {
        w->state = WORKER_RETIRING;
        ff__channel_send(w->channel, FF__FRAME_STOP, 0, 0, NULL, 0, NULL,
                         NULL);
      }
    }
  }
}

static void pool_on_wakeup(uv_async_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__link_t fresh;
  ff__list_init(&fresh);
  pthread_mutex_lock(&pool->lock);
  ff__list_splice(&fresh, &pool->incoming);
  size_t fresh_count = pool->incoming_count;
  pool->incoming_count = 0;
  pthread_mutex_unlock(&pool->lock);
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING) {
    ff__list_splice(&pool->pending, &fresh);
    pool->pending_count += fresh_count;
  } else {
    ff__link_t *l;
    while ((l = ff__list_pop_front(&fresh)) != NULL)
      pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), FF_ECANCELED,
                     NULL);
  }
  pool_dispatch(pool);
  if (atomic_load(&pool->cancels)) pool_drop_cancelled(pool);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static void pool_start_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  uv_loop_t *loop = ff__runtime_loop(pool->runtime);
  uv_handle_t *handles[] = {(uv_handle_t *)&pool->wakeup,
                            (uv_handle_t *)&pool->flush,
                            (uv_handle_t *)&pool->ctl_poll,
                            (uv_handle_t *)&pool->zygote_poll};
  uv_async_init(loop, &pool->wakeup, pool_on_wakeup);
  uv_check_init(loop, &pool->flush);
  uv_poll_init(loop, &pool->ctl_poll, pool->ctl_fd);
  uv_poll_init(loop, &pool->zygote_poll, pool->zygote_pidfd);
  for (size_t i = 0; i < sizeof(handles) / sizeof(handles[0]); i++)
    handles[i]->data = pool;
  pool->handles_open = 4;
  pool->ctl_open = true;
  uv_check_start(&pool->flush, pool_on_flush);
  uv_poll_start(&pool->ctl_poll, UV_READABLE, pool_on_ctl);
  uv_poll_start(&pool->zygote_poll, UV_READABLE, pool_on_zygote_exit);
  for (unsigned i = 0; i < pool->options.workers && !atomic_load(&pool->error);
       i++)
    worker_spawn(&pool->workers[i]);
}

int ff_pool_create(ff_pool_t **out, const ff_pool_options_t *options) {
  if (out == NULL || options == NULL || options->work == NULL ||
      options->workers == 0)
    return -EINVAL;
  ff__runtime_t *runtime;
  int rc = ff__runtime_acquire(&runtime);
  if (rc < 0) return rc;
  ff_pool_t *pool = calloc(1, sizeof(*pool));
  if (pool == NULL) return -ENOMEM;
  pool->workers = calloc(options->workers, sizeof(ff__worker_t));
  if (pool->workers == NULL) {
    free(pool);
    return -ENOMEM;
  }
  atomic_init(&pool->refs, 2); /* the owner's and the loop's */
  pool->owner = getpid();
  pool->runtime = runtime;
  pool->options = *options;
  pool->zygote_pidfd = -1;
  pool->ctl_fd = -1;
  pthread_mutex_init(&pool->lock, NULL);
  ff__list_init(&pool->incoming);
  ff__list_init(&pool->pending);
  pool->accepting = true;
  pool->next_id = 1;
  pool->state = POOL_RUNNING;
  for (unsigned i = 0; i < options->workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    w->pool = pool;
    w->slot = i;
    w->pidfd = -1;
    ff__list_init(&w->in_flight);
  }
  rc = ff__zygote_fork(runtime, &pool->options, &pool->zygote_pid,
                       &pool->zygote_pidfd, &pool->ctl_fd);
  if (rc < 0) {
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
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
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free(pool);
    return rc;
  }
  *out = pool;
  return 0;
}

int ff_pool_submit(ff_pool_t *pool, const void *message, size_t length,
                   unsigned flags, ff_queue_t *queue, void *user_data,
                   ff_task_t **task_out) {
  if (pool == NULL || task_out == NULL || (message == NULL && length > 0) ||
      (flags & ~FF_SUBMIT_NOTIFY))
    return -EINVAL;
  if (pool_foreign(pool)) return FF_EFOREIGN;
  ff_task_t *task =
      ff__task_new(pool, message, length, flags, queue, user_data);
  if (task == NULL) return -ENOMEM;
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
  ff__list_push_back(&pool->incoming, &task->link);
  pool->incoming_count++;
  pthread_mutex_unlock(&pool->lock);
  uv_async_send(&pool->wakeup);
  *task_out = task;
  return 0;
}

static void pool_close_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  pthread_mutex_unlock(&pool->lock);
  /* Take what was submitted before the close. */
  pool_on_wakeup(&pool->wakeup);
  if (pool->state != POOL_RUNNING) return;
  pool->state = POOL_CLOSING;
  pool_dispatch(pool);
  pool_maybe_finish(pool);
}

int ff_pool_close(ff_pool_t *pool) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  return ff__runtime_call(pool->runtime, pool_close_in_loop, pool);
}

static void pool_terminate_in_loop(void *arg) {
  ff_pool_t *pool = arg;
  pthread_mutex_lock(&pool->lock);
  pool->accepting = false;
  ff__list_splice(&pool->pending, &pool->incoming);
  pool->pending_count += pool->incoming_count;
  pool->incoming_count = 0;
  pthread_mutex_unlock(&pool->lock);
  if (pool->state == POOL_TERMINATING || pool->state == POOL_STOPPED) return;
  pool->state = POOL_TERMINATING;
  int code = atomic_load(&pool->error);
  if (code == 0) code = FF_ECANCELED;
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, NULL);
  pool->pending_count = 0;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    /* Close the channel before failing the tasks: its send queue still
     * points into their messages. */
    if (w->channel) {
      ff__channel_close(w->channel);
      w->channel = NULL;
    }
    worker_fail_in_flight(w, code, NULL);
    worker_kill(w);
  }
  pool_close_ctl(pool);
}

int ff_pool_terminate(ff_pool_t *pool) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  atomic_store(&pool->closed_by_user, true);
  return ff__runtime_call(pool->runtime, pool_terminate_in_loop, pool);
}

int ff_pool_join(ff_pool_t *pool, double timeout) {
  if (pool_foreign(pool)) return FF_EFOREIGN;
  if (!atomic_load(&pool->closed_by_user) && atomic_load(&pool->error) == 0)
    return -EINVAL;
  if (atomic_load(&pool->stopped)) return 0;
  if (ff__runtime_on_loop_thread(pool->runtime)) return -EDEADLK;
  uint64_t deadline = ff__deadline(timeout);
  while (!atomic_load(&pool->stopped)) {
    int rc = ff__futex_wait(&pool->stopped, 0, deadline);
    if ((rc == -ETIMEDOUT || rc == -EINTR) && !atomic_load(&pool->stopped))
      return rc;
  }
  return 0;
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
    while (ff_pool_join(pool, -1) == -EINTR) {
    }
  }
  ff__runtime_call(pool->runtime, pool_destroy_in_loop, pool);
  ff__pool_release(pool);
}

typedef struct {
  ff_pool_t *pool;
  pid_t *pids;
  size_t capacity;
  size_t count;
} pids_call_t;

static void pool_pids_in_loop(void *arg) {
  pids_call_t *call = arg;
  ff_pool_t *pool = call->pool;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->pid <= 0 || w->state == WORKER_EMPTY || w->exiting) continue;
    if (call->count < call->capacity) call->pids[call->count] = w->pid;
    call->count++;
  }
}

size_t ff_pool_worker_pids(ff_pool_t *pool, pid_t *pids, size_t capacity) {
  if (pool_foreign(pool)) return 0;
  pids_call_t call = {pool, pids, capacity, 0};
  if (ff__runtime_call(pool->runtime, pool_pids_in_loop, &call) < 0) return 0;
  return call.count;
}

int ff_pool_error(ff_pool_t *pool) { return atomic_load(&pool->error); }

size_t ff_pool_error_detail(ff_pool_t *pool, void *buf, size_t capacity) {
  pthread_mutex_lock(&pool->lock);
  size_t length = pool->error_detail_length;
  if (buf && length)
    memcpy(buf, pool->error_detail, length < capacity ? length : capacity);
  pthread_mutex_unlock(&pool->lock);
  return length;
}
