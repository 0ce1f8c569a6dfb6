/* The one place where runtime return codes become Python exceptions.
 *
 * Every code goes through ffpy_raise (or ffpy_raise_for_pool, which knows
 * the pool) to the exception users catch:
 * - ENOMEM is MemoryError;
 * - a process that could not be started (FF_ESPAWN) is the package's
 *   WorkerStartError, carrying the errno;
 * - the codes of code_table below, with their class and words;
 * - a worker's used-up segment quota (FF_EQUOTA) is an OSError with EDQUOT;
 * - another errno code is an OSError with that errno, which Python turns
 *   into its subclass (FileNotFoundError, BlockingIOError, ...);
 * - a pool that cannot run tasks (FF_EINITFAILED, FF_EZYGOTELOST) is what
 *   the package's pool_failure(code, detail, exit) makes of its failure;
 * - anything else is _core.Error(code, message).
 *
 * The package's own classes (and queue.Empty, queue.Full and
 * multiprocessing's BufferTooShort, which forkfarm raises as those
 * modules do) are registered once, at its import (_core.register_errors),
 * so that C raises the final class directly and nothing is looked up or
 * handed in per object. */
#include "core.h"

#include <errno.h>
#include <string.h>

PyObject *ffpy_error_type;

/* The registered classes, by the keyword they are registered under, with
 * the class each must derive from and stands in for until registered. */
static const struct {
  const char *name;
  PyObject **base;
} class_table[FFPY_CLASS_COUNT] = {
    [FFPY_WORKER_START_ERROR] = {"WorkerStartError", &PyExc_Exception},
    [FFPY_QUEUE_EMPTY] = {"Empty", &PyExc_Exception},
    [FFPY_QUEUE_FULL] = {"Full", &PyExc_Exception},
    [FFPY_ABANDONED_LOCK_WARNING] = {"AbandonedLockWarning",
                                     &PyExc_RuntimeWarning},
    [FFPY_BUFFER_TOO_SHORT] = {"BufferTooShort", &PyExc_Exception},
};
static PyObject *classes[FFPY_CLASS_COUNT];

/* pool_failure(code, detail, (pid, exit_code, signal)) -> exception. */
static PyObject *pool_failure;

/* Codes that mean one thing to the caller, whatever the call. */
static const struct {
  int code;
  PyObject **type;
  const char *message;
} code_table[] = {
    {FF_ECLOSED, &PyExc_ValueError, "Pool not running"},
    {-EDEADLK, &PyExc_RuntimeError,
     "cannot wait for a task or the pool inside a completion callback: "
     "callbacks run on the thread that completes tasks"},
};

PyObject *ffpy_class(ffpy_class_t which) {
  return classes[which] != NULL ? classes[which] : *class_table[which].base;
}

static int register_class(ffpy_class_t which, PyObject *cls) {
  PyObject *base = *class_table[which].base;
  if (!PyType_Check(cls) ||
      !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)base)) {
    PyErr_Format(PyExc_TypeError, "%s must be a subclass of %s",
                 class_table[which].name, ((PyTypeObject *)base)->tp_name);
    return -1;
  }
  Py_XSETREF(classes[which], Py_NewRef(cls));
  return 0;
}

PyObject *ffpy_register_errors(PyObject *module, PyObject *args,
                               PyObject *kw) {
  (void)module;
  if (PyTuple_GET_SIZE(args) != 0) {
    PyErr_SetString(PyExc_TypeError,
                    "register_errors() takes keyword arguments only");
    return NULL;
  }
  if (kw == NULL) Py_RETURN_NONE;
  PyObject *key, *value;
  Py_ssize_t pos = 0;
  while (PyDict_Next(kw, &pos, &key, &value)) {
    const char *name = PyUnicode_AsUTF8(key);
    if (name == NULL) return NULL;
    if (strcmp(name, "pool_failure") == 0) {
      if (!PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "pool_failure must be callable");
        return NULL;
      }
      Py_XSETREF(pool_failure, Py_NewRef(value));
      continue;
    }
    int which = -1;
    for (int i = 0; i < FFPY_CLASS_COUNT; i++)
      if (strcmp(name, class_table[i].name) == 0) which = i;
    if (which < 0) {
      PyErr_Format(PyExc_TypeError,
                   "register_errors() got an unexpected keyword %R", key);
      return NULL;
    }
    if (register_class((ffpy_class_t)which, value) < 0) return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *raise_oserror(int err, const char *message) {
  PyObject *args = Py_BuildValue("(is)", err, message);
  if (args == NULL) return NULL;
  /* OSError(errno, ...) becomes the subclass for that errno. */
  PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
  Py_DECREF(args);
  if (exc == NULL) return NULL;
  PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  Py_DECREF(exc);
  return NULL;
}

static PyObject *raise_worker_start(int spawn_errno, int code) {
  if (classes[FFPY_WORKER_START_ERROR] == NULL)
    return raise_oserror(spawn_errno, ff_strerror(code));
  PyObject *cls = classes[FFPY_WORKER_START_ERROR];
  PyObject *exc = PyObject_CallFunction(cls, "i", spawn_errno);
  if (exc == NULL) return NULL;
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
  return NULL;
}

PyObject *ffpy_raise(int code) {
  int spawn_errno = FF_SPAWN_ERRNO(code);
  if (code == -ENOMEM || spawn_errno == ENOMEM) return PyErr_NoMemory();
  if (spawn_errno != 0) return raise_worker_start(spawn_errno, code);
  for (size_t i = 0; i < sizeof(code_table) / sizeof(code_table[0]); i++) {
    if (code_table[i].code == code) {
      PyErr_SetString(*code_table[i].type, code_table[i].message);
      return NULL;
    }
  }
  if (code == FF_EQUOTA) return raise_oserror(EDQUOT, ff_strerror(code));
  if (code < 0 && code > -4096) return raise_oserror(-code, ff_strerror(code));
  PyObject *args = Py_BuildValue("(is)", code, ff_strerror(code));
  if (args == NULL) return NULL;
  PyErr_SetObject(ffpy_error_type, args);
  Py_DECREF(args);
  return NULL;
}

PyObject *ffpy_pool_failure(ff_pool_t *pool) {
  int code = ff_pool_error(pool);
  if (code == 0) Py_RETURN_NONE;
  size_t length = ff_pool_error_detail(pool, NULL, 0);
  PyObject *detail = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
  if (detail == NULL) return NULL;
  ff_pool_error_detail(pool, PyBytes_AS_STRING(detail), length);
  ff_exit_t how;
  ff_pool_error_exit(pool, &how);
  return Py_BuildValue("(iN(iii))", code, detail, (int)how.pid, how.exit_code,
                       how.term_signal);
}

PyObject *ffpy_raise_for_pool(int code, ff_pool_t *pool) {
  if ((code != FF_EINITFAILED && code != FF_EZYGOTELOST) ||
      pool_failure == NULL || pool == NULL)
    return ffpy_raise(code);
  /* Why the pool cannot run tasks: its initializer's error, or how its
   * zygote ended. */
  PyObject *failure = ffpy_pool_failure(pool);
  if (failure == NULL) return NULL;
  PyObject *exc;
  if (failure == Py_None)
    exc = PyObject_CallFunction(pool_failure, "iy(iii)", code, "", 0, -1, 0);
  else
    exc = PyObject_CallFunction(pool_failure, "iOO", code,
                                PyTuple_GET_ITEM(failure, 1),
                                PyTuple_GET_ITEM(failure, 2));
  Py_DECREF(failure);
  if (exc == NULL) return NULL;
  PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  Py_DECREF(exc);
  return NULL;
}
