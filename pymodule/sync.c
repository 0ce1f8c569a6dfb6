/* _core.Mutex, _core.Semaphore, _core.Event and _core.Cond: the runtime's
 * process-shared primitives (lib/sync.c) at an offset of a shared segment.
 * Each object holds a buffer view of its segment, so the memory stays
 * mapped while it lives. Waits release the GIL and come back for Ctrl-C;
 * forkfarm/synchronize.py builds multiprocessing's classes on these. */
#include "core.h"

#include <errno.h>
#include <stdatomic.h>

typedef struct {
  PyObject_HEAD
  Py_buffer view; /* of the segment: keeps it mapped */
  void *slot;     /* the primitive, inside view */
} ffpy_sync_t;

/* The slot a primitive of size bytes takes at offset in segment. */
static PyObject *sync_new(PyTypeObject *type, PyObject *args, PyObject *kw,
                          size_t size) {
  static char *names[] = {"segment", "offset", NULL};
  PyObject *segment;
  Py_ssize_t offset;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "On", names, &segment, &offset))
    return NULL;
  ffpy_sync_t *self = (ffpy_sync_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  if (PyObject_GetBuffer(segment, &self->view, PyBUF_WRITABLE) < 0) {
    self->view.obj = NULL;
    Py_DECREF(self);
    return NULL;
  }
  if (offset < 0 || offset % 16 != 0 ||
      (size_t)offset + size > (size_t)self->view.len) {
    PyErr_Format(PyExc_ValueError,
                 "offset %zd does not hold a %zu-byte primitive aligned to "
                 "16 bytes in a buffer of %zd bytes",
                 offset, size, self->view.len);
    Py_DECREF(self);
    return NULL;
  }
  self->slot = (char *)self->view.buf + offset;
  return (PyObject *)self;
}

static void sync_dealloc(ffpy_sync_t *self) {
  if (self->view.obj != NULL) PyBuffer_Release(&self->view);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The wait of a primitive, run with the GIL released. */
typedef struct {
  void *slot;
  uint32_t seq;   /* for a condition's sleep */
  pid_t dead;     /* for a mutex taken over */
} wait_arg_t;

/* Waits through ffpy_wait_interruptibly: 1 done, 0 timed out, -1 with an
 * exception (KeyboardInterrupt, say). A timeout of None waits without
 * limit; a negative one is 0, as in multiprocessing. */
static int sync_wait(int (*wait)(void *arg, double timeout), wait_arg_t *arg,
                     PyObject *timeout_obj) {
  double timeout = ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return -1;
  return ffpy_wait_interruptibly(wait, arg, timeout);
}

/* ---- Mutex --------------------------------------------------------------- */

static PyObject *mutex_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  return sync_new(type, args, kw, sizeof(ff_mutex_t));
}

static PyObject *mutex_init(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  ff_mutex_init(self->slot);
  Py_RETURN_NONE;
}

static int mutex_wait_fn(void *arg, double timeout) {
  wait_arg_t *a = arg;
  int rc = ff_mutex_acquire(a->slot, timeout, &a->dead);
  return rc == -EOWNERDEAD ? 0 : rc;
}

/* acquire(timeout=None) -> 0 taken, -1 timed out, or the pid of a dead
 * holder it was taken over from. */
static PyObject *mutex_acquire(ffpy_sync_t *self, PyObject *args) {
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTuple(args, "|O:acquire", &timeout)) return NULL;
  wait_arg_t arg = {self->slot, 0, 0};
  /* Uncontended: no GIL release, no clock. */
  if (ff_mutex_try_acquire(self->slot) == 0) return PyLong_FromLong(0);
  if (timeout != Py_None) {
    double t = ffpy_parse_timeout(timeout);
    if (t == -2.0) return NULL;
    if (t == 0) {
      /* No wait, but a look at whether the holder is dead. */
      int rc = ff_mutex_acquire(self->slot, 0, &arg.dead);
      if (rc == 0 || rc == -EOWNERDEAD) return PyLong_FromLong((long)arg.dead);
      return PyLong_FromLong(-1);
    }
  }
  int got = sync_wait(mutex_wait_fn, &arg, timeout);
  if (got < 0) return NULL;
  if (!got) return PyLong_FromLong(-1);
  return PyLong_FromLong((long)arg.dead);
}

static PyObject *mutex_release(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_mutex_release(self->slot) == 0);
}

static PyObject *mutex_holder(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromLong((long)ff_mutex_holder(self->slot));
}

static PyObject *mutex_held_by_caller(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_mutex_held_by_caller(self->slot));
}

static PyMethodDef mutex_methods[] = {
    {"init", (PyCFunction)mutex_init, METH_NOARGS, "init(): unlocked"},
    {"acquire", (PyCFunction)mutex_acquire, METH_VARARGS,
     "acquire(timeout=None) -> 0 taken, -1 timed out, or the pid of a dead "
     "holder it was taken over from"},
    {"release", (PyCFunction)mutex_release, METH_NOARGS,
     "release() -> False when it was not held"},
    {"holder", (PyCFunction)mutex_holder, METH_NOARGS,
     "holder() -> the pid holding it, or 0"},
    {"held_by_caller", (PyCFunction)mutex_held_by_caller, METH_NOARGS,
     "held_by_caller() -> whether this thread holds it"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_mutex_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Mutex",
    .tp_basicsize = sizeof(ffpy_sync_t),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Mutex(segment, offset): a process-shared lock in a segment",
    .tp_methods = mutex_methods,
    .tp_new = mutex_new,
};

/* ---- Semaphore ------------------------------------------------------------- */

static PyObject *semaphore_new(PyTypeObject *type, PyObject *args,
                               PyObject *kw) {
  return sync_new(type, args, kw, sizeof(ff_semaphore_t));
}

static PyObject *semaphore_init(ffpy_sync_t *self, PyObject *args) {
  unsigned int value, max;
  if (!PyArg_ParseTuple(args, "II:init", &value, &max)) return NULL;
  if (ff_semaphore_init(self->slot, value, max) < 0) {
    PyErr_SetString(PyExc_ValueError, "the semaphore's value is out of range");
    return NULL;
  }
  Py_RETURN_NONE;
}

static int semaphore_wait_fn(void *arg, double timeout) {
  return ff_semaphore_acquire(((wait_arg_t *)arg)->slot, timeout);
}

static PyObject *semaphore_acquire(ffpy_sync_t *self, PyObject *args) {
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTuple(args, "|O:acquire", &timeout)) return NULL;
  if (ff_semaphore_acquire(self->slot, 0) == 0) Py_RETURN_TRUE;
  wait_arg_t arg = {self->slot, 0, 0};
  int got = sync_wait(semaphore_wait_fn, &arg, timeout);
  if (got < 0) return NULL;
  return PyBool_FromLong(got);
}

static PyObject *semaphore_release(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_semaphore_release(self->slot) == 0);
}

static PyObject *semaphore_value(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLong(ff_semaphore_value(self->slot));
}

static PyMethodDef semaphore_methods[] = {
    {"init", (PyCFunction)semaphore_init, METH_VARARGS,
     "init(value, max): max 0 for no bound"},
    {"acquire", (PyCFunction)semaphore_acquire, METH_VARARGS,
     "acquire(timeout=None) -> bool"},
    {"release", (PyCFunction)semaphore_release, METH_NOARGS,
     "release() -> False past the bound"},
    {"value", (PyCFunction)semaphore_value, METH_NOARGS, "value() -> int"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_semaphore_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Semaphore",
    .tp_basicsize = sizeof(ffpy_sync_t),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Semaphore(segment, offset): a process-shared semaphore",
    .tp_methods = semaphore_methods,
    .tp_new = semaphore_new,
};

/* ---- Event ------------------------------------------------------------------ */

static PyObject *event_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  return sync_new(type, args, kw, sizeof(ff_event_t));
}

static PyObject *event_init(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  ff_event_init(self->slot);
  Py_RETURN_NONE;
}

static PyObject *event_set(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  ff_event_set(self->slot);
  Py_RETURN_NONE;
}

static PyObject *event_clear(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  ff_event_clear(self->slot);
  Py_RETURN_NONE;
}

static PyObject *event_is_set(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_event_is_set(self->slot));
}

static int event_wait_fn(void *arg, double timeout) {
  return ff_event_wait(((wait_arg_t *)arg)->slot, timeout);
}

static PyObject *event_wait(ffpy_sync_t *self, PyObject *args) {
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTuple(args, "|O:wait", &timeout)) return NULL;
  if (ff_event_is_set(self->slot)) Py_RETURN_TRUE;
  wait_arg_t arg = {self->slot, 0, 0};
  int got = sync_wait(event_wait_fn, &arg, timeout);
  if (got < 0) return NULL;
  return PyBool_FromLong(got);
}

static PyMethodDef event_methods[] = {
    {"init", (PyCFunction)event_init, METH_NOARGS, "init(): clear"},
    {"set", (PyCFunction)event_set, METH_NOARGS, "set()"},
    {"clear", (PyCFunction)event_clear, METH_NOARGS, "clear()"},
    {"is_set", (PyCFunction)event_is_set, METH_NOARGS, "is_set() -> bool"},
    {"wait", (PyCFunction)event_wait, METH_VARARGS,
     "wait(timeout=None) -> bool"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_event_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Event",
    .tp_basicsize = sizeof(ffpy_sync_t),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Event(segment, offset): a process-shared event",
    .tp_methods = event_methods,
    .tp_new = event_new,
};

/* ---- Cond ---------------------------------------------------------------------- */

static PyObject *cond_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  return sync_new(type, args, kw, sizeof(ff_cond_t));
}

static PyObject *cond_init(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  ff_cond_init(self->slot);
  Py_RETURN_NONE;
}

static PyObject *cond_prepare(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLong(ff_cond_prepare(self->slot));
}

static int cond_wait_fn(void *arg, double timeout) {
  wait_arg_t *a = arg;
  return ff_cond_sleep(a->slot, a->seq, timeout);
}

static PyObject *cond_sleep(ffpy_sync_t *self, PyObject *args) {
  unsigned int seq;
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTuple(args, "I|O:sleep", &seq, &timeout)) return NULL;
  wait_arg_t arg = {self->slot, seq, 0};
  int got = sync_wait(cond_wait_fn, &arg, timeout);
  if (got < 0) return NULL;
  return PyBool_FromLong(got);
}

static PyObject *cond_finish(ffpy_sync_t *self, PyObject *arg) {
  int notified = PyObject_IsTrue(arg);
  if (notified < 0) return NULL;
  return PyBool_FromLong(ff_cond_finish(self->slot, notified));
}

static PyObject *cond_notify(ffpy_sync_t *self, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  unsigned count = n < 0 || n > UINT32_MAX ? UINT32_MAX : (unsigned)n;
  return PyLong_FromUnsignedLong(ff_cond_notify(self->slot, count));
}

static PyMethodDef cond_methods[] = {
    {"init", (PyCFunction)cond_init, METH_NOARGS, "init()"},
    {"prepare", (PyCFunction)cond_prepare, METH_NOARGS,
     "prepare() -> seq: counts the caller in, with the lock held"},
    {"sleep", (PyCFunction)cond_sleep, METH_VARARGS,
     "sleep(seq, timeout=None) -> notified, without the lock"},
    {"finish", (PyCFunction)cond_finish, METH_O,
     "finish(notified) -> notified: counts the caller out, with the lock "
     "held again"},
    {"notify", (PyCFunction)cond_notify, METH_O,
     "notify(n) -> how many were woken (n < 0: all), with the lock held"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_cond_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Cond",
    .tp_basicsize = sizeof(ffpy_sync_t),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cond(segment, offset): a process-shared condition variable",
    .tp_methods = cond_methods,
    .tp_new = cond_new,
};

/* slot_refs(segment, offset, delta) -> the count after adding delta: how
 * many objects, in every process, use the slot at offset. */
PyObject *ffpy_slot_refs(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *segment;
  Py_ssize_t offset;
  int delta;
  if (!PyArg_ParseTuple(args, "Oni:slot_refs", &segment, &offset, &delta))
    return NULL;
  Py_buffer view;
  if (PyObject_GetBuffer(segment, &view, PyBUF_WRITABLE) < 0) return NULL;
  PyObject *result = NULL;
  if (offset < 0 || offset % 4 != 0 || offset + 4 > view.len) {
    PyErr_SetString(PyExc_ValueError, "the count's offset is out of range");
  } else {
    _Atomic int32_t *count = (_Atomic int32_t *)((char *)view.buf + offset);
    result = PyLong_FromLong((long)(atomic_fetch_add(count, delta) + delta));
  }
  PyBuffer_Release(&view);
  return result;
}
