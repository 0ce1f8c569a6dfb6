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

/* What a worker process needs from the pool's creator: the hooks (read
 * once from a forkfarm._protocol.WorkerHooks, each field of the same name)
 * and the initializer. Inherited by fork, so these are plain references to
 * the parent's objects. */
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

/* Fills a worker context from hooks (a WorkerHooks: TypeError naming the
 * hook that is missing or not callable, and the context untouched) and the
 * pool's initializer and initargs (a tuple): 0, or -1 with an exception. */
int ffpy_worker_context_load(ffpy_worker_context_t *context, PyObject *hooks,
                             PyObject *initializer, PyObject *initargs);
void ffpy_worker_context_clear(ffpy_worker_context_t *context);

/* _core.zygote_serve(ctl, hooks, initializer, initargs, max_tasks=0,
 * max_memory=0, max_message=0): runs this process as a pool's zygote (a
 * fork server's child); returns only on error. */
PyObject *ffpy_zygote_serve(PyObject *module, PyObject *args);

/* ---- codec.c: the wire format of messages and results ---------------
 * (the frame kinds are described at the top of codec.c) */

/* A map chunk's result that is a list of ints (each fitting 64 bits) or of
 * floats travels in the compact encoding (FF_COMPACT_MAGIC, forkfarm.h)
 * rather than as a pickle. Lists shorter than this are pickled. */
#define FFPY_COMPACT_MIN_ITEMS 1

/* What ffpy_encode may do (flags of ffpy_encoding_t). */
/* Large buffers go out of band through this process's arena, and the
 * segments of shared objects are pinned: a frame, when there are any. */
#define FFPY_ENCODE_OOB 1u
/* A list of ints or floats goes in the compact encoding. */
#define FFPY_ENCODE_COMPACT 2u
/* value is the one item of the list to encode (a map chunk of one item):
 * as bytes, an int or a float is encoded with no list made. */
#define FFPY_ENCODE_ONE_ITEM 4u

typedef struct {
  PyObject *protocol; /* the pickle protocol, an int */
  unsigned flags;     /* FFPY_ENCODE_* */
  /* With FFPY_ENCODE_OOB: a BufferMemo (the messages of one map share one
   * copy of a buffer they all carry), None or NULL. */
  PyObject *memo;
  /* NULL: the codec's pickler (pickle.dumps, shared objects as handles).
   * Else dumps(value, protocol) -> bytes, called as it is: a hook that
   * encodes by itself (the worker's, which is _core.dumps), or, with pins,
   * the pickler to run (FFPY_ENCODE_OOB does not apply to it). */
  PyObject *dumps;
  /* Given: the segments the pickle names (the shared objects it holds as
   * handles), returned here as a new list, and no frame: buffers stay in
   * band (a Process's arguments, which travel another way). */
  PyObject **pins;
} ffpy_encoding_t;

/* THE ENCODER. Encodes value for the wire as how says: the compact
 * encoding, a frame, or a plain pickle, in that order of preference. As a
 * new bytes object; or, given out (a worker's result buffer), into out,
 * returning Py_None (a new reference), the compact encoding written there
 * in place. NULL with an exception. */
PyObject *ffpy_encode(PyObject *value, const ffpy_encoding_t *how,
                      ff_buf_t *out);

/* THE DECODER. Decodes a message or a result of any kind: the compact
 * encoding in C, a frame with its regions, a plain pickle with loads
 * (called on a memoryview of data, released after). Data may come from a
 * process that is not trusted: a corrupt message fails cleanly. */
PyObject *ffpy_decode(const char *data, size_t length, PyObject *loads);
/* ffpy_decode for a map chunk's result of count items, written into
 * target[start:start + count] (a list), a compact one without a list of
 * its own: 0, or -1 with an exception. */
int ffpy_decode_into(const char *data, size_t length, PyObject *loads,
                     PyObject *target, Py_ssize_t start, Py_ssize_t count);

/* What a message's first bytes say it is (nothing more is checked). */
typedef enum {
  FFPY_WIRE_PICKLE,
  FFPY_WIRE_FRAMED,
  FFPY_WIRE_COMPACT
} ffpy_wire_kind_t;
ffpy_wire_kind_t ffpy_wire_kind(const char *data, size_t length);

/* Releases (and drops) a memoryview that loads read, keeping the exception
 * loads raised (*value NULL); a view loads kept alive fails *value. */
void ffpy_release_view(PyObject *view, PyObject **value);

extern PyTypeObject ffpy_memo_type;
/* Buffers of threshold bytes and more go out of band. */
int ffpy_set_oob_threshold(Py_ssize_t threshold);

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

/* ---- shared.c: segments, arenas, regions and pins ---- */
extern PyTypeObject ffpy_segment_type;
/* A _core.Segment's id and size (its bytes after the header page). */
uint64_t ffpy_segment_id(PyObject *segment);
size_t ffpy_segment_size(PyObject *segment);
/* The first of a _core.Segment's bytes (after its header page). */
char *ffpy_segment_data(PyObject *segment);
extern PyTypeObject ffpy_region_type;
/* The arena this thread's large buffers go through now (a worker's result
 * arena while it encodes upstream), made on first use; NULL if it cannot
 * be made (the buffers then stay in band). */
ff_arena_t *ffpy_sending_arena(void);
/* In a worker, its result arena (made on first use), where arrays born in
 * shared memory live; NULL elsewhere or if it cannot be made. */
ff_arena_t *ffpy_result_arena(void);
/* A _core.Region over the bytes of ref, from a message this thread decodes
 * (in a worker decoding upstream, its parent's; else a worker's result),
 * or NULL with an exception. */
PyObject *ffpy_region_receive(const ff_arena_ref_t *ref);
/* Gives back a reference of such a message that will not be received. */
void ffpy_region_discard(const ff_arena_ref_t *ref);
/* Releases this process's idle arena chunks beyond keep bytes. */
size_t ffpy_trim_arena(size_t keep);
/* In a new worker: its own arenas, made through the parent. */
void ffpy_shared_after_fork_in_worker(void);
/* In a worker, while it decodes a message from its parent or encodes a
 * result for it (on), and otherwise (off). */
void ffpy_set_upstream(int on);
/* True in a pool's worker process. */
int ffpy_in_worker(void);

/* The scope of a pool's pickling in this thread: inside one, shared objects
 * pickle as handles (forkfarm/shared.py asks ffpy_pickling_for_pool), and
 * with collect the segments they name are noted (ffpy_note_pin) for the
 * message to pin. Scopes nest; the ids are the caller's to PyMem_Free. */
typedef struct ffpy_pin_scope_s {
  uint64_t *ids;
  size_t count;
  size_t capacity;
  int collect;
  struct ffpy_pin_scope_s *outer;
} ffpy_pin_scope_t;
void ffpy_pin_scope_enter(ffpy_pin_scope_t *scope, int collect);
void ffpy_pin_scope_exit(ffpy_pin_scope_t *scope);
/* True inside a scope in this thread. */
int ffpy_pickling_for_pool(void);
/* Inside a collecting scope: the message names segment id, which the pool
 * keeps open until its task finishes. 0, or -1 with an exception. */
int ffpy_note_pin(uint64_t id);

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

/* ---- allocator.c: arrays born in shared memory ---- */
typedef struct ffpy_shared_counts_s {
  size_t held_bytes;  /* held regions now: arrays' data in shared memory */
  size_t held_count;
  size_t allocations; /* since the process started */
  size_t lent;        /* results that went with no copy */
  size_t lent_bytes;
  size_t copies;      /* results copied: the worker kept the array */
  size_t frozen;      /* regions frozen before a fork */
} ffpy_shared_counts_t;
/* size bytes of shared memory for an array (zeroed if asked), or NULL when
 * the allocator does not take it (below the threshold, outside a worker, or
 * out of arena): the caller then uses the previous allocator. */
void *ffpy_shared_alloc(size_t size, int zeroed);
/* Frees p if it is a held region: 1, else 0. */
int ffpy_shared_free(void *p);
/* The bytes asked for at held region p, or 0 if p is not one. */
size_t ffpy_shared_length(const void *p);
/* Held region p now holds size bytes, if they fit its pages: 1, else 0. */
int ffpy_shared_resize(void *p, size_t size);
/* In a worker, around a result's encoding: lending is on from here... */
void ffpy_shared_begin_result(void);
/* ...and buffer, if it lies in a held region of arena, is lent to the
 * message as *lent instead of copied (1; 0 to copy it)... */
int ffpy_shared_lend(const void *buffer, size_t length, ff_arena_t *arena,
                     ff_arena_ref_t *lent);
/* ...until the result, in out, is settled, after the worker dropped its
 * value: regions it still holds are copied and renamed in out. 0, or a
 * negative errno (out cannot leave as it is). */
int ffpy_shared_settle(ff_buf_t *out);
/* Before forkfarm forks (a zygote, a Process), ahead of the runtime's
 * locks: freezes the held regions (any other fork does it in its
 * pthread_atfork handler). */
void ffpy_shared_before_fork(void);
/* The smallest array data that goes to shared memory (0: none). */
void ffpy_shared_set_threshold(size_t bytes);
size_t ffpy_shared_threshold(void);
ffpy_shared_counts_t ffpy_shared_counts(void);
/* _core.shared_counts() -> dict: ffpy_shared_counts and the threshold. */
PyObject *ffpy_core_shared_counts(PyObject *module, PyObject *unused);
/* _core.set_shared_threshold(n): ffpy_shared_set_threshold. */
PyObject *ffpy_core_set_shared_threshold(PyObject *module, PyObject *arg);

/* ---- arrays.c: NumPy's C API, loaded only when an array is asked for -- */

/* _core.array_on_segment(segment, offset, shape, strides, dtype, writeable,
 * subtype, fortran=False). */
PyObject *ffpy_array_on_segment(PyObject *module, PyObject *args,
                                PyObject *kw);
/* Makes forkfarm's allocator NumPy's current one (in this thread's
 * context), loading NumPy's API: the handler it replaces (a new
 * reference), or NULL with an exception. */
PyObject *ffpy_numpy_use_shared_allocator(void);
/* _core.use_shared_allocator() and _core.restore_allocator(handler). */
PyObject *ffpy_core_use_shared_allocator(PyObject *module, PyObject *unused);
PyObject *ffpy_core_restore_allocator(PyObject *module, PyObject *handler);

#endif
