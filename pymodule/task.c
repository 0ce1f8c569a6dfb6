/* _core.Task and _core.CompletionQueue: Python handles on runtime tasks.
 *
 * Waiting releases the GIL and sleeps on the task's futex in C; a signal
 * wakes the wait so that Ctrl-C raises KeyboardInterrupt at once. */
#include "core.h"

#include <errno.h>
#include <math.h>
#include <time.h>

double ffpy_parse_timeout(PyObject *value) {
  if (value == NULL || value == Py_None) return -1.0;
  double t = PyFloat_AsDouble(value);
  if (t == -1.0 && PyErr_Occurred()) return -2.0;
  if (isnan(t)) {
    PyErr_SetString(PyExc_ValueError, "timeout must be a number, not NaN");
    return -2.0;
  }
  return t < 0 ? 0.0 : t;
}

int ffpy_wait_interruptibly(int (*wait)(void *arg, double timeout), void *arg,
                            double timeout) {
  double deadline = -1.0;
  struct timespec now;
  if (timeout >= 0) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    deadline = (double)now.tv_sec + now.tv_nsec * 1e-9 + timeout;
  }
  for (;;) {
    double left = -1.0;
    if (deadline >= 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      left = deadline - ((double)now.tv_sec + now.tv_nsec * 1e-9);
      if (left < 0) left = 0;
    }
    /* A signal may go to another thread (a Timer's, say) and leave this
     * wait asleep: it wakes at least every 100 ms to run the handlers. */
    double slice = left < 0 || left > 0.1 ? 0.1 : left;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = wait(arg, slice);
    Py_END_ALLOW_THREADS
    if (rc == 0) return 1;
    if (rc == -ETIMEDOUT) {
      if (slice == left) return 0;
      if (PyErr_CheckSignals() < 0) return -1;
      continue;
    }
    if (rc == -EINTR) {
      if (PyErr_CheckSignals() < 0) return -1;
      continue;
    }
    ffpy_raise(rc);
    return -1;
  }
}

/* ---- Task ------------------------------------------------------------------- */

PyObject *ffpy_task_wrap(ff_task_t *task) {
  ffpy_task_t *self = PyObject_New(ffpy_task_t, &ffpy_task_type);
  if (self == NULL) {
    ff_task_release(task);
    return NULL;
  }
  self->task = task;
  self->notify = NULL;
  self->consumed = 0;
  return (PyObject *)self;
}

static void task_dealloc(ffpy_task_t *self) {
  ff_task_release(self->task);
  Py_XDECREF(self->notify);
  PyObject_Free(self);
}

static int task_wait_fn(void *arg, double timeout) {
  return ff_task_wait(arg, timeout);
}

static PyObject *task_wait(ffpy_task_t *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"timeout", NULL};
  PyObject *timeout_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", names, &timeout_obj))
    return NULL;
  if (ff_task_done(self->task)) Py_RETURN_TRUE;
  double timeout = ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;
  int rc = ffpy_wait_interruptibly(task_wait_fn, self->task, timeout);
  if (rc < 0) return NULL;
  return PyBool_FromLong(rc);
}

static PyObject *task_done(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_task_done(self->task));
}

static PyObject *task_cancel(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_task_cancel(self->task) == 0);
}

static PyObject *task_kill(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = ff_task_kill(self->task);
  Py_END_ALLOW_THREADS
  return PyBool_FromLong(rc == 0);
}

/* (status, payload, (pid, exit_code, signal)) once settled, else None. */
static PyObject *task_outcome(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  int status = ff_task_status(self->task);
  if (status == FF_EPENDING) Py_RETURN_NONE;
  size_t length = 0;
  const void *data = ff_task_result(self->task, &length);
  const ff_exit_t *how = ff_task_exit(self->task);
  return Py_BuildValue("(iy#(iii))", status, data ? (const char *)data : "",
                       (Py_ssize_t)length, (int)how->pid, how->exit_code,
                       how->term_signal);
}

static PyObject *task_run_ns(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromUnsignedLongLong(ff_task_run_ns(self->task));
}

/* ---- ResultReader: a big result, unpickled as it is read --------------- */

/* Results at least this large, plain pickles, are unpickled from a reader
 * that gives back the pages it has read: the result's bytes and the value
 * made of them do not both have to fit, one copy of memory at a time. */
#define STREAM_DECODE_MIN ((size_t)32 << 20)
/* How much is read before its pages go back. */
#define STREAM_DISCARD_STEP ((size_t)4 << 20)

typedef struct {
  PyObject_HEAD
  ffpy_task_t *owner; /* keeps the runtime task, and its bytes, alive */
  const char *data;
  size_t length;
  size_t position;
  size_t discarded; /* the bytes before this have gone back */
} ffpy_result_reader_t;

static void reader_dealloc(ffpy_result_reader_t *self) {
  Py_XDECREF(self->owner);
  PyObject_Free(self);
}

static void reader_advance(ffpy_result_reader_t *self, size_t n) {
  self->position += n;
  if (self->position - self->discarded >= STREAM_DISCARD_STEP) {
    ff_task_result_consumed(self->owner->task, self->position);
    self->discarded = self->position;
  }
}

/* read(n=-1) -> bytes */
static PyObject *reader_read(ffpy_result_reader_t *self, PyObject *args) {
  Py_ssize_t n = -1;
  if (!PyArg_ParseTuple(args, "|n:read", &n)) return NULL;
  size_t left = self->length - self->position;
  size_t take = n < 0 || (size_t)n > left ? left : (size_t)n;
  PyObject *bytes =
      PyBytes_FromStringAndSize(self->data + self->position, (Py_ssize_t)take);
  if (bytes != NULL) reader_advance(self, take);
  return bytes;
}

/* readinto(buffer) -> int: straight into what the unpickler made (a big
 * bytes object's own memory) */
static PyObject *reader_readinto(ffpy_result_reader_t *self, PyObject *arg) {
  Py_buffer view;
  if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) return NULL;
  size_t left = self->length - self->position;
  size_t take = (size_t)view.len < left ? (size_t)view.len : left;
  /* In steps, each step's source given back before the next: copying a
   * 512 MiB bytes object never holds both copies whole. */
  for (size_t done = 0; done < take;) {
    size_t step = take - done < STREAM_DISCARD_STEP ? take - done
                                                    : STREAM_DISCARD_STEP;
    memcpy((char *)view.buf + done, self->data + self->position, step);
    reader_advance(self, step);
    done += step;
  }
  PyBuffer_Release(&view);
  return PyLong_FromSize_t(take);
}

/* readline() -> bytes, up to and with the next newline */
static PyObject *reader_readline(ffpy_result_reader_t *self, PyObject *unused) {
  (void)unused;
  const char *at = self->data + self->position;
  size_t left = self->length - self->position;
  const char *newline = memchr(at, '\n', left);
  size_t take = newline ? (size_t)(newline - at) + 1 : left;
  PyObject *bytes = PyBytes_FromStringAndSize(at, (Py_ssize_t)take);
  if (bytes != NULL) reader_advance(self, take);
  return bytes;
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)reader_read, METH_VARARGS, "read(n=-1) -> bytes"},
    {"readinto", (PyCFunction)reader_readinto, METH_O, "readinto(b) -> int"},
    {"readline", (PyCFunction)reader_readline, METH_NOARGS,
     "readline() -> bytes"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ffpy_result_reader_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.ResultReader",
    .tp_basicsize = sizeof(ffpy_result_reader_t),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A task's result, read once by an unpickler, its memory given "
              "back as it goes.",
    .tp_methods = reader_methods,
};

/* Unpickles a big plain result with pickle.Unpickler over a ResultReader.
 * The result is gone afterwards. */
static PyObject *task_value_streamed(ffpy_task_t *self, const char *data,
                                     size_t length) {
  static PyObject *unpickler_class;
  if (unpickler_class == NULL) {
    if (PyType_Ready(&ffpy_result_reader_type) < 0) return NULL;
    PyObject *pickle = PyImport_ImportModule("pickle");
    unpickler_class =
        pickle ? PyObject_GetAttrString(pickle, "Unpickler") : NULL;
    Py_XDECREF(pickle);
    if (unpickler_class == NULL) return NULL;
  }
  ffpy_result_reader_t *reader =
      PyObject_New(ffpy_result_reader_t, &ffpy_result_reader_type);
  if (reader == NULL) return NULL;
  reader->owner = (ffpy_task_t *)Py_NewRef(self);
  reader->data = data;
  reader->length = length;
  reader->position = reader->discarded = 0;
  self->consumed = 1;
  PyObject *unpickler =
      PyObject_CallOneArg(unpickler_class, (PyObject *)reader);
  PyObject *value =
      unpickler ? PyObject_CallMethod(unpickler, "load", NULL) : NULL;
  Py_XDECREF(unpickler);
  Py_DECREF(reader);
  return value;
}

/* value(loads): the decoded result of a task that succeeded, without a
 * copy of its bytes. ValueError for a task that did not succeed: callers
 * check ok() first and read outcome() for the error. */
static PyObject *task_value(ffpy_task_t *self, PyObject *loads) {
  if (ff_task_status(self->task) != 0) {
    PyErr_SetString(PyExc_ValueError, "the task did not succeed");
    return NULL;
  }
  if (self->consumed) {
    PyErr_SetString(PyExc_ValueError,
                    "the task's result was decoded already, as it was read");
    return NULL;
  }
  size_t length = 0;
  const char *data = ff_task_result(self->task, &length);
  static PyObject *pickle_loads;
  if (pickle_loads == NULL) {
    PyObject *pickle = PyImport_ImportModule("pickle");
    pickle_loads = pickle ? PyObject_GetAttrString(pickle, "loads") : NULL;
    Py_XDECREF(pickle);
    if (pickle_loads == NULL) return NULL;
  }
  if (data != NULL && length >= STREAM_DECODE_MIN && loads == pickle_loads &&
      ffpy_wire_kind(data, length) == FFPY_WIRE_PICKLE)
    return task_value_streamed(self, data, length);
  PyObject *value = ffpy_decode(data ? data : "", length, loads);
  /* Its out-of-band buffers are the value's now: they go back with it, not
   * with the task (a failed decode gave them back already). */
  if (value != NULL) ff_task_result_taken(self->task);
  return value;
}


/* value_into(loads, target, start, count): value() for a map chunk, written
 * into target[start:start + count]. */
static PyObject *task_value_into(ffpy_task_t *self, PyObject *args) {
  PyObject *loads, *target;
  Py_ssize_t start, count;
  if (!PyArg_ParseTuple(args, "OO!nn:value_into", &loads, &PyList_Type,
                        &target, &start, &count))
    return NULL;
  if (ff_task_status(self->task) != 0) {
    PyErr_SetString(PyExc_ValueError, "the task did not succeed");
    return NULL;
  }
  size_t length = 0;
  const char *data = ff_task_result(self->task, &length);
  if (ffpy_decode_into(data ? data : "", length, loads, target, start,
                       count) < 0)
    return NULL;
  ff_task_result_taken(self->task);
  Py_RETURN_NONE;
}

static PyObject *task_ok(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(ff_task_status(self->task) == 0);
}

static PyObject *task_get_id(ffpy_task_t *self, void *closure) {
  (void)closure;
  return PyLong_FromUnsignedLongLong(ff_task_id(self->task));
}

/* (slot, stdout, stderr, records): the worker's slot and the bytes it
 * wrote while it ran the task, when the pool captures output and it wrote
 * any; else None. */
static PyObject *task_output(ffpy_task_t *self, PyObject *unused) {
  (void)unused;
  PyObject *streams[FF_OUTPUT_STREAMS] = {NULL};
  size_t total = 0;
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    size_t length;
    ff_task_output(self->task, i, &length);
    total += length;
  }
  if (total == 0) Py_RETURN_NONE;
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    size_t length;
    const void *data = ff_task_output(self->task, i, &length);
    streams[i] = PyBytes_FromStringAndSize(data ? data : "", (Py_ssize_t)length);
    if (streams[i] == NULL) {
      for (unsigned j = 0; j < i; j++) Py_DECREF(streams[j]);
      return NULL;
    }
  }
  PyObject *slot = PyLong_FromLong(ff_task_output_slot(self->task));
  PyObject *result =
      slot ? PyTuple_Pack(4, slot, streams[0], streams[1], streams[2]) : NULL;
  Py_XDECREF(slot);
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) Py_DECREF(streams[i]);
  return result;
}

static PyMethodDef task_methods[] = {
    {"output", (PyCFunction)task_output, METH_NOARGS,
     "(slot, stdout, stderr, records): the worker's slot and the bytes it "
     "wrote while it ran the task, when its pool captures output and it "
     "wrote any; else None."},
    {"wait", (PyCFunction)(void (*)(void))task_wait,
     METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None) -> bool\n\nWaits for the task to finish, with the "
     "GIL released. Returns False on timeout."},
    {"done", (PyCFunction)task_done, METH_NOARGS,
     "True once the task has finished."},
    {"cancel", (PyCFunction)task_cancel, METH_NOARGS,
     "Drops the task if no worker has it yet. Returns True if it will not "
     "run."},
    {"kill", (PyCFunction)task_kill, METH_NOARGS,
     "Stops the task: drops it if queued, kills (and replaces) the worker "
     "running it. Returns False if it had finished already."},
    {"outcome", (PyCFunction)task_outcome, METH_NOARGS,
     "(status, payload, (pid, exit_code, signal)) once settled, else None."},
    {"run_ns", (PyCFunction)task_run_ns, METH_NOARGS,
     "Nanoseconds the worker spent running the task (0 until finished)."},
    {"value", (PyCFunction)task_value, METH_O,
     "value(loads) -> object: the decoded result of a task that succeeded."},
    {"value_into", (PyCFunction)task_value_into, METH_VARARGS,
     "value_into(loads, target, start, count): a map chunk's values, "
     "written into target[start:start + count]."},
    {"ok", (PyCFunction)task_ok, METH_NOARGS,
     "True once the task has finished with a result."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef task_getset[] = {
    {"id", (getter)task_get_id, NULL, "The task's id within its pool.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ffpy_task_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "forkfarm._core.Task",
    .tp_basicsize = sizeof(ffpy_task_t),
    .tp_dealloc = (destructor)task_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A task submitted to a runtime pool.",
    .tp_methods = task_methods,
    .tp_getset = task_getset,
};

/* ---- CompletionQueue -------------------------------------------------------- */

static PyObject *queue_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  if (!PyArg_ParseTuple(args, ":CompletionQueue") ||
      (kw && PyDict_Size(kw) > 0)) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "CompletionQueue() takes no arguments");
    return NULL;
  }
  ffpy_queue_t *self = (ffpy_queue_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  int rc = ff_queue_create(&self->queue);
  if (rc < 0) {
    Py_DECREF(self);
    return ffpy_raise(rc);
  }
  return (PyObject *)self;
}

static void queue_dealloc(ffpy_queue_t *self) {
  ff_queue_destroy(self->queue);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef struct {
  ff_queue_t *queue;
  ff_task_t *task;
} queue_pop_t;

static int queue_pop_fn(void *arg, double timeout) {
  queue_pop_t *pop = arg;
  return ff_queue_pop(pop->queue, timeout, &pop->task);
}

static PyObject *queue_get(ffpy_queue_t *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"timeout", NULL};
  PyObject *timeout_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:get", names, &timeout_obj))
    return NULL;
  double timeout = ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;
  queue_pop_t pop = {self->queue, NULL};
  /* Try without releasing the GIL first: in a busy map the next task is
   * usually already there. */
  if (ff_queue_pop(self->queue, 0, &pop.task) == 0)
    return ffpy_task_wrap(pop.task);
  int rc = ffpy_wait_interruptibly(queue_pop_fn, &pop, timeout);
  if (rc < 0) return NULL;
  if (rc == 0) Py_RETURN_NONE;
  return ffpy_task_wrap(pop.task);
}

static PyMethodDef queue_methods[] = {
    {"get", (PyCFunction)(void (*)(void))queue_get,
     METH_VARARGS | METH_KEYWORDS,
     "get(timeout=None) -> Task | None\n\nThe next finished task, or None "
     "on timeout."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_queue_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "forkfarm._core.CompletionQueue",
    .tp_basicsize = sizeof(ffpy_queue_t),
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Finished tasks, in the order they finished.",
    .tp_methods = queue_methods,
    .tp_new = queue_new,
};
