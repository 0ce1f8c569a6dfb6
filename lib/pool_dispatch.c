/* Scheduling: the pending queue, dispatch to the worker slots, timeouts,
 * the loop's handlers that drive them, the threads that wait and poll the
 * result rings themselves, and the pool-wide transitions under the lock
 * (failing, terminating, finishing a close).
 *
 * The scheduling state (the pending queue, each worker's tasks in flight,
 * both ends of the parent's rings) is under the pool's lock, and any
 * thread may drive it:
 *
 * - a submitting thread puts its task straight into an idle worker's ring;
 * - a thread waiting for a task first spins for a short while, draining the
 *   result rings itself, so a quick task costs no wake-up of the parent;
 * - the loop thread drains whatever arrives while nobody spins: before it
 *   sleeps it tells every worker so, and a worker that pushes a result then
 *   rings the worker's doorbell, an eventfd the loop polls.
 *
 * Layering (see pool_internal.h): below pool.c, above pool_slot.c and
 * pool_core.c. */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Tasks in flight per worker. Tasks queued in a worker's ring save it a
 * round trip to the parent between tasks, but they cannot move to another
 * worker that falls idle: so a worker gets more than one only when the
 * backlog is deep enough (FF__PREFETCH_BACKLOG tasks per worker) that idle
 * workers have other work anyway, and then about FF__PREFETCH_NS of work
 * by the recent average run time, at least FF__WORKER_CREDIT tasks, and
 * never more than the worker's share of the tasks there are. */
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

#define TIMEOUT_TICK_MS 10


/* ---- failing and finishing ----------------------------------------------- */

static void pool_on_ctl_closed(uv_handle_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__fd_untrack(pool->ctl_fd);
  close(pool->ctl_fd);
  pool->ctl_fd = -1;
  ff__pool_on_handle_closed(handle);
}

/* Closing the control socket tells the zygote to kill what is left of the
 * pool and exit. Handles belong to the loop thread: another thread (one
 * that found a failed READY while it polled, say) asks the loop to do it. */
void ff__pool_close_ctl(ff_pool_t *pool) {
  if (!ff__runtime_on_loop_thread(pool->runtime)) {
    pool->ctl_close_requested = true;
    uv_async_send(&pool->wakeup);
    return;
  }
  if (!pool->ctl_open) return;
  pool->ctl_open = false;
  uv_close((uv_handle_t *)&pool->ctl_poll, pool_on_ctl_closed);
}

/* Once a closing pool has run its last task and every worker has said it
 * exits (or has been reaped), join may return: the workers have run their
 * last code, and their reaping (the zygote reports each exit, with its
 * status) goes on in the loop thread. Once they are all reaped, the zygote
 * is told to exit. */
void ff__pool_maybe_finish(ff_pool_t *pool) {
  FF__ASSERT_LOCKED(pool);
  if (pool->state != POOL_CLOSING) return;
  if (!ff__list_empty(&pool->pending)) return;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    const ff__worker_t *w = &pool->workers[i];
    if (w->state != WORKER_EMPTY &&
        !(w->finished && ff__list_empty(&w->in_flight)))
      return;
  }
  /* After the results that came with the last FF__RING_EXIT are
   * published: join's caller finds every task settled. */
  if (!atomic_load(&pool->workers_gone)) pool->finish_due = true;
  /* The zygote, which holds nothing of the user's, exits and is reaped in
   * the background. */
  if (pool->live_workers == 0) ff__pool_close_ctl(pool);
}

void ff__pool_fail(ff_pool_t *pool, int code, const void *detail,
                   size_t length, const ff_exit_t *exit, ff__done_t *done) {
  FF__ASSERT_LOCKED(pool);
  assert(code != 0);
  ff__pool_set_error(pool, code, detail, length, exit);
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    ff__pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, exit,
                           done);
  pool->pending_count = 0;
  if (pool->state == POOL_RUNNING || pool->state == POOL_CLOSING)
    ff__pool_terminate_locked(pool, done);
}

void ff__pool_fail_noted(ff_pool_t *pool, ff__done_t *done) {
  int code = done->fail_code;
  if (code == 0) return;
  done->fail_code = 0;
  ff__pool_fail(pool, code, NULL, 0, &done->fail_exit, done);
}

void ff__pool_terminate_locked(ff_pool_t *pool, ff__done_t *done) {
  FF__ASSERT_LOCKED(pool);
  FF__ASSERT_POOL_STATE(pool);
  pool->accepting = false;
  pool->spawns_wanted = 0;
  /* Joined: the workers have run their last code and exit on their own
   * (killing them now would only spoil their exit statuses); the close
   * goes on as it began. */
  if (pool->state == POOL_CLOSING && atomic_load(&pool->workers_gone)) return;
  if (pool->state == POOL_TERMINATING || pool->state == POOL_STOPPED) return;
  pool->state = POOL_TERMINATING;
  int code = atomic_load(&pool->error);
  if (code == 0) code = FF_ECANCELED;
  ff__link_t *l;
  while ((l = ff__list_pop_front(&pool->pending)) != NULL)
    ff__pool_fail_task(pool, FF__CONTAINER_OF(l, ff_task_t, link), code, NULL,
                       done);
  pool->pending_count = 0;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    ff__slot_fail_in_flight(w, code, NULL, done);
    ff__slot_kill(w);
  }
  ff__pool_close_ctl(pool);
}

/* ---- the workers' events ------------------------------------------------- */

void ff__pool_drain(ff_pool_t *pool, ff__done_t *done) {
  FF__ASSERT_LOCKED(pool);
  for (unsigned i = 0; i < pool->options.workers; i++) {
    if (ff__slot_drain(&pool->workers[i], done, false))
      pool->drain_again = true;
    ff__pool_fail_noted(pool, done);
  }
  /* The last worker's FF__RING_EXIT may be what join waits for. */
  if (pool->state == POOL_CLOSING && !atomic_load(&pool->workers_gone))
    ff__pool_maybe_finish(pool);
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
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  ff__pool_drain(pool, &done);
  if (w->doorbell == d && w->sending) ff__slot_flush(w);
  ff__pool_dispatch(pool, &done);
  ff__pool_unlock_publish(pool, &done);
}

void ff__pool_spawn(ff_pool_t *pool, ff__worker_t *w, ff__done_t *done) {
  /* Handles are the loop thread's: only it starts workers. */
  assert(ff__runtime_on_loop_thread(pool->runtime));
  int rc = ff__slot_spawn(w, doorbell_on_ring);
  if (rc < 0) ff__pool_fail(pool, rc, NULL, 0, NULL, done);
}

void ff__pool_worker_exited(ff_pool_t *pool, ff__worker_t *w, int wstatus,
                            ff__done_t *done) {
  assert(ff__runtime_on_loop_thread(pool->runtime));
  ff_exit_t how;
  bool was_ready;
  ff__slot_exited(w, wstatus, done, &how, &was_ready);
  /* Its failed READY, if that is what it left, fails the pool first. */
  ff__pool_fail_noted(pool, done);
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
      ff__pool_fail(pool, FF_EINITFAILED, NULL, 0, &how, done);
      return;
    }
  }
  /* Started on demand, a worker is replaced only when tasks wait for one,
   * which ff__pool_dispatch sees to. */
  bool needed =
      !pool->options.start_on_demand &&
      (pool->state == POOL_RUNNING ||
       (pool->state == POOL_CLOSING && !ff__list_empty(&pool->pending)));
  if (needed && atomic_load(&pool->error) == 0) ff__pool_spawn(pool, w, done);
  ff__pool_dispatch(pool, done);
  ff__pool_maybe_finish(pool);
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
        ff__slot_kill_if_head_killed(w);
        pthread_mutex_unlock(&pool->lock);
        return;
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
}

void ff__pool_wake(ff_pool_t *pool) {
  if (ff__pool_is_foreign(pool)) return;
  atomic_fetch_add(&pool->cancels, 1);
  uv_async_send(&pool->wakeup);
}

/* ---- dispatch ------------------------------------------------------------ */

static void pool_drop_cancelled(ff_pool_t *pool, ff__done_t *done) {
  if (atomic_exchange(&pool->cancels, 0) == 0) return;
  for (ff__link_t *l = pool->pending.next; l != &pool->pending;) {
    ff_task_t *task = FF__CONTAINER_OF(l, ff_task_t, link);
    l = l->next;
    if (atomic_load(&task->stage) == FF__TASK_CANCELLING) {
      ff__list_remove(&task->link);
      assert(pool->pending_count > 0);
      pool->pending_count--;
      ff__pool_settle(done, task, FF_ECANCELED, NULL, 0, NULL);
    }
  }
}

/* With start_on_demand: a worker for each queued task that no worker, ready
 * or starting, will take, up to the pool's size. Only the loop thread starts
 * workers; another thread counts them as wanted (ff_pool_worker_count sees
 * them at once) and wakes the loop. */
static void pool_want_workers(ff_pool_t *pool, ff__done_t *done) {
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
    assert(pool->spawns_wanted <= pool->options.workers);
    pool->spawns_wanted--;
    ff__pool_spawn(pool, w, done);
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
  if (credit < FF__WORKER_CREDIT) credit = FF__WORKER_CREDIT;
  if (credit > FF__MAX_CREDIT) credit = FF__MAX_CREDIT;
  /* The average is of past tasks: when the new ones are longer, a worker
   * ready before the others (the first of a new pool, say) would take
   * them all. No worker holds more than its share of the work there is. */
  uint64_t work = pool->pending_count;
  for (unsigned i = 0; i < pool->options.workers; i++)
    work += pool->workers[i].in_flight_count;
  uint64_t share =
      (work + pool->options.workers - 1) / pool->options.workers;
  if (credit > share) credit = share;
  return (unsigned)credit;
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

void ff__pool_dispatch(ff_pool_t *pool, ff__done_t *done) {
  FF__ASSERT_LOCKED(pool);
  FF__ASSERT_POOL_STATE(pool);
  /* The count and the list of queued tasks go together. */
  assert((pool->pending_count == 0) == ff__list_empty(&pool->pending));
  if (pool->state != POOL_RUNNING && pool->state != POOL_CLOSING) return;
  pool_drop_cancelled(pool, done);
  ff__worker_t *w;
  unsigned credit = pool_credit(pool);
  while (!ff__list_empty(&pool->pending) &&
         (w = pool_pick_worker(pool, credit)) != NULL) {
    ff_task_t *task =
        FF__CONTAINER_OF(ff__list_pop_front(&pool->pending), ff_task_t, link);
    assert(pool->pending_count > 0 && w->state == WORKER_READY);
    pool->pending_count--;
    uint32_t expected = FF__TASK_QUEUED;
    if (!atomic_compare_exchange_strong(&task->stage, &expected,
                                        FF__TASK_DISPATCHED)) {
      ff__pool_settle(done, task, FF_ECANCELED, NULL, 0, NULL);
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
    ff__slot_send_task(w, task);
  }
  for (unsigned i = 0; i < pool->options.workers; i++) {
    w = &pool->workers[i];
    ff__slot_write_reports(w);
    if (pool->state == POOL_CLOSING && ff__list_empty(&pool->pending) &&
        w->state == WORKER_READY && !w->exiting && w->in_flight_count == 0) {
      w->state = WORKER_RETIRING;
      ff__slot_send_stop(w);
    }
    ff__slot_wake(w);
  }
  pool_want_workers(pool, done);
}

/* ---- the loop's handlers ------------------------------------------------- */

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
        ff__slot_kill(w); /* it ignored SIGTERM */
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

void ff__pool_on_wakeup(uv_async_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  ff__pool_drain(pool, &done);
  ff__pool_dispatch(pool, &done);
  if (atomic_load(&pool->cancels)) pool_drop_cancelled(pool, &done);
  if (pool->ctl_close_requested) {
    pool->ctl_close_requested = false;
    ff__pool_close_ctl(pool);
  }
  ff__pool_unlock_publish(pool, &done);
  pool_watch_timeouts(pool);
}

/* Before the loop sleeps: every worker must ring its doorbell when it
 * pushes something, unless a waiting thread polls the rings itself. */
static void pool_arm_all(ff_pool_t *pool, ff__done_t *done) {
  bool readable = false;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->shm.base && w->state != WORKER_EMPTY && !w->reading &&
        ff__ring_arm_consumer(&w->results))
      readable = true;
  }
  if (readable) {
    ff__pool_drain(pool, done);
    ff__pool_dispatch(pool, done);
  }
}

void ff__pool_on_arm(uv_prepare_t *handle) {
  ff_pool_t *pool = handle->data;
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  if (pool->spinners == 0) pool_arm_all(pool, &done);
  /* Reports that another thread queued (the kick that woke the loop). */
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__slot_write_reports(&pool->workers[i]);
    ff__slot_wake(&pool->workers[i]);
  }
  ff__pool_unlock_publish(pool, &done);
}

/* ---- waiting ------------------------------------------------------------- */

void ff__pool_poll(ff_pool_t *pool) {
  if (pthread_mutex_trylock(&pool->lock) != 0) return;
  ff__done_t done;
  ff__done_init(&done);
  ff__pool_drain(pool, &done);
  ff__pool_dispatch(pool, &done);
  ff__pool_unlock_publish(pool, &done);
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
  ff__done_t done;
  ff__done_init(&done);
  pthread_mutex_lock(&pool->lock);
  pool->spinners++;
  for (unsigned i = 0; i < pool->options.workers; i++) {
    ff__worker_t *w = &pool->workers[i];
    if (w->shm.base) ff__ring_disarm_consumer(&w->results);
  }
  ff__pool_drain(pool, &done);
  ff__pool_dispatch(pool, &done);
  ff__pool_unlock_publish(pool, &done);
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
  assert(pool->spinners > 0);
  if (--pool->spinners == 0) pool_arm_all(pool, &done);
  ff__pool_unlock_publish(pool, &done);
  return ff__futex_sleep(word, value, sleepers, deadline_ns);
}
