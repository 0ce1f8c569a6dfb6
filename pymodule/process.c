/* What forkfarm.Process needs of the runtime.
 *
 * _core.fork() is os.fork() made the way a pool forks its zygote: the
 * runtime's loop thread parked where it holds no lock, and its callback
 * thread (which runs Python) between two batches (ff_fork), and the
 * interpreter's own fork steps around it (PyOS_BeforeFork, then
 * PyOS_AfterFork_Parent or PyOS_AfterFork_Child), as os.fork() runs them.
 * CPython's warning about forking a process with threads is os.fork()'s
 * alone, so the runtime's threads, which the park makes safe, raise none.
 *
 * A child of the fork server did not inherit the segments its arguments
 * name: the parent sends their descriptors with the arguments
 * (_core.segment_fd) and the child adopts them under their ids
 * (_core.adopt_segment), so that the handles find them. */
#include "core.h"

#include <errno.h>
#include <unistd.h>

/* The thread state of the thread that forks, between the hooks; thread
 * local because two threads may fork at once. */
static _Thread_local PyThreadState *fork_state;

static void process_prepare(void *arg) {
  (void)arg;
  PyEval_RestoreThread(fork_state);
  ffpy_shared_before_fork();
  PyOS_BeforeFork();
}

static void process_parent(void *arg) {
  (void)arg;
  PyOS_AfterFork_Parent();
  fork_state = PyEval_SaveThread();
}

static void process_child(void *arg) {
  (void)arg;
  PyOS_AfterFork_Child();
  fork_state = PyEval_SaveThread();
}

static int finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

PyObject *ffpy_fork(PyObject *module, PyObject *args) {
  (void)module;
  double callbacks_wait = FF_FORK_CALLBACK_WAIT;
  if (!PyArg_ParseTuple(args, "|d:fork", &callbacks_wait)) return NULL;
  /* os.fork()'s own refusals and audit event. */
  if (finalizing()) {
    PyErr_SetString(PyExc_RuntimeError, "can't fork at interpreter shutdown");
    return NULL;
  }
  if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
    PyErr_SetString(PyExc_RuntimeError,
                    "fork not supported for subinterpreters");
    return NULL;
  }
  if (PySys_Audit("os.fork", NULL) < 0) return NULL;
  ff_fork_hooks_t hooks = {process_prepare, process_parent, process_child,
                           NULL};
  /* Released while the loop thread parks: the hooks take it back for the
   * fork itself, as os.fork() holds it. */
  fork_state = PyEval_SaveThread();
  pid_t pid = ff_fork(&hooks, callbacks_wait);
  PyEval_RestoreThread(fork_state);
  if (pid < 0) {
    errno = -pid;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  return PyLong_FromLong((long)pid);
}

PyObject *ffpy_dumps_with_pins(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *value, *protocol = NULL, *dumps = Py_None;
  if (!PyArg_ParseTuple(args, "O|OO:dumps_with_pins", &value, &protocol,
                        &dumps))
    return NULL;
  if (dumps != Py_None && !PyCallable_Check(dumps)) {
    PyErr_SetString(PyExc_TypeError, "dumps must be callable or None");
    return NULL;
  }
  PyObject *five = NULL;
  if (protocol == NULL && (protocol = five = PyLong_FromLong(5)) == NULL)
    return NULL;
  PyObject *pins = NULL;
  ffpy_encoding_t how = {protocol, 0, NULL, dumps == Py_None ? NULL : dumps,
                         &pins};
  PyObject *pickled = ffpy_encode(value, &how, NULL);
  Py_XDECREF(five);
  if (pickled == NULL) return NULL;
  PyObject *pair = PyTuple_Pack(2, pickled, pins);
  Py_DECREF(pickled);
  Py_DECREF(pins);
  return pair;
}

PyObject *ffpy_segment_fd(PyObject *module, PyObject *arg) {
  (void)module;
  unsigned long long id = PyLong_AsUnsignedLongLong(arg);
  if (id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  int fd = -1;
  int rc;
  /* A worker may ask its parent for it: not with the GIL held. */
  Py_BEGIN_ALLOW_THREADS
  rc = ff_segment_open((uint64_t)id, &fd);
  Py_END_ALLOW_THREADS
  if (rc == -ENOENT) {
    PyErr_Format(PyExc_LookupError,
                 "shared segment %llu is not reachable from this process", id);
    return NULL;
  }
  if (rc < 0) return ffpy_raise(rc);
  PyObject *number = PyLong_FromLong(fd);
  if (number == NULL) close(fd);
  return number;
}

PyObject *ffpy_adopt_segment(PyObject *module, PyObject *args) {
  (void)module;
  unsigned long long id;
  int fd;
  if (!PyArg_ParseTuple(args, "Ki:adopt_segment", &id, &fd)) return NULL;
  int rc = ff_segment_adopt((uint64_t)id, fd);
  if (rc < 0) return ffpy_raise(rc);
  Py_RETURN_NONE;
}
