/* forkfarm: a process-pool runtime.
 *
 * A pool owns N worker processes. Each worker runs a C callback on byte
 * messages: the caller submits a message, a worker turns it into a result, and
 * the caller collects the result. Workers are forked by a single-threaded
 * zygote process, so a replacement worker costs one fork of a small process.
 * One libuv loop thread per process does the bookkeeping of every pool:
 * dispatch, result collection, worker exit detection and replacement.
 *
 * Conventions (after libuv): public names start with ff_, types end in _t,
 * and functions return 0 or a negative errno value; ff_strerror() names it.
 * This is the only header a user includes.
 */
#ifndef FORKFARM_H
#define FORKFARM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FF_VERSION_MAJOR, _MINOR, _PATCH and FF_VERSION_STRING: the version of
 * these headers, generated from the project version. */
#include "forkfarm_version.h"

/* Marks the public functions: with FF_BUILDING_SHARED (the build of
 * libforkfarm.so, whose other symbols are hidden) they are exported;
 * elsewhere, in the static library and in the programs that include this
 * header, it adds nothing. */
#if defined(FF_BUILDING_SHARED) && (defined(__GNUC__) || defined(__clang__))
#define FF_API __attribute__((visibility("default")))
#else
#define FF_API
#endif

/* The version of the library, as FF_VERSION_STRING was when it was built
 * ("0.1.0"): a program may be running against a newer library than the
 * headers it was compiled with. */
FF_API const char *ff_version(void);

/* Error codes that are not errno values. They are negative, like the errno
 * codes the functions return, and well outside errno's range. */
#define FF_ERRNO_MAP(XX)                                                     \
  XX(WORKERLOST, -30001, "the worker running the task exited")               \
  XX(INITFAILED, -30002, "the worker initializer failed")                    \
  XX(ZYGOTELOST, -30003, "the pool's zygote process exited")                 \
  XX(CLOSED, -30004, "the pool is closed")                                   \
  XX(CANCELED, -30005, "the task was cancelled before it ran")               \
  XX(TASKFAILED, -30006, "the task callback returned an error")              \
  XX(PROTOCOL, -30007, "a corrupt or truncated message was received")     \
  XX(FOREIGN, -30008,                                                        \
     "the pool belongs to the process that created it, not to this fork "    \
     "of it")                                                                \
  XX(PENDING, -30009, "the task has not finished yet")                       \
  XX(MSGSIZE, -30010,                                                        \
     "a message was larger than the pool's max_message_size")                \
  XX(QUOTA, -30011,                                                          \
     "the worker's quota of shared segments made through its parent is "     \
     "used up")

typedef enum {
#define XX(name, value, text) FF_E##name = value,
  FF_ERRNO_MAP(XX)
#undef XX
} ff_errno_t;

/* A process of the pool (the zygote or a worker) could not be started:
 * fork, or a descriptor or memory it needed, failed with errno e. The code
 * carries e, so that the caller can tell a process limit (EAGAIN) from a
 * descriptor limit (EMFILE) or memory (ENOMEM). */
#define FF_ESPAWN_BASE (-31000)
#define FF_ESPAWN(e) (FF_ESPAWN_BASE - (e))
/* The errno of an FF_ESPAWN code, else 0. */
#define FF_SPAWN_ERRNO(code)                                                 \
  ((code) < FF_ESPAWN_BASE && (code) > FF_ESPAWN_BASE - 4096                 \
       ? FF_ESPAWN_BASE - (code)                                             \
       : 0)

/* Returns a static, human-readable description of a return code: one of the
 * FF_E codes above or a negative errno value. */
FF_API const char *ff_strerror(int code);

/* A growable output buffer handed to the work callback in the worker. The
 * runtime reuses it across tasks, so a callback that fills it does not
 * allocate per task. */
typedef struct ff_buf_s {
  char *base;
  size_t len;
  size_t capacity;
} ff_buf_t;

/* Makes room for len bytes, sets buf->len = len, and returns buf->base (NULL
 * when out of memory). */
FF_API void *ff_buf_reserve(ff_buf_t *buf, size_t len);
/* Copies len bytes into the buffer: 0 or -ENOMEM. */
FF_API int ff_buf_set(ff_buf_t *buf, const void *data, size_t len);

/* Runs in a worker for each task. It reads the input message (never NULL,
 * even when empty) and writes the result into out. context is what
 * define_context made of the task's context in this worker, or NULL for a
 * task without one. It returns 0 on success; a negative value fails the task
 * with FF_ETASKFAILED and the result bytes are delivered as the error detail. */
typedef int (*ff_work_cb)(void *arg, void *context, const void *input,
                          size_t input_len, ff_buf_t *out);

/* Runs in a worker the first time it sees a context (see ff_context_create):
 * turns its bytes into what work() receives (a decoded function, say).
 * Returning NULL fails every task of the context in this worker with
 * FF_ETASKFAILED and the bytes written to error as the detail. */
typedef void *(*ff_context_define_cb)(void *arg, const void *data,
                                      size_t length, ff_buf_t *error);
/* Frees what define_context returned, when the worker evicts it. */
typedef void (*ff_context_free_cb)(void *arg, void *context);

/* Runs once in each new worker before its first task. A non-zero return
 * fails the pool with FF_EINITFAILED; the bytes written to detail (may be
 * left empty) are kept as the error detail. */
typedef int (*ff_worker_init_cb)(void *arg, ff_buf_t *detail);

/* Runs in a worker just before it exits normally (to flush buffers). */
typedef void (*ff_worker_exit_cb)(void *arg);

/* Hooks around the forks, so that an embedding runtime (a Python
 * interpreter) can keep its own state consistent across them. Any of them
 * may be NULL. prepare and parent run in the pool's creator around the fork
 * of the zygote; child runs in each worker, once, as if the worker had been
 * forked from the creator at that moment (the zygote in between runs none
 * of them, and no code of the embedding runtime). */
typedef struct ff_fork_hooks_s {
  void (*prepare)(void *arg);
  void (*parent)(void *arg);
  void (*child)(void *arg);
  void *arg;
} ff_fork_hooks_t;

/* Forks the calling process as a pool forks its zygote: the runtime's loop
 * thread, if this process runs one, is parked where it holds no lock, and
 * the hooks run around the fork (prepare and parent in the caller, child in
 * the child). The callback thread runs the embedder's code (completion
 * callbacks), which may hold the embedder's locks: it is kept between two
 * batches of callbacks, waiting callbacks_wait seconds at most for the one
 * it runs (FF_FORK_CALLBACK_WAIT is a good bound: a batch that runs longer
 * makes the caller as good as multi-threaded); negative: the fork does not
 * wait for it. Returns the child's pid, 0 in the child, -EBUSY (and no
 * fork) when the wait ran out, or another negative errno (the parent hook
 * has run). As after any fork, the child has one thread and starts a
 * runtime of its own if it makes a pool. */
#define FF_FORK_CALLBACK_WAIT 1.0
FF_API pid_t ff_fork(const ff_fork_hooks_t *hooks, double callbacks_wait);

typedef struct ff_pool_s ff_pool_t;
typedef struct ff_task_s ff_task_t;
typedef struct ff_context_s ff_context_t;
typedef struct ff_queue_s ff_queue_t;

/* How a worker ended, as reported by the pool. */
typedef struct ff_exit_s {
  pid_t pid;
  int exit_code;   /* the exit status when the worker exited, else -1 */
  int term_signal; /* the signal that killed it, else 0 */
} ff_exit_t;

/* Runs in the loop thread after a worker exited, before its replacement is
 * started. expected is 1 when the pool asked the worker to leave. */
typedef void (*ff_worker_exit_notify_cb)(ff_pool_t *pool, const ff_exit_t *how,
                                         int expected, void *arg);

/* Runs for a batch of finished tasks that were submitted with
 * FF_SUBMIT_NOTIFY, before their waiters are woken: the place to run
 * completion callbacks under one lock of an embedding runtime. It runs on
 * the runtime's callback thread, in the order the tasks finished, or, for
 * a task a thread waits for in ff_task_wait, in that thread; never on the
 * loop thread, so a slow callback delays only other callbacks. */
typedef void (*ff_complete_cb)(ff_task_t **tasks, size_t count, void *arg);

/* A zygote started by someone else, for a pool to adopt instead of forking
 * its own from the caller: a process that runs ff_zygote_serve() on the
 * other end of ctl. A fork server makes one this way for a threaded parent,
 * which must not fork. */
typedef struct ff_zygote_s {
  int ctl;   /* a SOCK_SEQPACKET socket; -1: the pool forks its zygote */
  pid_t pid;
  int pidfd; /* a pidfd of pid: how the pool notices the zygote's exit */
} ff_zygote_t;

typedef struct ff_pool_options_s {
  unsigned workers;                /* the number of worker processes, >= 1 */
  ff_work_cb work;                 /* required */
  void *work_arg;                  /* passed to work and the context calls */
  ff_context_define_cb define_context; /* required to submit with contexts */
  ff_context_free_cb free_context; /* may be NULL */
  ff_worker_init_cb worker_init;   /* may be NULL */
  ff_worker_exit_cb worker_exit;   /* may be NULL */
  void *worker_arg;                /* passed to worker_init and worker_exit */
  unsigned max_tasks_per_worker;   /* 0: no limit; else the worker is replaced
                                      after this many tasks */
  ff_fork_hooks_t fork_hooks;
  /* Seconds a task may run before its worker is stopped (SIGTERM, then
   * SIGKILL kill_grace seconds later, then a replacement) and the task
   * finishes with -ETIMEDOUT; 0: no limit. ff_pool_submit_with sets it
   * per task. */
  double task_timeout;
  double kill_grace;               /* default 1 s */
  /* How many times a task whose worker died under it (not one killed for
   * its timeout or by ff_task_kill) runs again on another worker before it
   * fails with FF_EWORKERLOST; 0 by default. */
  unsigned task_retries;
  /* A worker whose private memory (resident pages it does not share with
   * the process it was forked from) exceeds this many bytes after a task
   * finishes the tasks it holds and is replaced; 0: no limit. */
  size_t max_memory_per_worker;
  ff_complete_cb on_complete;      /* may be NULL */
  ff_worker_exit_notify_cb on_worker_exit; /* may be NULL */
  void *notify_arg;                /* passed to on_complete, on_worker_exit */
  /* The zygote to adopt (ctl >= 0); the pool owns its two descriptors from
   * ff_pool_create() on, whether it succeeds or not. */
  ff_zygote_t zygote;
  /* The largest result a worker may send, in bytes (0: a quarter of the
   * machine's memory). A worker's larger result fails its task with
   * FF_EMSGSIZE; a worker that streams more than this kills itself in the
   * parent's eyes: it is killed, and its task fails the same way. */
  size_t max_message_size;
  /* Segments every worker of the pool may open from its creator, besides
   * those the messages it is given name and those made for it: what the
   * initializer's arguments name, for workers that did not inherit them
   * (a fork server's). The pool copies the list. */
  const uint64_t *lendable;
  size_t lendable_count;
  /* Nonzero: no worker starts with the pool; one starts when a task is
   * queued that no worker, ready or starting, will take, up to `workers`,
   * and a worker that exits is replaced only when tasks wait for one (how
   * ProcessPoolExecutor spawns its workers with spawn and forkserver). */
  int start_on_demand;
  /* Nonzero: each worker's standard output and error (descriptors 1 and 2,
   * which Python and native code write alike) go to files of the pool
   * rather than to the parent's, with a third stream for records
   * (ff_worker_output_fd). What a task wrote comes back with its outcome
   * (ff_task_output), even when its worker was killed; what no task owns,
   * with ff_pool_take_output. */
  int capture_output;
} ff_pool_options_t;

/* The streams of a worker whose output the pool captures. */
#define FF_OUTPUT_STDOUT 0u
#define FF_OUTPUT_STDERR 1u
#define FF_OUTPUT_RECORDS 2u /* whatever the embedding runtime writes there */
#define FF_OUTPUT_STREAMS 3u

/* Fills options with the defaults: one worker per CPU and no callbacks. */
FF_API void ff_pool_options_init(ff_pool_options_t *options);

/* Creates a pool: forks its zygote from the calling thread (so the workers
 * see this process as it is now) and starts the workers. Returns 0 and sets
 * *pool, or a negative error: -EINVAL for bad options, or the error of the
 * failed fork or system call. */
FF_API int ff_pool_create(ff_pool_t **pool, const ff_pool_options_t *options);

/* Runs the calling process as a pool's zygote (see ff_zygote_t), until the
 * other end of ctl closes: then kills the workers it forked and exits. The
 * process must be single-threaded. In each worker the child fork hook runs
 * once; the prepare and parent hooks are not called. Returns only on bad
 * arguments, with -EINVAL. */
FF_API int ff_zygote_serve(const ff_pool_options_t *options, int ctl);

#define FF_SUBMIT_NOTIFY 1u /* call options.on_complete when it finishes */
/* With FF_SUBMIT_NOTIFY: a thread that waits for the task (ff_task_wait)
 * may run its on_complete itself, at once, instead of waiting for the
 * callback thread to get to it. Its callback then runs out of completion
 * order, in that thread: for a future whose result a caller waits for, not
 * for callbacks whose order is promised. */
#define FF_SUBMIT_CLAIMABLE 2u

/* Queues a message for the workers. The runtime copies the message. When
 * context is not NULL, the task runs with it: its bytes travel to each
 * worker once, before the first of its tasks there, not with every task.
 * On success *task holds a reference the caller must ff_task_release().
 * When queue is not NULL the finished task is also pushed onto it. Errors:
 * FF_ECLOSED after ff_pool_close() or ff_pool_terminate(), -EINVAL, -ENOMEM. */
FF_API int ff_pool_submit(ff_pool_t *pool, ff_context_t *context,
                          const void *message, size_t length, unsigned flags,
                          ff_queue_t *queue, void *user_data, ff_task_t **task);

/* What one task may override of its pool's options. */
typedef struct ff_submit_options_s {
  /* Seconds the task may run, counted from when its worker starts it (0:
   * no limit); negative: the pool's task_timeout. */
  double timeout;
  /* Runs again after a worker died under it; negative: the pool's
   * task_retries. */
  int retries;
} ff_submit_options_t;

/* The pool's options for every field. */
#define FF_SUBMIT_OPTIONS_DEFAULT ((ff_submit_options_t){-1.0, -1})

/* ff_pool_submit with options of its own for this task. -EINVAL for a NaN
 * timeout. */
FF_API int ff_pool_submit_with(ff_pool_t *pool, ff_context_t *context,
                               const void *message, size_t length,
                               unsigned flags,
                               const ff_submit_options_t *options,
                               ff_queue_t *queue, void *user_data,
                               ff_task_t **task);

/* A context: bytes shared by many tasks (the function of a map), sent to a
 * worker once and kept there while it is among the worker's recent ones.
 * The runtime copies data. Tasks hold their own references. */
FF_API int ff_context_create(ff_pool_t *pool, const void *data, size_t length,
                             ff_context_t **context);
FF_API void ff_context_release(ff_context_t *context);

/* Stops accepting tasks; the queued ones still run, then the workers exit. */
FF_API int ff_pool_close(ff_pool_t *pool);

/* Stops at once: queued tasks fail with FF_ECANCELED, running ones with
 * FF_EWORKERLOST, and the workers and the zygote are killed. */
FF_API int ff_pool_terminate(ff_pool_t *pool);

/* Waits until every worker is done, after ff_pool_close() or
 * ff_pool_terminate(). After a close, a worker is done once it has run its
 * last code and said so (its exit hook included), or has been reaped:
 * the reaping of the workers (ff_pool_worker_exit() has their statuses
 * once the zygote reports them) and the zygote's exit go on in the loop
 * thread, and ff_pool_destroy() waits for them. After a terminate, every
 * worker has been reaped. timeout
 * is in seconds, negative for no limit. Returns 0, -ETIMEDOUT, -EINTR (a
 * signal arrived: call again), or -EINVAL when the pool is still open. */
FF_API int ff_pool_join(ff_pool_t *pool, double timeout);

/* Terminates the pool if needed, waits for its processes to be reaped
 * (unless called from the loop thread, in a callback), then frees it. Tasks
 * keep their own references and stay valid. */
FF_API void ff_pool_destroy(ff_pool_t *pool);

/* Like ff_pool_destroy, but returns at once: the loop thread terminates
 * the pool, reaps its processes and frees it. For finalizers, which must
 * not wait for a thread that may be waiting for them. */
FF_API void ff_pool_abandon(ff_pool_t *pool);

/* Closes the pool and sends signum to every worker: the tasks they are
 * running fail as their workers' exits are reported (FF_EWORKERLOST, with
 * the exit status; retries are not made), and the others, queued in the
 * pool or in a worker's ring behind the one it runs, finish with
 * FF_ECANCELED. A worker whose pid is not known yet gets SIGKILL when it
 * is. ff_pool_join() then returns once the workers are gone. Returns 0,
 * or -EINVAL for a bad signal. */
FF_API int ff_pool_stop_workers(ff_pool_t *pool, int signum);

/* What ff_pool_set_idle_limit does to a pool left idle for its limit. */
enum {
  /* Closes it, as ff_pool_close: the workers and the zygote exit, and the
   * pool lets its handles and descriptors go once the zygote is reaped. */
  FF_IDLE_CLOSE = 0,
  /* Stops its idle workers (pools with start_on_demand only): the pool
   * stays open and starts workers again when tasks come. */
  FF_IDLE_STOP_WORKERS = 1,
};

/* Arms (seconds > 0) or disarms (seconds < 0) the pool's idle limit: once
 * the pool has had no task queued or running, and none submitted or
 * finished, for at least seconds (checked every seconds, by the loop
 * thread), it does what action says. A pool kept for reuse closes this way
 * when nobody takes it. Arming again restarts the count. Returns 0, or
 * FF_ECLOSED when the pool no longer accepts tasks (then nothing is
 * armed: a disarm that says so lost the race with its idle close), or
 * -EINVAL (a bad action, FF_IDLE_STOP_WORKERS on a pool that does not
 * start on demand). */
FF_API int ff_pool_set_idle_limit(ff_pool_t *pool, double seconds, int action);

/* Writes up to capacity worker pids into pids and returns how many workers
 * are alive now (one that has said it exits is not: see ff_pool_join). */
FF_API size_t ff_pool_worker_pids(ff_pool_t *pool, pid_t *pids,
                                  size_t capacity);

/* The worker processes the pool has started and not yet seen exit or say
 * that they exit, those whose pid the zygote has not reported yet included
 * (and, with start_on_demand, those about to be started). */
FF_API size_t ff_pool_worker_count(ff_pool_t *pool);

/* A new descriptor (close-on-exec) of the pidfd of the live worker process
 * pid of this pool, which the zygote opened before it could be reaped: it
 * names that process, never a later one with the same pid. Returns it, or
 * -ENOENT (pid is not a live worker of the pool), or -errno. */
FF_API int ff_pool_worker_pidfd(ff_pool_t *pool, pid_t pid);

/* How the worker process pid of this pool ended, if it is among the last
 * FF_EXITS_KEPT exits of the slot it ran in: 0 and *how filled, or -ENOENT
 * (it runs, or exited long ago, or the pool killed it at its end, when the
 * zygote no longer reports exits). */
#define FF_EXITS_KEPT 4
FF_API int ff_pool_worker_exit(ff_pool_t *pool, pid_t pid, ff_exit_t *how);

/* In a worker process: the slot it fills, from 0 to workers - 1, which a
 * replacement inherits from the worker it replaces; -1 outside workers. */
FF_API int ff_worker_slot(void);

/* In a worker of a pool that captures output: the descriptor of stream
 * (FF_OUTPUT_STDOUT is 1 and FF_OUTPUT_STDERR 2 unless the code run there
 * moved them); -1 elsewhere. A task's writes must be done when work()
 * returns: the runtime reads the streams' ends then. */
FF_API int ff_worker_output_fd(unsigned stream);

/* Appends to *into what the pool's workers wrote to stream that no task
 * owns (written after a task's outcome was settled: by a worker that was
 * terminated, say, or between tasks and its exit), and forgets it. 0 or
 * -ENOMEM (then the bytes stay). */
FF_API int ff_pool_take_output(ff_pool_t *pool, unsigned stream,
                               ff_buf_t *into);

/* The pool's error, once it cannot run tasks any more (FF_EINITFAILED,
 * FF_EZYGOTELOST), else 0. */
FF_API int ff_pool_error(ff_pool_t *pool);

/* Copies the detail of the pool's error (for FF_EINITFAILED, the bytes the
 * worker initializer wrote) into buf, up to capacity bytes, and returns its
 * full length; 0 when there is none. */
FF_API size_t ff_pool_error_detail(ff_pool_t *pool, void *buf, size_t capacity);

/* What a pool has done so far, pool-wide. */
typedef struct ff_pool_stats_s {
  uint64_t queued;    /* submitted, not yet sent to a worker */
  uint64_t in_flight; /* sent to a worker, not finished */
  uint64_t done;      /* finished with a result */
  uint64_t failed;    /* finished otherwise (an error, a lost worker, ...) */
} ff_pool_stats_t;

/* One worker slot's figures, across the processes that filled it. */
typedef struct ff_worker_stats_s {
  pid_t pid;              /* the slot's process now, 0 between two */
  unsigned restarts;      /* processes that replaced the first */
  uint64_t tasks_done;    /* results returned */
  uint64_t busy_ns;       /* running tasks, as the workers measured */
  uint64_t idle_ns;       /* the rest of the time since the first started */
  uint64_t bytes_sent;    /* of task messages */
  uint64_t bytes_received; /* of results */
  uint64_t current_task;  /* the id of the task it runs, 0: none */
  void *current_user_data; /* that task's user data */
  uint64_t current_ns;    /* how long that task has run */
} ff_worker_stats_t;

/* Fills *stats and up to capacity worker slots; returns the number of
 * slots. */
FF_API size_t ff_pool_stats(ff_pool_t *pool, ff_pool_stats_t *stats,
                            ff_worker_stats_t *workers, size_t capacity);

/* The worker exit that failed the pool (a worker that kept dying before it
 * was ready, say); pid 0 when no exit did. */
FF_API void ff_pool_error_exit(ff_pool_t *pool, ff_exit_t *how);

/* Waits for the task to finish. timeout is in seconds, negative for no limit.
 * Returns 0 when it finished, -ETIMEDOUT, or -EINTR when a signal arrived. */
FF_API int ff_task_wait(ff_task_t *task, double timeout);

/* 1 when the task has finished, else 0. */
FF_API int ff_task_done(const ff_task_t *task);

/* Asks for a queued task to be dropped. Returns 0 when it will not run (it
 * finishes with FF_ECANCELED), -EBUSY when it already went to a worker. */
FF_API int ff_task_cancel(ff_task_t *task);
/* Stops the task wherever it is: a queued one is dropped as by
 * ff_task_cancel, and the worker running one is killed (and replaced; tasks
 * queued behind it go to other workers). The task finishes with
 * FF_ECANCELED, unless its result came first. 0, or -EALREADY when it has
 * finished already. */
FF_API int ff_task_kill(ff_task_t *task);

/* The outcome of a finished task: 0 when the worker returned a result, or an
 * error code (FF_EWORKERLOST, FF_ETASKFAILED, FF_ECANCELED, FF_EINITFAILED,
 * FF_EZYGOTELOST, FF_EMSGSIZE, -ETIMEDOUT when it ran past its timeout),
 * or FF_EPENDING while it is still running. The outcome can be read
 * from the completion callback on, just before waiters are woken. */
FF_API int ff_task_status(const ff_task_t *task);

/* The result bytes of a finished task (the error detail on FF_ETASKFAILED or
 * FF_EINITFAILED; on FF_EMSGSIZE three uint64_t: the result's size, 1 if
 * that is its whole size or 0 if only what had arrived when the worker was
 * stopped, and the limit). Valid while the caller holds its reference. */
FF_API const void *ff_task_result(const ff_task_t *task, size_t *length);

/* The result's out-of-band buffers (an arena frame's references) were
 * received by a decoder (ff_arena_receive), which gives each back when it
 * lets go of it: the task's release must not give them back as well, or
 * the worker would reuse memory that a decoded value still shows. */
FF_API void ff_task_result_taken(ff_task_t *task);

/* The result bytes before offset will not be read again: the memory of
 * the pages they fill goes back to the system (reading them again gives
 * zeros). A big result decoded as it is read costs one copy of memory,
 * not two. */
FF_API void ff_task_result_consumed(ff_task_t *task, size_t offset);

/* How long the worker spent in work() for this task, in nanoseconds (0
 * until it finished, or when it did not run). */
FF_API uint64_t ff_task_run_ns(const ff_task_t *task);

/* How the worker ended, when the status is FF_EWORKERLOST. */
FF_API const ff_exit_t *ff_task_exit(const ff_task_t *task);

/* What the task's worker wrote to stream (FF_OUTPUT_*) while it ran the
 * task, when the pool captures output: its length in *length, and NULL
 * when it wrote nothing. Readable from the completion callback on. */
FF_API const void *ff_task_output(const ff_task_t *task, unsigned stream,
                                  size_t *length);

/* The slot (0 to workers - 1) of the worker whose output the task owns,
 * or -1 when it owns none. */
FF_API int ff_task_output_slot(const ff_task_t *task);

FF_API void *ff_task_user_data(const ff_task_t *task);
FF_API uint64_t ff_task_id(const ff_task_t *task);

FF_API void ff_task_retain(ff_task_t *task);
FF_API void ff_task_release(ff_task_t *task);

/* A completion queue: tasks submitted with it are pushed onto it when they
 * finish, in the order they finish. Any thread may pop. */
FF_API int ff_queue_create(ff_queue_t **queue);
/* Drops the owner's queue, releasing the tasks still on it. Tasks still
 * running keep it alive; when they finish they are simply not queued. */
FF_API void ff_queue_destroy(ff_queue_t *queue);
/* Pops the next finished task, waiting up to timeout seconds (negative: no
 * limit). Returns 0 and a task reference the caller releases, -ETIMEDOUT or
 * -EINTR. */
FF_API int ff_queue_pop(ff_queue_t *queue, double timeout, ff_task_t **task);

/* ---- Shared-memory segments ---------------------------------------------
 * A segment is an anonymous memfd (0600, never a name in /dev/shm) that the
 * kernel frees with its last descriptor or mapping, SIGKILL included. The
 * process that creates one lends it, by id, to the workers of its pools: a
 * worker opens it with ff_segment_open, which asks the parent for the
 * descriptor over a socket (SCM_RIGHTS) unless the worker inherited it. */

/* In a worker: the parent creates the segment, so that the parent can open
 * it too (a worker's outgoing buffers). Elsewhere the flag changes nothing. */
#define FF_SEGMENT_PARENT 1u

/* Creates a segment of size bytes. *fd is the caller's own descriptor (map
 * it, then close it); the segment stays open by *id until ff_segment_forget.
 * 0, or -EINVAL, -ENOMEM, a negative errno. */
FF_API int ff_segment_create(size_t size, unsigned flags, uint64_t *id,
                             int *fd);
/* A new descriptor of the segment id: this process's own, one it inherited,
 * or (in a worker) the parent's. -ENOENT if nobody lends it. */
FF_API int ff_segment_open(uint64_t id, int *fd);
/* Stops lending the segment. Descriptors and mappings handed out stay
 * valid; the memory goes with the last of them. In a worker, for a segment
 * its parent made for it, the parent is told (after the worker's current
 * result), and stops lending it once nothing else holds it. */
FF_API int ff_segment_forget(uint64_t id);
/* Keeps a segment this process lends (one it opened from a worker, say)
 * lendable until the matching ff_segment_release, even after its creator
 * forgets it. -ENOENT if this process does not lend it. */
FF_API int ff_segment_retain(uint64_t id);
FF_API void ff_segment_release(uint64_t id);
/* Makes segment id, received as fd from the process that lends it (a fork
 * server's child gets its arguments' segments so), this process's own to
 * open and lend by that id; takes over fd, closing it if the id is known
 * here already. 0, -EINVAL, or a negative errno. */
FF_API int ff_segment_adopt(uint64_t id, int fd);

/* ---- Segments with a header (segment.c) ----------------------------------
 * A segment that carries data another process maps by id (a Python shared
 * array) starts with a header page: a magic, its id, its size (the bytes
 * after the header) and a released flag its creator sets when it lets go,
 * which tells the caches of other processes to drop it. Its bytes start
 * FF_SEGMENT_HEADER bytes after the mapping's base. */
#define FF_SEGMENT_HEADER 4096u

/* Creates a segment of size bytes after its header (flags as for
 * ff_segment_create; size may be 0), maps the header and the first mapped
 * of those bytes (all of them when mapped >= size) at *base, and writes
 * the header. 0, or a negative errno (nothing is left behind). */
FF_API int ff_segment_create_mapped(size_t size, unsigned flags,
                                    size_t mapped, uint64_t *id, void **base);
/* Maps segment id (ff_segment_open) as ff_segment_create_mapped did: the
 * header and the first mapped bytes after it, at *base; *size is the size
 * its header and its file agree on. -ENOENT if nobody lends it,
 * FF_EPROTOCOL if its header is missing or wrong (a segment made
 * otherwise), or a negative errno. */
FF_API int ff_segment_open_mapped(uint64_t id, size_t mapped, void **base,
                                  size_t *size);
/* Unmaps what ff_segment_create_mapped or _open_mapped mapped (mapped as
 * clamped to the segment's size); NULL does nothing. */
FF_API void ff_segment_unmap(void *base, size_t mapped);
/* The id and size a mapped header says now: untrusted when another process
 * can write it (ff_segment_open_mapped checked them once). */
FF_API uint64_t ff_segment_header_id(const void *base);
FF_API uint64_t ff_segment_header_size(const void *base);
/* Sets the released flag, for every process that maps the segment. */
FF_API void ff_segment_mark_released(void *base);
/* 1 once the flag is set, else 0. */
FF_API int ff_segment_released(const void *base);

/* ---- The arena: large buffers out of band --------------------------------
 * A sender copies a large buffer into its arena once, and its message
 * carries an ff_arena_ref_t instead of the bytes; the receiver reads the
 * bytes in place. Arena memory is reused, so its pages stay faulted in.
 *
 * The sender keeps its slots in private memory and never reads anything a
 * receiver can write. A receiver maps a reference (ff_arena_receive) and
 * gives it back (ff_arena_release) by reporting it to its sender through
 * the pool: how says which way, FF_ARENA_FROM_PARENT in a worker reading
 * its parent's message, FF_ARENA_FROM_WORKER in a parent reading a
 * worker's result. A report counts only from the receiver the slot was
 * given to. One never received is freed by ff_arena_cancel (sender) or
 * ff_arena_discard (would-be receiver). */

typedef struct ff_arena_s ff_arena_t;

/* Travels inside messages, as is (32 bytes). */
typedef struct ff_arena_ref_s {
  uint64_t chunk;  /* the segment id of the arena chunk */
  uint64_t offset; /* of the bytes, from the start of the chunk */
  uint64_t length;
  uint16_t slot;
  uint16_t flags; /* FF_ARENA_REF_PRIVATE */
  uint32_t generation;
} ff_arena_ref_t;

/* Others may hold the same bytes (other messages of a map, or the sender,
 * whose array they are): the receiver maps them privately, so that what it
 * writes stays its own, and nobody writes them through the chunk. */
#define FF_ARENA_REF_PRIVATE 1u

/* A worker's result arena: its one receiver is the parent, whose reports
 * free what it sent (with FF_SEGMENT_PARENT, so that the parent can map
 * the chunks). */
#define FF_ARENA_TO_PARENT 2u
/* Where a receiver's reference came from, and so where its report goes. */
#define FF_ARENA_FROM_WORKER 0u
#define FF_ARENA_FROM_PARENT 1u

/* An arena whose chunks are made with the segment flags in flags
 * (FF_SEGMENT_PARENT in a worker, so that the parent can read them), and
 * FF_ARENA_TO_PARENT or not; at least chunk_size bytes each, and at most
 * limit bytes in all. */
FF_API int ff_arena_create(ff_arena_t **arena, unsigned flags,
                           size_t chunk_size, size_t limit);
/* Unmaps the arena's chunks and stops lending them; receivers keep what
 * they hold. */
FF_API void ff_arena_destroy(ff_arena_t *arena);
/* Releases idle chunks (no message in them waits or is held) beyond the
 * first keep bytes of chunks; returns the bytes released. Receivers unmap
 * a released chunk once they hold nothing in it. */
FF_API size_t ff_arena_trim(ff_arena_t *arena, size_t keep);
/* Reserves length bytes for one message: *data is where to write them.
 * -ENOSPC when the arena is at its limit (send the bytes in band). */
FF_API int ff_arena_alloc(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                          void **data);
/* Another message's reference to the bytes of ref, which must still be
 * held (-ESTALE otherwise): the bytes are copied once for all the
 * messages. */
FF_API int ff_arena_share(ff_arena_t *arena, const ff_arena_ref_t *ref,
                          ff_arena_ref_t *another);
/* The message of ref will never be received: frees its slot, unless it was
 * given to a receiver. */
FF_API void ff_arena_cancel(ff_arena_t *arena, const ff_arena_ref_t *ref);
/* Held regions: memory the sender keeps for its own use (the data of a
 * NumPy array born in shared memory), whole pages. ff_arena_hold reserves
 * length bytes; *fresh says they were never used, so they are zeros. */
FF_API int ff_arena_hold(ff_arena_t *arena, size_t length, ff_arena_ref_t *ref,
                         void **data, int *fresh);
/* The holder lets a held region go; messages that were lent it keep it. */
FF_API void ff_arena_unhold(ff_arena_t *arena, const ff_arena_ref_t *held);
/* A message's reference to length bytes at offset within a held region,
 * without a copy. In a worker's result arena the holder must have let the
 * array go by the time the message leaves (the receiver may write it). In
 * any other arena the holder keeps it: the region is frozen (below) from
 * then on, and the reference is FF_ARENA_REF_PRIVATE. -ESTALE if it is no
 * longer held, -EBUSY if its file no longer has what the holder sees (it
 * wrote since it was frozen, or a child may see it: copy it instead),
 * -EINVAL if out of bounds. */
FF_API int ff_arena_lend(ff_arena_t *arena, const ff_arena_ref_t *held,
                         size_t offset, size_t length, ff_arena_ref_t *lent);
/* Maps a held region privately over its own addresses, so that this
 * process's later writes no longer reach the shared file: before a fork, a
 * child must not share what its parent goes on writing. A region frozen
 * that way is never used again once let go (the child may map it still);
 * it is lent only while this process has not written it since. -EBUSY if
 * the arena stayed busy for a second (it is left as it is). */
FF_API int ff_arena_freeze(ff_arena_t *arena, const ff_arena_ref_t *held);
/* Receiver: points *data at the bytes of ref (how: FF_ARENA_FROM_WORKER or
 * FF_ARENA_FROM_PARENT), mapping the chunk the first time. -ENOENT if the
 * chunk cannot be found, FF_EPROTOCOL if ref is out of bounds or the chunk
 * is not an arena chunk. */
FF_API int ff_arena_receive(const ff_arena_ref_t *ref, unsigned how,
                            void **data);
/* Receiver: done with the bytes of a received ref. */
FF_API void ff_arena_release(const ff_arena_ref_t *ref, unsigned how);
/* Receiver: the bytes of the references this process received and holds
 * now (out-of-band buffers of messages and results it still uses). */
FF_API size_t ff_arena_received_bytes(void);
/* Receiver: ref will never be received here; frees it. */
FF_API void ff_arena_discard(const ff_arena_ref_t *ref, unsigned how);

/* A message that carries arena references or shared segments starts with a
 * frame: the magic, a uint32_t count of references, a uint32_t count of
 * pins, 4 zero bytes, the references, the pins (uint64_t segment ids), then
 * the rest of the message. The pool keeps each pinned segment open, by its
 * id, from the task's submission until it finishes, so that a worker can
 * open it even if its creator let it go in between; it frees the references
 * of a task message that was never received when the task finishes, and
 * those of a result that was never received when the task is released. */
#define FF_ARENA_FRAME_MAGIC "\xff" "FFB"
#define FF_ARENA_FRAME_HEADER 16u

typedef struct ff_arena_frame_s {
  size_t refs; /* arena references */
  size_t pins; /* segment ids */
  size_t body; /* the offset of the rest of the message */
} ff_arena_frame_t;

/* If message starts with a frame: 1 and its layout, 0 without a frame, or
 * FF_EPROTOCOL for a truncated or malformed one. */
FF_API int ff_arena_frame(const void *message, size_t length,
                          ff_arena_frame_t *frame);
/* The i-th reference of a framed message (copied: it may be unaligned). */
FF_API void ff_arena_frame_ref(const void *message, size_t i,
                               ff_arena_ref_t *ref);
/* The i-th pinned segment id of a framed message. */
FF_API uint64_t ff_arena_frame_pin(const void *message,
                                   const ff_arena_frame_t *frame, size_t i);

/* ---- The compact encoding (compact.c) --------------------------------------
 * A map chunk's result that is a list of 64-bit ints or of floats travels
 * as a 16-byte header (the magic, the kind at byte 4, three zero bytes, the
 * count as a uint64_t at byte 8) and the 8-byte values. A pickle never
 * starts with the magic (pickles start with the PROTO opcode), nor does a
 * frame. */
#define FF_COMPACT_MAGIC "\xff" "FFL"
#define FF_COMPACT_HEADER 16u
#define FF_COMPACT_INTS 'i'
#define FF_COMPACT_FLOATS 'd'

/* If data starts with the magic: 1, with the kind and the count of values
 * it holds (its length is exactly the header and count values); 0 without
 * the magic; FF_EPROTOCOL for a truncated or malformed one. */
FF_API int ff_compact_parse(const void *data, size_t length, char *kind,
                            uint64_t *count);

/* ---- process-shared synchronization (sync.c) ------------------------------
 *
 * Locks, semaphores, events and conditions that live in memory the caller
 * shares between processes (a segment, or a MAP_SHARED mapping inherited
 * across fork): futex words, with no kernel object or name to leak. Place
 * them 8-byte aligned, initialize once, and touch them only through these
 * functions. Timeouts are in seconds: negative waits without limit, 0 tries
 * once. Waits return -ETIMEDOUT, or -EINTR when a signal arrives (call
 * again to go on waiting). */

typedef struct ff_mutex_s {
  uint64_t opaque[2];
} ff_mutex_t;

typedef struct ff_semaphore_s {
  uint32_t opaque[4];
} ff_semaphore_t;

typedef struct ff_event_s {
  uint32_t opaque[2];
} ff_event_t;

typedef struct ff_cond_s {
  uint64_t opaque[4];
} ff_cond_t;

/* One wait on a condition: the waiting thread's own (on its stack, say),
 * from ff_cond_prepare to ff_cond_finish. The fields are the runtime's. */
typedef struct ff_cond_waiter_s {
  uint32_t since;
  uint32_t seen;
  int notified;
} ff_cond_waiter_t;

FF_API int ff_mutex_init(ff_mutex_t *mutex);
/* Takes the mutex. If the process that held it died (or is a zombie), the
 * mutex is taken over within about 50 ms of waiting: -EOWNERDEAD, with the
 * mutex held by the caller and the dead holder's pid in *dead_holder (which
 * may be NULL); what it protected may be half-updated. */
FF_API int ff_mutex_acquire(ff_mutex_t *mutex, double timeout,
                            pid_t *dead_holder);
/* Takes the mutex if it is free: 0 or -EBUSY, without a look at the
 * holder. */
FF_API int ff_mutex_try_acquire(ff_mutex_t *mutex);
/* Releases the mutex, whoever holds it (a lock, not an owner-checked
 * mutex: ff_mutex_held_by_caller is there for callers that check).
 * -EPERM when it is not held. */
FF_API int ff_mutex_release(ff_mutex_t *mutex);
/* The pid of the process holding the mutex, or 0. */
FF_API pid_t ff_mutex_holder(const ff_mutex_t *mutex);
/* 1 when the calling thread holds the mutex. */
FF_API int ff_mutex_held_by_caller(const ff_mutex_t *mutex);

/* max: the value release may not exceed (0: no bound). */
FF_API int ff_semaphore_init(ff_semaphore_t *semaphore, unsigned value,
                             unsigned max);
FF_API int ff_semaphore_acquire(ff_semaphore_t *semaphore, double timeout);
/* -EOVERFLOW past the semaphore's bound. */
FF_API int ff_semaphore_release(ff_semaphore_t *semaphore);
FF_API unsigned ff_semaphore_value(const ff_semaphore_t *semaphore);

FF_API int ff_event_init(ff_event_t *event);
FF_API void ff_event_set(ff_event_t *event);
FF_API void ff_event_clear(ff_event_t *event);
FF_API int ff_event_is_set(const ff_event_t *event);
/* 0 once the event is set. */
FF_API int ff_event_wait(ff_event_t *event, double timeout);

/* A condition variable used with a lock the caller holds around prepare,
 * finish and notify (any lock, always the same one: the condition does not
 * take it). A wait is prepare (with the lock held), release the lock, sleep
 * (again after -ETIMEDOUT or -EINTR, to go on waiting), take the lock back,
 * finish. notify(n) wakes up to n of the waits prepared before it, never
 * one prepared after it: a notifier that then waits does not take its own
 * notification back. A waiter killed while it waits never makes a later
 * notify go missing; it may cause one spurious wake-up, once. */
FF_API int ff_cond_init(ff_cond_t *cond);
/* Counts the caller in as a waiter; fills *waiter. */
FF_API int ff_cond_prepare(ff_cond_t *cond, ff_cond_waiter_t *waiter);
/* Sleeps until notified (0), -ETIMEDOUT or -EINTR. */
FF_API int ff_cond_sleep(ff_cond_t *cond, ff_cond_waiter_t *waiter,
                         double timeout);
/* Counts the caller out; returns 1 if it was notified (a notification that
 * came after its sleep ended is taken here), else 0. */
FF_API int ff_cond_finish(ff_cond_t *cond, ff_cond_waiter_t *waiter);
/* Wakes up to count waiters (UINT32_MAX: all); returns how many. */
FF_API unsigned ff_cond_notify(ff_cond_t *cond, unsigned count);
/* The waits between prepare and finish. */
FF_API unsigned ff_cond_waiters(const ff_cond_t *cond);
/* The notifications handed out and not yet taken by a waiter. */
FF_API unsigned ff_cond_pending(const ff_cond_t *cond);

/* ---- channels: message queues in shared memory (channel.c) ----------------
 *
 * A multi-producer, multi-consumer queue of byte messages in a region the
 * caller shares between processes (page-aligned; map it whole everywhere:
 * only the pages in use are touched). The ring starts at `capacity` bytes
 * and doubles, up to what the region holds, when a message does not fit;
 * it shrinks back when the channel empties. A process killed while it held
 * the channel's lock is noticed by the next caller, which repairs the
 * positions if it must and reports the dead pid in *recovered. */

/* A process's handle of a channel: where it is mapped here, and what the
 * mapping holds. Filled by ff_channel_attach; the fields are the
 * runtime's. */
typedef struct ff_channel_s {
  void *region;   /* the header, then the ring, as mapped here */
  uint64_t limit; /* the largest ring the region holds */
  uint64_t base;
  uint64_t window; /* the ring bytes mapped at region */
  void *windows;   /* ff_channel_map's: how to map more, and what it did */
} ff_channel_t;

/* The bytes at the start of a region that the channel's header takes. */
#define FF_CHANNEL_HEADER 4096

/* maxsize: the most messages it holds (0: as many as fit). */
FF_API int ff_channel_init(void *region, size_t size, size_t capacity,
                           unsigned maxsize);
/* A handle of the channel ff_channel_init made in this region (mapped here
 * too, at any address). */
FF_API int ff_channel_attach(void *region, size_t size, ff_channel_t *channel);
/* A handle of the channel in the size bytes at offset (a multiple of 4096)
 * of segment id, mapping only the header and the first window bytes of the
 * ring here, and larger windows as the ring grows: a channel costs this
 * process the address space its messages need, not size. With init, makes
 * the channel first (see ff_channel_init). ff_channel_unmap undoes it. */
FF_API int ff_channel_map(ff_channel_t *channel, uint64_t segment,
                          uint64_t offset, size_t size, size_t window, int init,
                          size_t capacity, unsigned maxsize);
FF_API void ff_channel_unmap(ff_channel_t *channel);
/* Appends a copy of the message: 0, -ETIMEDOUT when still full at the
 * timeout, -EMSGSIZE when it could never fit, -EINTR, -ENOMEM when a larger
 * window cannot be mapped. *recovered (may be NULL) is set to a dead lock
 * holder's pid. */
FF_API int ff_channel_put(ff_channel_t *channel, const void *data,
                          size_t length, double timeout, int *recovered);
/* Takes the oldest message: alloc(arg, length) returns where to copy it
 * (NULL: -ENOMEM, and the message stays). 0, -ETIMEDOUT when still empty
 * at the timeout, -EINTR, or FF_EPROTOCOL for a corrupt record or state
 * (the channel is emptied; put returns it too). */
FF_API int ff_channel_get(ff_channel_t *channel, double timeout,
                          void *(*alloc)(void *arg, size_t length), void *arg,
                          int *recovered);
/* The messages in the channel now. */
FF_API unsigned ff_channel_count(const ff_channel_t *channel);
FF_API unsigned ff_channel_maxsize(const ff_channel_t *channel);
/* JoinableQueue: every put counts a task; task_done uncounts one
 * (-EOVERFLOW when none is left), and join waits until none is left. */
FF_API int ff_channel_task_done(ff_channel_t *channel);
FF_API int ff_channel_join(ff_channel_t *channel, double timeout);

/* ---- pipes: two channels and a socket between two ends (pipe.c) -----------
 *
 * Python's multiprocessing Pipe on shared memory: a pipe is a page of
 * flags and two channels (one per direction) in a segment, and a connected
 * pair of SOCK_STREAM sockets (socketpair), one per end, that carry no
 * message: a receiver spins briefly on an empty channel, then sleeps in
 * poll() on its socket, and a sender writes a wake-up byte to it only when
 * the receiver said it sleeps. The kernel closes a dead process's socket,
 * so either end learns that the other is gone: a receiver reads what is
 * left, then gets -EPIPE (the end of the stream); a sender gets -EPIPE
 * once its messages pile up unread. The sockets also carry descriptors
 * (ff_pipe_send_fds), never mixed with the messages. An end is used by one
 * process (a forked child uses its inherited copy); its functions may be
 * called from several threads, but ff_pipe_destroy only once none runs.
 * Timeouts are in seconds: negative waits without limit, 0 does not
 * wait. */
typedef struct ff_pipe_s ff_pipe_t;

/* The page of flags at the start of a pipe; the two channels' regions
 * follow it. */
#define FF_PIPE_HEADER 4096
/* The most descriptors one ff_pipe_send_fds carries (Linux's
 * SCM_MAX_FD). */
#define FF_PIPE_MAX_FDS 253

/* Opens an end of the pipe at offset (a multiple of 4096) of segment id:
 * the page of flags, then two regions of region bytes (a multiple of 4096,
 * at least 8192), channels 0 and 1. The end reads channel in_index and
 * writes out_index (-1: it does not read, or write), and wakes its peer
 * through socket fd, which it takes over on success. With init, makes its
 * channels first (the segment is new: its flags are zero). 0, -EINVAL when
 * the arguments or the segment's size do not make a pipe or a channel is
 * not there, or a negative errno (-ENOENT: nobody lends the segment). */
FF_API int ff_pipe_open(ff_pipe_t **pipe, uint64_t segment, uint64_t offset,
                        size_t region, int in_index, int out_index, int fd,
                        int init);
/* Closes the end's socket (and the descriptors received and not taken):
 * the peer sees the end of the stream once every copy of the socket is
 * closed. Later calls return -EBADF; the end stays mapped. */
FF_API void ff_pipe_close(ff_pipe_t *pipe);
/* Closes the end if it is open, unmaps and frees it. */
FF_API void ff_pipe_destroy(ff_pipe_t *pipe);
/* The end's socket, for a selector (readable when a sleeping receiver is
 * woken, see ff_pipe_arm), or -1 once closed. */
FF_API int ff_pipe_fd(const ff_pipe_t *pipe);
/* 1 when the end reads (writes) a channel, else 0. */
FF_API int ff_pipe_readable(const ff_pipe_t *pipe);
FF_API int ff_pipe_writable(const ff_pipe_t *pipe);
/* Sends a copy of the message, waking the receiver if it sleeps: 0,
 * -ETIMEDOUT when the channel is still full at the timeout, -EPIPE when
 * the other end is gone, -EMSGSIZE when the message could never fit,
 * -EBADF when closed or not writable, -EINTR, or ff_channel_put's other
 * codes. */
FF_API int ff_pipe_send(ff_pipe_t *pipe, const void *data, size_t length,
                        double timeout);
/* Takes the next message, waiting for it; alloc as ff_channel_get's. 0,
 * -ETIMEDOUT, -EPIPE at the end of the stream (the other end is gone and
 * the channel empty), -EBADF when closed or not readable, -EINTR, or
 * ff_channel_get's other codes. */
FF_API int ff_pipe_recv(ff_pipe_t *pipe, double timeout,
                        void *(*alloc)(void *arg, size_t length), void *arg);
/* 1 when ff_pipe_recv would not wait (a message, or the end of the
 * stream), waiting up to the timeout for it; 0 if not, -EINTR, -EBADF. */
FF_API int ff_pipe_poll(ff_pipe_t *pipe, double timeout);
/* For a caller that sleeps on ff_pipe_fd itself, with other descriptors:
 * arm announces that the end's receiver sleeps (senders then wake its
 * socket) and returns 1 if a message is there already (then do not
 * sleep); disarm withdraws it, reads the wake-ups, and returns 1 if
 * ff_pipe_recv would not wait. Both return 0 for an end that does not
 * read, -EBADF once closed. */
FF_API int ff_pipe_arm(ff_pipe_t *pipe);
FF_API int ff_pipe_disarm(ff_pipe_t *pipe);
/* Sends count descriptors (1 to FF_PIPE_MAX_FDS) to the other end's
 * ff_pipe_recv_fds, as Python's multiprocessing.reduction.sendfds does
 * (one byte, their count, with SCM_RIGHTS): 0, -ETIMEDOUT while the
 * socket's buffer is full, -EINVAL, -EBADF, -EINTR, or a negative errno. */
FF_API int ff_pipe_send_fds(ff_pipe_t *pipe, const int *fds, unsigned count,
                            double timeout);
/* Receives the descriptors of the next ff_pipe_send_fds (or sendfds) into
 * fds (room for FF_PIPE_MAX_FDS), close-on-exec: their number, or
 * -ETIMEDOUT, -EPIPE at the end of the stream, FF_EPROTOCOL for a byte
 * that brought none, -EBADF, -EINTR, or a negative errno. */
FF_API int ff_pipe_recv_fds(ff_pipe_t *pipe, int *fds, double timeout);

#ifdef __cplusplus
}
#endif
#endif /* FORKFARM_H */
