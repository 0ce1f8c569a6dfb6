/* The private interface between the files of the pool, and its state.
 *
 * The pool is one state machine under one lock (pool->lock), split by
 * concern into files that call each other in one direction only:
 *
 *   pool.c           the API and the lifecycle: create, submit, close,
 *                    terminate, destroy, join, stats; the zygote's
 *                    control socket and its exit
 *        |
 *   pool_dispatch.c  scheduling: the pending queue, dispatch, timeouts,
 *                    the loop's handlers that drive them, waiting threads
 *                    that poll, and failing or finishing the pool
 *        |
 *   pool_slot.c      one worker slot's parent side: spawn, its rings
 *                    (send, drain), its exit, its process's resources
 *        |
 *   pool_core.c      the pool object's references, and the done list:
 *                    tasks settled under the lock, published after it
 *
 * A lower file never calls a higher one: what pool_slot.c finds that must
 * fail the pool, it notes in the done list (ff__done_t.fail_code) and the
 * scheduler fails the pool on its return; the handler of a worker's
 * doorbell is the scheduler's, handed to ff__slot_spawn. Everything here
 * is under pool->lock unless said otherwise. */
#ifndef FF_POOL_INTERNAL_H
#define FF_POOL_INTERNAL_H

#include "internal.h"

#include <assert.h>
#include <errno.h>

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

/* The loop's watch on a worker's lender socket (share.c): pool_slot.c's. */
typedef struct lender_s lender_t;

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
  bool finished; /* said it exits (FF__RING_EXIT): it runs nothing more */
  bool doomed; /* to be killed as soon as its pidfd arrives */
  /* Killed because its rings could not be used any more: the code its
   * task fails with (FF_EPROTOCOL for a corrupt message, -ENOMEM when its
   * result could not be joined), else 0. */
  int corrupt;
  /* Killed for a message past max_message_size: the bytes that had come,
   * which its task fails with. */
  uint64_t oversize;
  /* Its process's captured streams, when the pool captures output. */
  ff__output_t output;
  /* What ff_pool_stats reports of this slot, across its processes. */
  uint64_t tasks_done;
  uint64_t busy_ns;
  uint64_t bytes_sent;
  uint64_t bytes_received;
  uint64_t first_spawn_ns; /* 0 until the slot's first process */
  unsigned restarts;
  /* How the slot's last processes ended, for ff_pool_worker_exit: a
   * deliberately bounded history (a ring of the last FF_EXITS_KEPT), not a
   * log; on_worker_exit reports every exit as it happens. */
  ff_exit_t exits[FF_EXITS_KEPT];
  unsigned exits_next;
};

/* A worker exit to report through on_worker_exit once the lock is gone. */
typedef struct ff__done_exit_s {
  ff_exit_t how;
  bool expected;
} ff__done_exit_t;

/* What happened under the pool's lock, acted on after it: the tasks
 * finished (published), the worker exits (reported), and a failure of the
 * pool found by pool_slot.c, which is below the code that fails a pool. */
typedef struct ff__done_s {
  ff__link_t tasks;
  ff__done_exit_t *exits; /* as many as happened (ff__grow) */
  size_t exit_count;
  size_t exit_capacity;
  /* Nonzero: the pool must fail with this code, and fail_exit, as soon as
   * the slot that found it returns (ff__pool_fail_noted). */
  int fail_code;
  ff_exit_t fail_exit;
} ff__done_t;

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
  /* ff_pool_set_idle_limit's check (the loop thread's alone): what it does
   * and the activity it saw at its last tick. */
  uv_timer_t idle;
  int idle_action;
  uint64_t idle_mark;
  /* Closed by its idle limit: nobody will destroy it soon, so its handles
   * and descriptors go once the zygote is reaped (torn_down: they went). */
  bool idle_closed;
  bool torn_down;
  unsigned handles_open;
  bool ctl_open;
  bool ctl_close_requested; /* under lock */

  _Atomic int error;
  _Atomic uint32_t cancels;
  _Atomic bool closed_by_user;
  _Atomic uint32_t stopped;      /* futex word: the zygote is reaped */
  /* Under the lock: every worker is done, and workers_gone is set once
   * the tasks settled with it are published (ff__pool_unlock_publish). */
  bool finish_due;
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
  /* Captured output no task owns, until ff_pool_take_output takes it. */
  ff_buf_t stray_output[FF_OUTPUT_STREAMS];
};

/* Invariants, checked with assert() in the debug builds the tests use.
 * FF__ASSERT_LOCKED says the pool's lock is held (by someone: a default
 * mutex cannot say by whom; trylock fails on a held one). */
#define FF__ASSERT_LOCKED(pool)                                             \
  assert(pthread_mutex_trylock(&(pool)->lock) == EBUSY)
#define FF__ASSERT_POOL_STATE(pool)                                         \
  assert((pool)->state >= POOL_RUNNING && (pool)->state <= POOL_STOPPED)
#define FF__ASSERT_SLOT(w)                                                  \
  assert((w)->state >= WORKER_EMPTY && (w)->state <= WORKER_RETIRING &&     \
         (w)->slot < (w)->pool->options.workers &&                          \
         &(w)->pool->workers[(w)->slot] == (w))

/* ---- pool_core.c ------------------------------------------------------------ */

/* 1 in a forked child that holds a copy of its parent's pool: its loop
 * thread does not exist there, and every call on it fails. */
int ff__pool_is_foreign(ff_pool_t *pool);
int ff__pool_loop_thread_is_current(ff_pool_t *pool);
void ff__pool_retain(ff_pool_t *pool);
/* Frees the pool with the last reference. */
void ff__pool_release(ff_pool_t *pool);
const ff_pool_options_t *ff__pool_options(ff_pool_t *pool);
/* The close callback of the pool's own handles: the loop's reference goes
 * with the last. */
void ff__pool_on_handle_closed(uv_handle_t *handle);

char *ff__copy_bytes(const void *data, size_t length);
void ff__done_init(ff__done_t *done);
/* Settles a task under the lock (its result is length bytes at offset in
 * block, which it takes over); it is published once the lock is gone. */
void ff__pool_settle_at(ff__done_t *done, ff_task_t *task, int status,
                        char *block, size_t offset, size_t length,
                        const ff_exit_t *exit);
void ff__pool_settle(ff__done_t *done, ff_task_t *task, int status,
                     char *result, size_t length, const ff_exit_t *exit);
/* Fails a task with code; with the pool's own error, its detail and exit
 * too. */
void ff__pool_fail_task(ff_pool_t *pool, ff_task_t *task, int code,
                        const ff_exit_t *exit, ff__done_t *done);
/* Notes a worker exit for on_worker_exit. */
void ff__done_note_exit(ff__done_t *done, const ff_exit_t *how,
                        bool expected);
/* Records the pool's first error (with its detail and the exit that caused
 * it) and stops accepting tasks; failing its tasks is ff__pool_fail's. */
void ff__pool_set_error(ff_pool_t *pool, int code, const void *detail,
                        size_t length, const ff_exit_t *exit);
/* Releases the lock, then publishes what done holds: exits reported,
 * callbacks handed to the callback thread, waiters woken. */
void ff__pool_unlock_publish(ff_pool_t *pool, ff__done_t *done);

/* ---- pool_slot.c: one worker slot, the parent's side ------------------------ */

/* Starts a worker process in the slot through the zygote; the loop calls
 * on_doorbell when the worker rings. 0, or the code to fail the pool with.
 * In the loop thread. */
int ff__slot_spawn(ff__worker_t *w, uv_poll_cb on_doorbell);
/* Lets the slot's process go: its handles, rings, segment, pidfd. */
void ff__slot_release_process(ff__worker_t *w);
void ff__slot_fail_in_flight(ff__worker_t *w, int code, const ff_exit_t *exit,
                             ff__done_t *done);
void ff__slot_kill(ff__worker_t *w);
/* Tells the worker to exit (it has nothing left to run). */
void ff__slot_send_stop(ff__worker_t *w);
/* Kills the worker if the task it runs now was killed (ff_task_kill). */
void ff__slot_kill_if_head_killed(ff__worker_t *w);
/* Reads the messages the worker pushed, within one drain's bounds (all,
 * with unbounded): true if some were left for the next round. A failed
 * READY is noted in done->fail_code. */
bool ff__slot_drain(ff__worker_t *w, ff__done_t *done, bool unbounded);
/* Goes on writing a task that did not fit the ring. */
void ff__slot_flush(ff__worker_t *w);
void ff__slot_send_task(ff__worker_t *w, ff_task_t *task);
/* Writes the arena reports for the worker into its task ring. */
void ff__slot_write_reports(ff__worker_t *w);
/* Wakes the worker if records were written for it. */
void ff__slot_wake(ff__worker_t *w);
/* The worker exited with wstatus: what it left is drained, its tasks go
 * back to the queue or fail, its exit is kept and noted in done, and its
 * process is released. *was_ready: it had become ready. */
void ff__slot_exited(ff__worker_t *w, int wstatus, ff__done_t *done,
                     ff_exit_t *how, bool *was_ready);

/* ---- pool_dispatch.c: scheduling -------------------------------------------- */

/* Drains every slot within the drain's bounds (failing the pool if one
 * found it must fail). */
void ff__pool_drain(ff_pool_t *pool, ff__done_t *done);
/* Hands queued tasks to ready workers, and retires or starts workers. */
void ff__pool_dispatch(ff_pool_t *pool, ff__done_t *done);
/* Fails the pool with code: its queued and running tasks fail, its
 * workers are killed. */
void ff__pool_fail(ff_pool_t *pool, int code, const void *detail,
                   size_t length, const ff_exit_t *exit, ff__done_t *done);
/* Fails the pool if a slot noted that it must (done->fail_code). */
void ff__pool_fail_noted(ff_pool_t *pool, ff__done_t *done);
void ff__pool_terminate_locked(ff_pool_t *pool, ff__done_t *done);
/* Once a closing pool has run its last task and its workers are gone, the
 * zygote is told to exit. */
void ff__pool_maybe_finish(ff_pool_t *pool);
/* Closes the control socket (asks the loop to, from another thread). */
void ff__pool_close_ctl(ff_pool_t *pool);
/* Starts a worker in slot w, failing the pool if it cannot. In the loop
 * thread. */
void ff__pool_spawn(ff_pool_t *pool, ff__worker_t *w, ff__done_t *done);
/* The zygote reported the exit of w's worker: the slot is cleared, and the
 * worker replaced if the pool still needs one. */
void ff__pool_worker_exited(ff_pool_t *pool, ff__worker_t *w, int wstatus,
                            ff__done_t *done);
/* The loop's handlers of the pool's wakeup (uv_async) and of the moment
 * before the loop sleeps (uv_prepare). Without the lock. */
void ff__pool_on_wakeup(uv_async_t *handle);
void ff__pool_on_arm(uv_prepare_t *handle);
/* For task.c (through ff__task_host_t); without the lock. */
void ff__pool_poll(ff_pool_t *pool);
int ff__pool_wait(ff_pool_t *pool, _Atomic uint32_t *word, uint32_t value,
                  _Atomic uint32_t *sleepers, uint64_t deadline_ns);
void ff__pool_wake(ff_pool_t *pool);
void ff__pool_kill_task(ff_pool_t *pool, ff_task_t *task);

#endif /* FF_POOL_INTERNAL_H */
