/* What runs around forks and inside worker processes.
 *
 * The fork hooks do for the runtime's forks what os.fork() does: take the
 * GIL and Python's fork locks before, and fix up the interpreter after. In
 * the child the GIL is released again, so the zygote and the worker's C loop
 * run without it; each worker callback takes it for its Python work. */
#include "core.h"

#include <string.h>

/* The thread state of the thread that forks (or, in a child, of the one
 * thread it has). Thread-local because two threads may create pools. */
static _Thread_local PyThreadState *saved_thread_state;

static void fork_prepare(void *arg) {
  (void)arg;
  PyEval_RestoreThread(saved_thread_state);
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
  saved_thread_state = PyEval_SaveThread();
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

/* Stores the current exception into out, encoded by the Python layer; if
 * even that fails, as plain text. Clears the exception. */
static void store_exception(ffpy_worker_context_t *c, ff_buf_t *out) {
  PyObject *exc = take_exception();
  PyObject *encoded =
      exc ? PyObject_CallOneArg(c->encode_error, exc) : NULL;
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
    store_exception(c, detail);
    rc = -1;
  }
  Py_XDECREF(r);
  saved_thread_state = PyEval_SaveThread();
  return rc;
}

static int worker_work(void *arg, const void *input, size_t length,
                       ff_buf_t *out) {
  ffpy_worker_context_t *c = arg;
  int rc = 0;
  PyEval_RestoreThread(saved_thread_state);
  PyObject *payload = PyBytes_FromStringAndSize(input, (Py_ssize_t)length);
  PyObject *result =
      payload ? PyObject_CallOneArg(c->execute, payload) : NULL;
  Py_XDECREF(payload);
  if (result != NULL && PyBytes_Check(result)) {
    if (ff_buf_set(out, PyBytes_AS_STRING(result),
                   (size_t)PyBytes_GET_SIZE(result)) < 0)
      rc = -1;
  } else {
    /* execute() reports task errors in its result; reaching here means the
     * worker's own machinery failed. */
    if (result != NULL)
      PyErr_SetString(PyExc_TypeError, "execute() must return bytes");
    store_exception(c, out);
    rc = -1;
  }
  Py_XDECREF(result);
  saved_thread_state = PyEval_SaveThread();
  return rc;
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
  options->worker_init = worker_init;
  options->worker_exit = worker_exit;
  options->worker_arg = context;
  options->fork_hooks.prepare = fork_prepare;
  options->fork_hooks.parent = fork_parent;
  options->fork_hooks.child = fork_child;
  options->fork_hooks.arg = NULL;
}
