/* The one place where runtime return codes become Python exceptions at the
 * C level: everything is _core.Error(code, message), and the Python layer
 * (forkfarm/_errors.py) turns codes into the exceptions users catch. */
#include "core.h"

#include <errno.h>

PyObject *ffpy_error_type;

PyObject *ffpy_raise(int code) {
  if (code == -ENOMEM) return PyErr_NoMemory();
  PyObject *args = Py_BuildValue("(is)", code, ff_strerror(code));
  if (args == NULL) return NULL;
  PyErr_SetObject(ffpy_error_type, args);
  Py_DECREF(args);
  return NULL;
}
