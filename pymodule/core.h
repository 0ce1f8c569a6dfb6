/* The private header of the forkfarm._core extension: the Python types over
 * the C runtime, and the pieces that run inside worker processes. */
#ifndef FFPY_CORE_H
#define FFPY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "forkfarm.h"

/* ---- errors.c: runtime codes become exceptions, in one place ----------- */

/* _core.Error(code, message): a runtime code with no meaning of its own to
 * the caller. */
extern PyObject *ffpy_error_type;
/* Raises the exception of a runtime return code (see errors.c) and returns
 * NULL for the caller to return. */
PyObject *ffpy_raise(int code);
/* ffpy_raise for a call of pool: a pool that cannot run tasks raises why. */
PyObject *ffpy_raise_for_pool(int code, ff_pool_t *pool);
/* (code, detail, (pid, exit_code, signal)) once pool has failed, else
 * None. */
PyObject *ffpy_pool_failure(ff_pool_t *pool);
/* The classes the package registers at import (_core.register_errors). */
typedef enum {
  FFPY_WORKER_START_ERROR,
  FFPY_QUEUE_EMPTY,
  FFPY_QUEUE_FULL,
  FFPY_ABANDONED_LOCK_WARNING,
  FFPY_BUFFER_TOO_SHORT,
  FFPY_CLASS_COUNT
} ffpy_class_t;
/* A registered class (borrowed), or the builtin it stands in for. */
PyObject *ffpy_class(ffpy_class_t which);
/* _core.register_errors(**classes, pool_failure=callable). */
PyObject *ffpy_register_errors(PyObject *module, PyObject *args,
                               PyObject *kw);

extern PyTypeObject ffpy_task_type;
extern PyTypeObject ffpy_queue_type;
extern PyTypeObject ffpy_pool_type;
extern PyTypeObject ffpy_context_type;

typedef struct {
  PyObject_HEAD
  ff_context_t *context;
} ffpy_context_t;

typedef struct {
  PyObject_HEAD
  ff_task_t *task;
  PyObject *notify; /* called with the task when it finishes, or NULL */
  int consumed;     /* its result was decoded as it was read: it is gone */
} ffpy_task_t;

typedef struct {
  PyObject_HEAD
  ff_queue_t *queue;
} ffpy_queue_t;

/* Wraps a runtime task reference (stolen) in a new Task object. */
PyObject *ffpy_task_wrap(ff_task_t *task);

/* What a worker process needs from the pool's creator: inherited by fork,
 * so these are plain references to the parent's objects. */
typedef struct {
  PyObject *loads;        /* loads(buffer) -> object */
  PyObject *dumps;        /* dumps(object, protocol) -> bytes */
  PyObject *protocol;     /* the pickle protocol, an int */
  PyObject *initializer;  /* or Py_None */
  PyObject *initargs;     /* a tuple */
  PyObject *encode_error; /* encode_error(exception) -> bytes */
  /* encode_result_error(exception, value) -> bytes: a result that could not
   * be pickled */
  PyObject *encode_result_error;
  PyObject *worker_setup; /* worker_setup() -> None, before the initializer */
  PyObject *worker_exit;  /* worker_exit() -> None, before the worker exits */
  /* dumps_by_value(value, error) -> bytes: a result plain pickle refused,
   * by value (cloudpickle), or raises */
  PyObject *dumps_by_value;
  /* encode_load_error(exception) -> bytes: a task message that could not
   * be unpickled in the worker */
  PyObject *encode_load_error;
} ffpy_worker_context_t;

/* Fills a worker context from the protocol module's attributes and the
 * pool's initializer and initargs (a tuple): 0, or -1 with an exception. */
int ffpy_worker_context_load(ffpy_worker_context_t *context,
                             PyObject *protocol, PyObject *initializer,
                             PyObject *initargs);
void ffpy_worker_context_clear(ffpy_worker_context_t *context);

/* _core.zygote_serve(ctl, protocol, initializer, initargs, max_tasks=0,
 * max_memory=0): runs this process as a pool's zygote (a fork server's
 * child); returns only on error. */
PyObject *ffpy_zygote_serve(PyObject *module, PyObject *args);

/* A map chunk's result that is a list of ints (each fitting 64 bits) or of
 * floats travels in the compact encoding (FF_COMPACT_MAGIC, forkfarm.h)
 * rather than as a pickle. Lists shorter than this are pickled. */
#define FFPY_COMPACT_MIN_ITEMS 1

/* Writes value into out in the compact encoding if it applies: 1, else 0
 * (out untouched), or -1 on a memory error. */
int ffpy_compact_encode(PyObject *value, ff_buf_t *out);
/* The chunks of one item each of a map with chunksize 1: a list of
 * payloads, compact for ints and floats, dumps([item], protocol) else. */
PyObject *ffpy_encode_singletons(PyObject *items, PyObject *dumps,
                                 PyObject *protocol);
/* Decodes a message or a result: the compact encoding in C, anything else
 * with loads (called on a memoryview of data). */
PyObject *ffpy_decode(const char *data, size_t length, PyObject *loads);

/* Releases (and drops) a memoryview that loads read, keeping the exception
 * loads raised (*value NULL); a view loads kept alive fails *value. */
void ffpy_release_view(PyObject *view, PyObject **value);

/* Decodes a map chunk's result of count items into target[start:start +
 * count] (a list): 0, or -1 with an exception. */
int ffpy_decode_into(const char *data, size_t length, PyObject *loads,
                     PyObject *target, Py_ssize_t start, Py_ssize_t count);

/* ---- sync.c: process-shared primitives in segments ---- */
extern PyTypeObject ffpy_mutex_type;
extern PyTypeObject ffpy_semaphore_type;
extern PyTypeObject ffpy_event_type;
extern PyTypeObject ffpy_cond_type;
/* ---- channel.c: message queues in segments ---- */
extern PyTypeObject ffpy_channel_type;
/* ---- pipe.c: the ends of a Pipe ---- */
extern PyTypeObject ffpy_pipe_end_type;
PyObject *ffpy_slot_refs(PyObject *module, PyObject *args);

/* ---- shared.c: segments and out-of-band buffers ---- */
extern PyTypeObject ffpy_segment_type;
/* A _core.Segment's id and size (its bytes after the header page). */
uint64_t ffpy_segment_id(PyObject *segment);
size_t ffpy_segment_size(PyObject *segment);
extern PyTypeObject ffpy_region_type;
extern PyTypeObject ffpy_memo_type;
/* Pickles value with protocol; with oob, large out-of-band buffers go
 * through this process's arena and the result is framed
 * (FF_ARENA_FRAME_MAGIC). Shared arrays pickle as handles either way. A
 * memo (a BufferMemo, or NULL) lets the messages of one map share one copy
 * of a buffer they all carry. */
PyObject *ffpy_dumps(PyObject *value, PyObject *protocol, int oob,
                     PyObject *memo);
/* The segment ids pickling value for a pool would pin (the shared arrays,
 * queues and locks it names), as a list. */
PyObject *ffpy_pins_of(PyObject *value, PyObject *protocol);
/* Pickles value as ffpy_pins_of does (shared objects as handles, buffers
 * in band), with dumps(value, protocol) (NULL: pickle.dumps), and keeps
 * the pickle: it, and the list of pins in *pins, or NULL with an
 * exception. */
PyObject *ffpy_dumps_pinned(PyObject *value, PyObject *protocol,
                            PyObject *dumps, PyObject **pins);
/* Decodes a framed message: loads(body, buffers=[regions]). */
PyObject *ffpy_decode_framed(const char *data, size_t length,
                             PyObject *loads);
/* Inside ffpy_dumps (with oob): the message names segment id, which the
 * pool keeps open until its task finishes. 0, or -1 with an exception. */
int ffpy_note_pin(uint64_t id);
/* True while ffpy_dumps runs in this thread. */
int ffpy_pickling_for_pool(void);
/* True in a pool's worker process. */
int ffpy_in_worker(void);
int ffpy_set_oob_threshold(Py_ssize_t threshold);
/* Releases this process's idle arena chunks beyond keep bytes. */
size_t ffpy_trim_arena(size_t keep);
/* In a new worker: its own arena, made through the parent. */
void ffpy_shared_after_fork_in_worker(void);
/* In a worker, while it decodes a message from its parent or encodes a
 * result for it (on), and otherwise (off). */
void ffpy_set_upstream(int on);

/* Fills the runtime's options with the worker callbacks and fork hooks. */
void ffpy_worker_options(ff_pool_options_t *options,
                         ffpy_worker_context_t *context);

/* Releases the GIL around ff_pool_create. The fork hooks take it back for
 * the fork itself, as os.fork() would hold it. */
int ffpy_pool_create_released(ff_pool_t **pool,
                              const ff_pool_options_t *options);

/* Waits with the GIL released, in a way Ctrl-C can interrupt: wait is
 * called with the remaining timeout (negative: none) until it returns 0 or
 * -ETIMEDOUT. Returns 1 when done, 0 on timeout, -1 with an exception set. */
int ffpy_wait_interruptibly(int (*wait)(void *arg, double timeout), void *arg,
                            double timeout);

/* ---- process.c: what forkfarm.Process needs of the runtime ---- */
/* _core.fork(callbacks_wait=FF_FORK_CALLBACK_WAIT): os.fork() through the
 * runtime (ff_fork); BlockingIOError (EBUSY) when the callbacks run on. */
PyObject *ffpy_fork(PyObject *module, PyObject *args);
/* _core.dumps_with_pins(value, protocol=5, dumps=None) -> (bytes,
 * list[int]). */
PyObject *ffpy_dumps_with_pins(PyObject *module, PyObject *args);
/* _core.segment_fd(id) -> int: a new descriptor of a segment lent here. */
PyObject *ffpy_segment_fd(PyObject *module, PyObject *arg);
/* _core.adopt_segment(id, fd): ff_segment_adopt; takes over fd. */
PyObject *ffpy_adopt_segment(PyObject *module, PyObject *args);

/* Parses a timeout argument: None means no limit (-1); negative values mean
 * do not wait (0). Returns -2 with an exception set on a bad value. */
double ffpy_parse_timeout(PyObject *value);

#endif
