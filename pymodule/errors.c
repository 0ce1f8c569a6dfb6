/* The one place where runtime return codes become Python exceptions at the
 * C level.
 *
 * - An errno code becomes an OSError with that errno, which Python turns
 *   into its subclass (FileNotFoundError, BlockingIOError, ...); ENOMEM is
 *   MemoryError.
 * - A process that could not be started (FF_ESPAWN) becomes the package's
 *   WorkerStartError, carrying the errno.
 * - A worker's used-up segment quota (FF_EQUOTA) is an OSError with EDQUOT.
 * - The other runtime codes are _core.Error(code, message), which
 *   forkfarm/_errors.py turns into what users catch, knowing the pool.
 *
 * The package's own classes are registered once, at its import
 * (_core.register_errors), so that C raises the final class directly. */
#include "core.h"

#include <errno.h>

PyObject *ffpy_error_type;

/* The package's classes, by the name they are registered under. */
static PyObject *worker_start_error;

PyObject *ffpy_register_errors(PyObject *module, PyObject *args,
                               PyObject *kw) {
  (void)module;
  static char *names[] = {"WorkerStartError", NULL};
  PyObject *start = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|$O:register_errors", names,
                                   &start))
    return NULL;
  if (start != NULL) {
    if (!PyType_Check(start) ||
        !PyType_IsSubtype((PyTypeObject *)start,
                          (PyTypeObject *)PyExc_Exception)) {
      PyErr_SetString(PyExc_TypeError,
                      "WorkerStartError must be an exception class");
      return NULL;
    }
    Py_XSETREF(worker_start_error, Py_NewRef(start));
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

PyObject *ffpy_raise(int code) {
  int spawn_errno = FF_SPAWN_ERRNO(code);
  if (code == -ENOMEM || spawn_errno == ENOMEM) return PyErr_NoMemory();
  if (spawn_errno != 0) {
    if (worker_start_error == NULL)
      return raise_oserror(spawn_errno, ff_strerror(code));
    PyObject *exc = PyObject_CallFunction(worker_start_error, "i",
                                          spawn_errno);
    if (exc == NULL) return NULL;
    PyErr_SetObject(worker_start_error, exc);
    Py_DECREF(exc);
    return NULL;
  }
  if (code == FF_EQUOTA) return raise_oserror(EDQUOT, ff_strerror(code));
  if (code < 0 && code > -4096) return raise_oserror(-code, ff_strerror(code));
  PyObject *args = Py_BuildValue("(is)", code, ff_strerror(code));
  if (args == NULL) return NULL;
  PyErr_SetObject(ffpy_error_type, args);
  Py_DECREF(args);
  return NULL;
}
