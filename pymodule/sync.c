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

/* ---- Mutex ----------------------------------------------------------------
 * Lock and RLock themselves, with multiprocessing's method signatures, so
 * that forkfarm/synchronize.py can bind acquire and release straight to
 * these (one C call each, as multiprocessing's SemLock). */

typedef struct {
  ffpy_sync_t base;
  int recursive;
  int32_t *count; /* an RLock's depth, in the slot: only its holder writes */
} ffpy_mutex_t;

static PyObject *mutex_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *names[] = {"segment", "offset", "recursive", NULL};
  PyObject *segment;
  Py_ssize_t offset;
  int recursive = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "On|p", names, &segment, &offset,
                                   &recursive))
    return NULL;
  PyObject *pair = Py_BuildValue("(On)", segment, offset);
  if (pair == NULL) return NULL;
  /* The mutex, then the RLock's depth. */
  ffpy_mutex_t *self = (ffpy_mutex_t *)sync_new(type, pair, NULL,
                                               sizeof(ff_mutex_t) + 4);
  Py_DECREF(pair);
  if (self == NULL) return NULL;
  self->recursive = recursive;
  self->count = (int32_t *)((char *)self->base.slot + sizeof(ff_mutex_t));
  return (PyObject *)self;
}

static PyObject *mutex_init(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  ff_mutex_init(self->base.slot);
  *self->count = 0;
  Py_RETURN_NONE;
}

static int mutex_wait_fn(void *arg, double timeout) {
  wait_arg_t *a = arg;
  int rc = ff_mutex_acquire(a->slot, timeout, &a->dead);
  return rc == -EOWNERDEAD ? 0 : rc;
}

/* Parses multiprocessing's (block=True, timeout=None). */
static int parse_block_timeout(PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames, int *block,
                               PyObject **timeout) {
  *block = 1;
  *timeout = Py_None;
  PyObject *block_obj = NULL;
  if (nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "acquire() takes at most 2 arguments");
    return -1;
  }
  if (nargs >= 1) block_obj = args[0];
  if (nargs == 2) *timeout = args[1];
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *name = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_CompareWithASCIIString(name, "block") == 0 && nargs < 1)
      block_obj = args[nargs + i];
    else if (PyUnicode_CompareWithASCIIString(name, "timeout") == 0 &&
             nargs < 2)
      *timeout = args[nargs + i];
    else {
      PyErr_Format(PyExc_TypeError,
                   "acquire() got an unexpected or repeated keyword argument "
                   "'%U'",
                   name);
      return -1;
    }
  }
  if (block_obj != NULL && (*block = PyObject_IsTrue(block_obj)) < 0)
    return -1;
  return 0;
}

/* Says that a dead holder's lock was taken over: 0, or -1 with an
 * exception (warnings turned into errors). */
static int warn_abandoned(ffpy_mutex_t *self, pid_t dead) {
  return PyErr_WarnFormat(ffpy_class(FFPY_ABANDONED_LOCK_WARNING), 1,
                          "%s: process %d died holding it; it was taken over "
                          "(what it protected may be inconsistent)",
                          self->recursive ? "RLock" : "Lock", (int)dead);
}

/* Takes the mutex: 1 taken, 0 not, -1 with an exception. A holder found
 * dead is named in an AbandonedLockWarning. */
static int mutex_take(ffpy_mutex_t *self, int block, PyObject *timeout) {
  wait_arg_t arg = {self->base.slot, 0};
  int got;
  if (ff_mutex_try_acquire(self->base.slot) == 0) return 1;
  double t = block ? ffpy_parse_timeout(timeout) : 0.0;
  if (t == -2.0) return -1;
  if (t == 0) {
    /* No wait, but a look at whether the holder is dead. */
    int rc = ff_mutex_acquire(self->base.slot, 0, &arg.dead);
    got = rc == 0 || rc == -EOWNERDEAD;
  } else {
    got = ffpy_wait_interruptibly(mutex_wait_fn, &arg, t);
    if (got < 0) return -1;
  }
  if (got && arg.dead > 0 && warn_abandoned(self, arg.dead) < 0) {
    ff_mutex_release(self->base.slot);
    return -1;
  }
  return got;
}

static PyObject *mutex_acquire(ffpy_mutex_t *self, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames) {
  int block;
  PyObject *timeout;
  if (parse_block_timeout(args, nargs, kwnames, &block, &timeout) < 0)
    return NULL;
  if (self->recursive && ff_mutex_held_by_caller(self->base.slot)) {
    ++*self->count;
    Py_RETURN_TRUE;
  }
  int got = mutex_take(self, block, timeout);
  if (got < 0) return NULL;
  if (got && self->recursive) *self->count = 1;
  return PyBool_FromLong(got);
}

static PyObject *mutex_release(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  if (self->recursive) {
    if (!ff_mutex_held_by_caller(self->base.slot)) {
      PyErr_SetString(PyExc_AssertionError,
                      "attempt to release recursive lock not owned by thread");
      return NULL;
    }
    if (--*self->count > 0) Py_RETURN_NONE;
  }
  if (ff_mutex_release(self->base.slot) < 0) {
    PyErr_SetString(PyExc_ValueError,
                    "semaphore or lock released too many times");
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *mutex_enter(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  return mutex_acquire(self, NULL, 0, NULL);
}

static PyObject *mutex_exit(ffpy_mutex_t *self, PyObject *args) {
  (void)args;
  return mutex_release(self, NULL);
}

/* For Condition.wait on an RLock: releases it whatever its depth, and
 * returns the depth to restore. */
static PyObject *mutex_release_save(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  if (!ff_mutex_held_by_caller(self->base.slot)) {
    PyErr_SetString(PyExc_AssertionError, "the lock is not held");
    return NULL;
  }
  int32_t depth = self->recursive ? *self->count : 1;
  *self->count = 0;
  ff_mutex_release(self->base.slot);
  return PyLong_FromLong(depth);
}

static PyObject *mutex_acquire_restore(ffpy_mutex_t *self, PyObject *arg) {
  long depth = PyLong_AsLong(arg);
  if (depth == -1 && PyErr_Occurred()) return NULL;
  int got = mutex_take(self, 1, Py_None);
  if (got < 0) return NULL;
  if (self->recursive) *self->count = (int32_t)depth;
  Py_RETURN_NONE;
}

static PyObject *mutex_holder(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromLong((long)ff_mutex_holder(self->base.slot));
}

static PyObject *mutex_held_by_caller(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_mutex_held_by_caller(self->base.slot));
}

static PyObject *mutex_depth(ffpy_mutex_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromLong(ff_mutex_holder(self->base.slot) == 0 ? 0
                         : self->recursive                     ? *self->count
                                                               : 1);
}

static PyMethodDef mutex_methods[] = {
    {"init", (PyCFunction)mutex_init, METH_NOARGS, "init(): unlocked"},
    {"acquire", (PyCFunction)(void (*)(void))mutex_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None) -> bool, as multiprocessing's; a "
     "holder found dead is taken over, with an AbandonedLockWarning"},
    {"release", (PyCFunction)mutex_release, METH_NOARGS, "release()"},
    {"__enter__", (PyCFunction)mutex_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)mutex_exit, METH_VARARGS, NULL},
    {"release_save", (PyCFunction)mutex_release_save, METH_NOARGS,
     "release_save() -> depth: releases it whatever its depth"},
    {"acquire_restore", (PyCFunction)mutex_acquire_restore, METH_O,
     "acquire_restore(depth): takes it back at that depth"},
    {"holder", (PyCFunction)mutex_holder, METH_NOARGS,
     "holder() -> the pid holding it, or 0"},
    {"held_by_caller", (PyCFunction)mutex_held_by_caller, METH_NOARGS,
     "held_by_caller() -> whether this thread holds it"},
    {"depth", (PyCFunction)mutex_depth, METH_NOARGS,
     "depth() -> how many times it is held"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_mutex_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Mutex",
    .tp_basicsize = sizeof(ffpy_mutex_t),
    .tp_dealloc = (destructor)sync_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Mutex(segment, offset, recursive=False): a process-shared Lock "
              "or RLock in a segment",
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

static PyObject *semaphore_acquire(ffpy_sync_t *self, PyObject *const *args,
                                   Py_ssize_t nargs, PyObject *kwnames) {
  int block;
  PyObject *timeout;
  if (parse_block_timeout(args, nargs, kwnames, &block, &timeout) < 0)
    return NULL;
  if (ff_semaphore_acquire(self->slot, 0) == 0) Py_RETURN_TRUE;
  double t = block ? ffpy_parse_timeout(timeout) : 0.0;
  if (t == -2.0) return NULL;
  if (t == 0) Py_RETURN_FALSE;
  wait_arg_t arg = {self->slot, 0};
  int got = ffpy_wait_interruptibly(semaphore_wait_fn, &arg, t);
  if (got < 0) return NULL;
  return PyBool_FromLong(got);
}

static PyObject *semaphore_release(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  if (ff_semaphore_release(self->slot) < 0) {
    PyErr_SetString(PyExc_ValueError,
                    "semaphore or lock released too many times");
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *semaphore_value(ffpy_sync_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLong(ff_semaphore_value(self->slot));
}

static PyMethodDef semaphore_methods[] = {
    {"init", (PyCFunction)semaphore_init, METH_VARARGS,
     "init(value, max): max 0 for no bound"},
    {"acquire", (PyCFunction)(void (*)(void))semaphore_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None) -> bool, as multiprocessing's"},
    {"release", (PyCFunction)semaphore_release, METH_NOARGS,
     "release(): ValueError past the bound"},
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
  wait_arg_t arg = {self->slot, 0};
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

/* ---- Cond ----------------------------------------------------------------------
 * A condition bound to its lock's Mutex, so that wait, notify and
 * notify_all are one C call each, with multiprocessing's signatures. */

typedef struct {
  ffpy_sync_t base;
  ffpy_mutex_t *mutex; /* the condition's lock */
} ffpy_cond_t;

static PyObject *cond_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *names[] = {"segment", "offset", "mutex", NULL};
  PyObject *segment;
  Py_ssize_t offset;
  PyObject *mutex;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OnO!", names, &segment, &offset,
                                   &ffpy_mutex_type, &mutex))
    return NULL;
  PyObject *pair = Py_BuildValue("(On)", segment, offset);
  if (pair == NULL) return NULL;
  ffpy_cond_t *self =
      (ffpy_cond_t *)sync_new(type, pair, NULL, sizeof(ff_cond_t));
  Py_DECREF(pair);
  if (self == NULL) return NULL;
  self->mutex = (ffpy_mutex_t *)Py_NewRef(mutex);
  return (PyObject *)self;
}

static void cond_dealloc(ffpy_cond_t *self) {
  Py_CLEAR(self->mutex);
  sync_dealloc(&self->base);
}

static PyObject *cond_init(ffpy_cond_t *self, PyObject *unused) {
  (void)unused;
  if (ff_cond_init(self->base.slot) < 0) return ffpy_raise(-EINVAL);
  Py_RETURN_NONE;
}

/* AssertionError unless the calling thread holds the condition's lock. */
static int cond_check_owned(ffpy_cond_t *self, const char *what) {
  if (ff_mutex_held_by_caller(self->mutex->base.slot)) return 0;
  PyErr_Format(PyExc_AssertionError,
               "must acquire() condition before using %s()", what);
  return -1;
}

typedef struct {
  ff_cond_t *cond;
  ff_cond_waiter_t *waiter;
} cond_wait_arg_t;

static int cond_wait_fn(void *arg, double timeout) {
  cond_wait_arg_t *a = arg;
  return ff_cond_sleep(a->cond, a->waiter, timeout);
}

/* Takes the lock back after a sleep, whatever signals come meanwhile (the
 * interpreter handles them once the wait returns): a wait always returns
 * with the lock held, as threading's does. 0, or an error code; *dead is
 * set to a dead holder's pid. */
static int cond_reacquire(ffpy_mutex_t *mutex, pid_t *dead) {
  int rc = ff_mutex_try_acquire(mutex->base.slot);
  if (rc == 0) return 0;
  Py_BEGIN_ALLOW_THREADS
  do {
    rc = ff_mutex_acquire(mutex->base.slot, -1, dead);
  } while (rc == -EINTR);
  Py_END_ALLOW_THREADS
  return rc == -EOWNERDEAD ? 0 : rc;
}

static PyObject *cond_wait(ffpy_cond_t *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *timeout_obj = Py_None;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs + nkw > 1) {
    PyErr_SetString(PyExc_TypeError, "wait() takes at most 1 argument");
    return NULL;
  }
  if (nargs == 1) timeout_obj = args[0];
  if (nkw == 1) {
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                         "timeout") != 0) {
      PyErr_Format(PyExc_TypeError,
                   "wait() got an unexpected keyword argument '%U'",
                   PyTuple_GET_ITEM(kwnames, 0));
      return NULL;
    }
    timeout_obj = args[0];
  }
  if (cond_check_owned(self, "wait") < 0) return NULL;
  double timeout = ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;

  ffpy_mutex_t *mutex = self->mutex;
  ff_cond_waiter_t waiter;
  int rc = ff_cond_prepare(self->base.slot, &waiter);
  if (rc < 0) return ffpy_raise(rc);
  int failed = 0; /* an exception is set */
  PyObject *type = NULL, *value = NULL, *traceback = NULL;
  pid_t dead = 0;
  cond_wait_arg_t arg = {self->base.slot, &waiter};
  int got;
  /* The lock is let go whatever an RLock's depth, and taken back at it. */
  int32_t depth = mutex->recursive ? *mutex->count : 1;
  *mutex->count = 0;
  rc = ff_mutex_release(mutex->base.slot);
  if (rc < 0) {
    *mutex->count = depth;
    ffpy_raise(rc);
    failed = 1;
    goto finish;
  }

  got = ffpy_wait_interruptibly(cond_wait_fn, &arg, timeout);
  /* Set aside while the lock is taken back, and raised after. */
  if (got < 0) PyErr_Fetch(&type, &value, &traceback);
  rc = cond_reacquire(mutex, &dead);
  if (rc == 0 && mutex->recursive) *mutex->count = depth;
  if (got < 0) {
    PyErr_Restore(type, value, traceback);
    failed = 1;
  } else if (rc < 0) {
    ffpy_raise(rc);
    failed = 1;
  } else if (dead > 0 && warn_abandoned(mutex, dead) < 0) {
    failed = 1; /* a warning turned into an error, raised with the lock held */
  }

finish:;
  /* Counted out whatever happened, so that the condition's counts stay
   * right for the other waiters. */
  int notified = ff_cond_finish(self->base.slot, &waiter);
  if (failed) return NULL;
  if (notified < 0) return ffpy_raise(notified);
  return PyBool_FromLong(notified);
}

static PyObject *cond_notify(ffpy_cond_t *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames) {
  PyObject *n_obj = NULL;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs + nkw > 1) {
    PyErr_SetString(PyExc_TypeError, "notify() takes at most 1 argument");
    return NULL;
  }
  if (nargs == 1) n_obj = args[0];
  if (nkw == 1) {
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "n") !=
        0) {
      PyErr_Format(PyExc_TypeError,
                   "notify() got an unexpected keyword argument '%U'",
                   PyTuple_GET_ITEM(kwnames, 0));
      return NULL;
    }
    n_obj = args[0];
  }
  Py_ssize_t n = 1;
  if (n_obj != NULL) {
    n = PyLong_AsSsize_t(n_obj);
    if (n == -1 && PyErr_Occurred()) return NULL;
  }
  if (cond_check_owned(self, "notify") < 0) return NULL;
  /* As threading's: n <= 0 wakes nobody. */
  if (n > 0)
    (void)ff_cond_notify(self->base.slot, n >= (Py_ssize_t)UINT32_MAX
                                              ? UINT32_MAX
                                              : (unsigned)n);
  Py_RETURN_NONE;
}

static PyObject *cond_notify_all(ffpy_cond_t *self, PyObject *unused) {
  (void)unused;
  if (cond_check_owned(self, "notify") < 0) return NULL;
  (void)ff_cond_notify(self->base.slot, UINT32_MAX);
  Py_RETURN_NONE;
}

static PyObject *cond_waiters(ffpy_cond_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLong(ff_cond_waiters(self->base.slot));
}

static PyObject *cond_pending(ffpy_cond_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLong(ff_cond_pending(self->base.slot));
}

static PyMethodDef cond_methods[] = {
    {"init", (PyCFunction)cond_init, METH_NOARGS, "init()"},
    {"wait", (PyCFunction)(void (*)(void))cond_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None) -> notified: lets the lock go, sleeps until "
     "notified or timeout, takes the lock back"},
    {"notify", (PyCFunction)(void (*)(void))cond_notify,
     METH_FASTCALL | METH_KEYWORDS,
     "notify(n=1): wakes up to n of the waits begun before it"},
    {"notify_all", (PyCFunction)cond_notify_all, METH_NOARGS,
     "notify_all(): wakes every wait begun before it"},
    {"waiters", (PyCFunction)cond_waiters, METH_NOARGS,
     "waiters() -> the waits in progress"},
    {"pending", (PyCFunction)cond_pending, METH_NOARGS,
     "pending() -> notifications handed out and not yet taken"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_cond_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Cond",
    .tp_basicsize = sizeof(ffpy_cond_t),
    .tp_dealloc = (destructor)cond_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cond(segment, offset, mutex): a process-shared condition "
              "variable in a segment, with mutex as its lock",
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
