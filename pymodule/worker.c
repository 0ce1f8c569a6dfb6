/* What runs around forks and inside worker processes.
 *
 * The fork hooks do for the runtime's forks what os.fork() does: take the
 * GIL and Python's fork locks before the zygote's fork, and fix up the
 * interpreter after it in the parent and in each worker (the zygote, a
 * frozen image of the parent, never runs Python). In the worker the GIL is
 * released again, so its C loop runs without it; each worker callback takes
 * it for its Python work. */
#include "core.h"

#include <stddef.h>
#include <string.h>

/* The thread state of the thread that forks (or, in a child, of the one
 * thread it has). Thread-local because two threads may create pools. */
static _Thread_local PyThreadState *saved_thread_state;

static void fork_prepare(void *arg) {
  (void)arg;
  PyEval_RestoreThread(saved_thread_state);
  ffpy_shared_before_fork();
  PyOS_BeforeFork();
}

static void fork_parent(void *arg) {
  (void)arg;
  PyOS_AfterFork_Parent();
  saved_thread_state = PyEval_SaveThread();
}

static void fork_child(void *arg) {
  (void)arg;
  PyOS_AfterFork_Child();
  ffpy_shared_after_fork_in_worker();
  saved_thread_state = PyEval_SaveThread();
}

/* The hooks of a worker context, each read from the field of the same name
 * of a forkfarm._protocol.WorkerHooks. */
static const struct {
  const char *name;
  size_t offset;
  int is_int; /* an int, not a callable */
} hook_table[] = {
#define HOOK(name, is_int)                                                   \
  {#name, offsetof(ffpy_worker_context_t, name), is_int}
    HOOK(loads, 0),
    HOOK(dumps, 0),
    HOOK(protocol, 1),
    HOOK(encode_error, 0),
    HOOK(encode_result_error, 0),
    HOOK(encode_load_error, 0),
    HOOK(dumps_by_value, 0),
    HOOK(worker_setup, 0),
    HOOK(worker_exit, 0),
#undef HOOK
};
#define HOOK_COUNT (sizeof(hook_table) / sizeof(hook_table[0]))

static PyObject **hook_field(ffpy_worker_context_t *c, size_t i) {
  return (PyObject **)((char *)c + hook_table[i].offset);
}

int ffpy_worker_context_load(ffpy_worker_context_t *c, PyObject *hooks,
                             PyObject *initializer, PyObject *initargs) {
  PyObject *read[HOOK_COUNT] = {NULL};
  int rc = -1;
  for (size_t i = 0; i < HOOK_COUNT; i++) {
    const char *name = hook_table[i].name;
    read[i] = PyObject_GetAttrString(hooks, name);
    if (read[i] == NULL) {
      if (!PyErr_ExceptionMatches(PyExc_AttributeError)) goto cleanup;
      PyErr_Format(PyExc_TypeError,
                   "the worker hooks have no '%s': pass a "
                   "forkfarm._protocol.WorkerHooks, not %.100s",
                   name, Py_TYPE(hooks)->tp_name);
      goto cleanup;
    }
    if (hook_table[i].is_int ? !PyLong_Check(read[i])
                             : !PyCallable_Check(read[i])) {
      PyErr_Format(PyExc_TypeError,
                   "the worker hook '%s' must be %s, not %.100s", name,
                   hook_table[i].is_int ? "an int" : "callable",
                   Py_TYPE(read[i])->tp_name);
      goto cleanup;
    }
  }
  /* All or nothing: a context is never half filled. */
  for (size_t i = 0; i < HOOK_COUNT; i++) {
    Py_XSETREF(*hook_field(c, i), read[i]);
    read[i] = NULL;
  }
  Py_XSETREF(c->initializer, Py_NewRef(initializer));
  Py_XSETREF(c->initargs, Py_NewRef(initargs));
  rc = 0;
cleanup:
  for (size_t i = 0; i < HOOK_COUNT; i++) Py_XDECREF(read[i]);
  return rc;
}

void ffpy_worker_context_clear(ffpy_worker_context_t *c) {
  for (size_t i = 0; i < HOOK_COUNT; i++) Py_CLEAR(*hook_field(c, i));
  Py_CLEAR(c->initializer);
  Py_CLEAR(c->initargs);
}

int ffpy_pool_create_released(ff_pool_t **pool,
                              const ff_pool_options_t *options) {
  int rc;
  saved_thread_state = PyEval_SaveThread();
  rc = ff_pool_create(pool, options);
  PyEval_RestoreThread(saved_thread_state);
  return rc;
}

/* Takes the current exception (with its traceback attached). */
static PyObject *take_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
  return PyErr_GetRaisedException();
#else
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value && tb) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
#endif
}

/* Stores the current exception into out, encoded by encode (the Python
 * layer's encode_error or encode_load_error); if even that fails, as plain
 * text. Clears the exception. */
static void store_exception(PyObject *encode, ff_buf_t *out) {
  PyObject *exc = take_exception();
  PyObject *encoded = exc ? PyObject_CallOneArg(encode, exc) : NULL;
  if (encoded && PyBytes_Check(encoded)) {
    ff_buf_set(out, PyBytes_AS_STRING(encoded),
               (size_t)PyBytes_GET_SIZE(encoded));
  } else {
    PyErr_Clear();
    const char *text = "the worker failed to encode an exception";
    ff_buf_set(out, text, strlen(text));
  }
  Py_XDECREF(encoded);
  Py_XDECREF(exc);
}

static int worker_init(void *arg, ff_buf_t *detail) {
  ffpy_worker_context_t *c = arg;
  int rc = 0;
  PyEval_RestoreThread(saved_thread_state);
  PyObject *r = PyObject_CallNoArgs(c->worker_setup);
  if (r != NULL && c->initializer != Py_None) {
    Py_DECREF(r);
    r = PyObject_Call(c->initializer, c->initargs, NULL);
  }
  if (r == NULL) {
    store_exception(c->encode_error, detail);
    rc = -1;
  }
  Py_XDECREF(r);
  saved_thread_state = PyEval_SaveThread();
  return rc;
}

/* A task's kinds. Without a context, a call carries (func, args, kwds).
 * With a context (kind, func): a call carries (args, kwds), and the tasks
 * of a map carry a list of items. */
enum { TASK_CALL = 0, TASK_MAP = 1, TASK_STARMAP = 2 };

static long context_kind(PyObject *context) {
  return context ? PyLong_AsLong(PyTuple_GET_ITEM(context, 0)) : TASK_CALL;
}

static PyObject *call(PyObject *func, PyObject *args, PyObject *kwds) {
  return PyObject_Call(func, args,
                       PyDict_Check(kwds) && PyDict_GET_SIZE(kwds) ? kwds
                                                                   : NULL);
}

/* Runs the items of a map chunk through func: a new list, or NULL. */
static PyObject *run_chunk(PyObject *func, long kind, PyObject *items) {
  PyObject *seq = PySequence_Fast(items, "a map chunk must be a sequence");
  if (seq == NULL) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject *out = PyList_New(n);
  for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *value;
    if (kind == TASK_STARMAP) {
      PyObject *args = PySequence_Tuple(item);
      value = args ? PyObject_Call(func, args, NULL) : NULL;
      Py_XDECREF(args);
    } else {
      value = PyObject_CallOneArg(func, item);
    }
    if (value == NULL) Py_CLEAR(out);
    else PyList_SET_ITEM(out, i, value);
  }
  Py_DECREF(seq);
  return out;
}

/* From the first task that finds NumPy imported, the data of large arrays
 * the worker makes is born in shared memory (allocator.c), so that results
 * carry it with no copy. Where that cannot be (a NumPy before 1.22), they
 * are copied as before. */
static int shared_allocator_tried;

static void use_shared_allocator(void) {
  static PyObject *numpy_name;
  if (shared_allocator_tried) return;
  if (numpy_name == NULL) numpy_name = PyUnicode_InternFromString("numpy");
  PyObject *numpy = numpy_name ? PyImport_GetModule(numpy_name) : NULL;
  if (numpy == NULL || numpy == Py_None) {
    Py_XDECREF(numpy);
    PyErr_Clear();
    return;
  }
  Py_DECREF(numpy);
  shared_allocator_tried = 1;
  PyObject *replaced = ffpy_numpy_use_shared_allocator();
  if (replaced == NULL) PyErr_Clear();
  Py_XDECREF(replaced);
}

/* Runs a task message: the value, or NULL with an exception set and
 * *loading set when the message itself failed to unpickle. */
static PyObject *run_task(ffpy_worker_context_t *c, PyObject *context,
                          const void *input, size_t length, int *loading) {
  /* The parent's arena bytes in it go back by report (see lib/arena.c). */
  ffpy_set_upstream(1);
  PyObject *message = ffpy_decode(input, length, c->loads);
  ffpy_set_upstream(0);
  *loading = message == NULL;
  if (message == NULL) return NULL;
  /* After the message: loading it may be what imported NumPy. */
  use_shared_allocator();
  PyObject *value = NULL;
  long kind = context_kind(context);
  if (context != NULL && kind != TASK_CALL) {
    value = run_chunk(PyTuple_GET_ITEM(context, 1), kind, message);
  } else if (context != NULL && PyTuple_CheckExact(message) &&
             PyTuple_GET_SIZE(message) == 2 &&
             PyTuple_CheckExact(PyTuple_GET_ITEM(message, 0))) {
    value = call(PyTuple_GET_ITEM(context, 1), PyTuple_GET_ITEM(message, 0),
                 PyTuple_GET_ITEM(message, 1));
  } else if (context == NULL && PyTuple_CheckExact(message) &&
             PyTuple_GET_SIZE(message) == 3 &&
             PyTuple_CheckExact(PyTuple_GET_ITEM(message, 1))) {
    value = call(PyTuple_GET_ITEM(message, 0), PyTuple_GET_ITEM(message, 1),
                 PyTuple_GET_ITEM(message, 2));
  } else {
    PyErr_SetString(PyExc_TypeError,
                    "a call must be (func, args, kwds), or (args, kwds) "
                    "with its function as the context");
  }
  Py_DECREF(message);
  return value;
}

/* When the pool captures output, what the task printed through Python's
 * buffered streams must be in the files before the runtime reads their
 * ends: a flush per task, two method calls. */
static void flush_python_streams(void) {
  if (ff_worker_output_fd(FF_OUTPUT_STDOUT) < 0) return;
  static const char *const names[] = {"stdout", "stderr"};
  for (size_t i = 0; i < 2; i++) {
    PyObject *stream = PySys_GetObject(names[i]); /* borrowed */
    if (stream == NULL || stream == Py_None) continue;
    PyObject *r = PyObject_CallMethod(stream, "flush", NULL);
    if (r == NULL)
      PyErr_Clear(); /* a stream that cannot flush loses only its own text */
    Py_XDECREF(r);
  }
}

static int worker_work(void *arg, void *context, const void *input,
                       size_t length, ff_buf_t *out) {
  ffpy_worker_context_t *c = arg;
  int rc = 0;
  PyEval_RestoreThread(saved_thread_state);
  int loading = 0;
  PyObject *value = run_task(c, context, input, length, &loading);
  PyObject *encoded = NULL;
  int written = 0; /* the encoding is in out */
  /* Large buffers of the result go into the arena the parent claims from. */
  ffpy_set_upstream(1);
  if (value != NULL) {
    ffpy_shared_begin_result();
    /* A map chunk's list of ints or floats skips pickle; the rest goes
     * through the dumps hook, into out either way. */
    ffpy_encoding_t how = {c->protocol,
                           context_kind(context) != TASK_CALL
                               ? FFPY_ENCODE_COMPACT
                               : 0,
                           NULL, c->dumps, NULL};
    PyObject *done = ffpy_encode(value, &how, out);
    written = done != NULL;
    Py_XDECREF(done);
    if (!written) {
      /* A class or function pickle cannot name (defined by value in this
       * worker, say) goes by value. */
      PyObject *exc = take_exception();
      encoded = exc ? PyObject_CallFunctionObjArgs(c->dumps_by_value, value,
                                                   exc, NULL)
                    : NULL;
      if (encoded == NULL && exc != NULL) {
        /* That failed too: the original error is the one to report. */
        PyErr_Clear();
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
      }
      Py_XDECREF(exc);
    }
    if (!written && encoded == NULL) {
      /* The value cannot travel: say so, naming it. */
      PyObject *exc = take_exception();
      encoded = exc ? PyObject_CallFunctionObjArgs(c->encode_result_error,
                                                   exc, value, NULL)
                    : NULL;
      Py_XDECREF(exc);
      rc = -1;
    }
    Py_DECREF(value);
  }
  ffpy_set_upstream(0);
  if (written) {
    /* out holds it. */
  } else if (encoded != NULL && PyBytes_Check(encoded)) {
    if (ff_buf_set(out, PyBytes_AS_STRING(encoded),
                   (size_t)PyBytes_GET_SIZE(encoded)) < 0)
      rc = -1;
  } else {
    if (encoded != NULL)
      PyErr_SetString(PyExc_TypeError, "dumps() must return bytes");
    /* A message that could not be loaded is told apart from a call that
     * raised: ProcessPoolExecutor reports the two differently. */
    store_exception(loading ? c->encode_load_error : c->encode_error, out);
    rc = -1;
  }
  Py_XDECREF(encoded);
  /* The value is gone: arrays the worker still holds are copied now. */
  if (ffpy_shared_settle(out) < 0) {
    PyErr_SetString(PyExc_MemoryError,
                    "the result's arrays could not be copied into shared "
                    "memory (the worker still holds them)");
    store_exception(c->encode_error, out);
    rc = -1;
  }
  flush_python_streams();
  saved_thread_state = PyEval_SaveThread();
  return rc;
}

/* A map's (kind, func), decoded once per worker. */
static void *worker_define_context(void *arg, const void *data, size_t length,
                                   ff_buf_t *error) {
  ffpy_worker_context_t *c = arg;
  PyEval_RestoreThread(saved_thread_state);
  /* A plain pickle (contexts never carry frames). */
  PyObject *context = ffpy_decode(data, length, c->loads);
  if (context != NULL &&
      !(PyTuple_CheckExact(context) && PyTuple_GET_SIZE(context) == 2 &&
        PyLong_Check(PyTuple_GET_ITEM(context, 0)))) {
    Py_CLEAR(context);
    PyErr_SetString(PyExc_TypeError,
                    "a map context must be a (kind, func) tuple");
  }
  if (context == NULL) store_exception(c->encode_error, error);
  saved_thread_state = PyEval_SaveThread();
  return context;
}

static void worker_free_context(void *arg, void *context) {
  (void)arg;
  PyEval_RestoreThread(saved_thread_state);
  Py_DECREF((PyObject *)context);
  saved_thread_state = PyEval_SaveThread();
}

static void worker_exit(void *arg) {
  ffpy_worker_context_t *c = arg;
  PyEval_RestoreThread(saved_thread_state);
  PyObject *r = PyObject_CallNoArgs(c->worker_exit);
  if (r == NULL) PyErr_Clear();
  Py_XDECREF(r);
  /* The process ends in _exit() right after: no need to release the GIL. */
}

void ffpy_worker_options(ff_pool_options_t *options,
                         ffpy_worker_context_t *context) {
  options->work = worker_work;
  options->work_arg = context;
  options->define_context = worker_define_context;
  options->free_context = worker_free_context;
  options->worker_init = worker_init;
  options->worker_exit = worker_exit;
  options->worker_arg = context;
  options->fork_hooks.prepare = fork_prepare;
  options->fork_hooks.parent = fork_parent;
  options->fork_hooks.child = fork_child;
  options->fork_hooks.arg = NULL;
}

PyObject *ffpy_zygote_serve(PyObject *module, PyObject *args) {
  (void)module;
  int ctl;
  PyObject *hooks, *initializer, *initargs;
  unsigned int max_tasks = 0;
  unsigned long long max_memory = 0, max_message = 0;
  if (!PyArg_ParseTuple(args, "iOOO!|IKK:zygote_serve", &ctl, &hooks,
                        &initializer, &PyTuple_Type, &initargs, &max_tasks,
                        &max_memory, &max_message))
    return NULL;
  /* Lives as long as the process: the zygote never returns. */
  static ffpy_worker_context_t context;
  if (ffpy_worker_context_load(&context, hooks, initializer, initargs) < 0)
    return NULL;
  ff_pool_options_t options;
  ff_pool_options_init(&options);
  options.max_tasks_per_worker = max_tasks;
  options.max_memory_per_worker = (size_t)max_memory;
  options.max_message_size = (size_t)max_message;
  ffpy_worker_options(&options, &context);
  /* From here the zygote is a frozen image of this moment, as a forked
   * zygote is of its parent's: the GIL and Python's fork locks are held,
   * and each worker runs the child hook once. */
  saved_thread_state = PyEval_SaveThread();
  fork_prepare(NULL);
  int rc = ff_zygote_serve(&options, ctl);
  PyOS_AfterFork_Parent();
  return ffpy_raise(rc);
}
