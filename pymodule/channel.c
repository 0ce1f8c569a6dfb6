/* _core.Channel: a channel (lib/channel.c) in a shared segment, with the
 * methods of multiprocessing's Queue: put and get pickle and unpickle in C,
 * so that forkfarm/queues.py binds them straight to its Queue (one C call
 * per message, no feeder thread). An uncontended put or get holds the GIL
 * for its copy; one that must wait releases it. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>

typedef struct {
  PyObject_HEAD
  PyObject *segment; /* the _core.Segment it lives in: keeps it open */
  ff_channel_t handle;
  ff_channel_t *channel; /* &handle once mapped, else NULL */
  PyObject *dumps; /* dumps(obj) -> bytes */
  PyObject *loads; /* loads(buffer) -> obj */
  int closed;      /* close() was called on this handle */
} ffpy_channel_t;

/* The channel's region: the whole of the segment's bytes, after its
 * header page. */
#define CHANNEL_OFFSET FF_SEGMENT_HEADER

static PyObject *channel_new(PyTypeObject *type, PyObject *args,
                             PyObject *kw) {
  static char *names[] = {"segment", "dumps", "loads", NULL};
  PyObject *segment, *dumps, *loads;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OO:Channel", names,
                                   &ffpy_segment_type, &segment, &dumps,
                                   &loads))
    return NULL;
  ffpy_channel_t *self = (ffpy_channel_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  self->segment = Py_NewRef(segment);
  self->dumps = Py_NewRef(dumps);
  self->loads = Py_NewRef(loads);
  return (PyObject *)self;
}

static void channel_dealloc(ffpy_channel_t *self) {
  if (self->channel != NULL) ff_channel_unmap(self->channel);
  Py_XDECREF(self->segment);
  Py_XDECREF(self->dumps);
  Py_XDECREF(self->loads);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int channel_ready(ffpy_channel_t *self) {
  if (self->channel != NULL) return 0;
  PyErr_SetString(PyExc_ValueError, "the channel is not initialized");
  return -1;
}

/* Maps the channel in the segment, making it first with init. */
static PyObject *channel_map(ffpy_channel_t *self, int init, size_t capacity,
                             unsigned maxsize) {
  if (self->channel != NULL) {
    PyErr_SetString(PyExc_ValueError, "the channel is mapped already");
    return NULL;
  }
  uint64_t id = ffpy_segment_id(self->segment);
  size_t size = ffpy_segment_size(self->segment);
  int rc = ff_channel_map(&self->handle, id, CHANNEL_OFFSET, size, capacity,
                          init, capacity, maxsize);
  if (rc == -EINVAL) {
    PyErr_SetString(PyExc_ValueError,
                    init ? "the segment cannot hold a channel"
                         : "the segment holds no channel");
    return NULL;
  }
  if (rc < 0) return ffpy_raise(rc);
  self->channel = &self->handle;
  Py_RETURN_NONE;
}

/* The first ring a queue maps, and shrinks back to, when it attaches to a
 * channel another process made: the address space it starts with. */
#define ATTACH_WINDOW (64u << 10)

/* init(capacity, maxsize): makes the channel in the segment. */
static PyObject *channel_init(ffpy_channel_t *self, PyObject *args) {
  Py_ssize_t capacity;
  unsigned int maxsize;
  if (!PyArg_ParseTuple(args, "nI:init", &capacity, &maxsize)) return NULL;
  if (capacity < 0) {
    PyErr_SetString(PyExc_ValueError, "the segment cannot hold a channel");
    return NULL;
  }
  return channel_map(self, 1, (size_t)capacity, maxsize);
}

/* attach(): uses the channel another process made in the segment. */
static PyObject *channel_attach_method(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  return channel_map(self, 0, ATTACH_WINDOW, 0);
}

/* The channel's shared state was impossible (a process died half-way
 * through moving it, or wrote where it should not): it was emptied. */
static PyObject *corrupt_error(void) {
  PyErr_SetString(PyExc_RuntimeError,
                  "the queue's shared memory held an impossible state (a "
                  "process died moving it, or wrote over it); it was emptied "
                  "and its messages are lost");
  return NULL;
}

static int warn_recovered(int pid) {
  if (pid <= 0) return 0;
  return PyErr_WarnFormat(ffpy_class(FFPY_ABANDONED_LOCK_WARNING), 1,
                          "Queue: process %d died holding its lock; it was "
                          "taken over (a message it was moving may be lost)",
                          pid);
}

/* Parses multiprocessing's (block=True, timeout=None) after `skip`
 * positional arguments: the wait in seconds (-1: none), or -2 with an
 * exception. */
static double parse_wait(PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, Py_ssize_t skip,
                         const char *name) {
  PyObject *block = NULL, *timeout = Py_None;
  if (nargs > skip + 2) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments", name,
                 skip + 2);
    return -2.0;
  }
  if (nargs > skip) block = args[skip];
  if (nargs > skip + 1) timeout = args[skip + 1];
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *key = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_CompareWithASCIIString(key, "block") == 0 && nargs <= skip)
      block = args[nargs + i];
    else if (PyUnicode_CompareWithASCIIString(key, "timeout") == 0 &&
             nargs <= skip + 1)
      timeout = args[nargs + i];
    else {
      PyErr_Format(PyExc_TypeError,
                   "%s() got an unexpected or repeated keyword argument '%U'",
                   name, key);
      return -2.0;
    }
  }
  if (block != NULL) {
    int b = PyObject_IsTrue(block);
    if (b < 0) return -2.0;
    if (!b) return 0.0;
  }
  return ffpy_parse_timeout(timeout);
}

typedef struct {
  ff_channel_t *channel;
  const char *data;
  size_t length;
  char *out; /* get: the message, malloc'd */
  size_t out_length;
  int recovered;
} channel_wait_t;

static int put_fn(void *arg, double timeout) {
  channel_wait_t *w = arg;
  return ff_channel_put(w->channel, w->data, w->length, timeout,
                        &w->recovered);
}

/* put(obj, block=True, timeout=None) */
static PyObject *channel_put(ffpy_channel_t *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames) {
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "put() missing required argument 'obj'");
    return NULL;
  }
  double wait = parse_wait(args, nargs, kwnames, 1, "put");
  if (wait == -2.0 || channel_ready(self) < 0) return NULL;
  if (self->closed) {
    PyErr_SetString(PyExc_ValueError, "Queue is closed");
    return NULL;
  }
  PyObject *payload = PyObject_CallOneArg(self->dumps, args[0]);
  if (payload == NULL) return NULL;
  if (!PyBytes_Check(payload)) {
    Py_DECREF(payload);
    PyErr_SetString(PyExc_TypeError, "dumps() must return bytes");
    return NULL;
  }
  channel_wait_t w = {self->channel, PyBytes_AS_STRING(payload),
                      (size_t)PyBytes_GET_SIZE(payload), NULL, 0, 0};
  /* A free channel takes it at once, without a GIL round trip. */
  int rc = ff_channel_put(self->channel, w.data, w.length, 0, &w.recovered);
  if (rc == -ETIMEDOUT && wait != 0) {
    int got = ffpy_wait_interruptibly(put_fn, &w, wait);
    rc = got < 0 ? -EINTR : got ? 0 : -ETIMEDOUT;
  }
  Py_ssize_t size = PyBytes_GET_SIZE(payload);
  Py_DECREF(payload);
  if (rc == -EINTR) return NULL; /* the exception is set */
  if (warn_recovered(w.recovered) < 0) return NULL;
  if (rc == -ETIMEDOUT) {
    PyErr_SetNone(ffpy_class(FFPY_QUEUE_FULL));
    return NULL;
  }
  if (rc == -EMSGSIZE) {
    PyErr_Format(PyExc_ValueError,
                 "a message of %zd bytes is larger than the queue can hold",
                 size);
    return NULL;
  }
  if (rc == FF_EPROTOCOL) return corrupt_error();
  if (rc < 0) return ffpy_raise(rc);
  Py_RETURN_NONE;
}

/* For a get under the GIL: the message goes straight into a bytes object. */
static void *alloc_bytes(void *arg, size_t length) {
  PyObject **bytes = arg;
  *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
  return *bytes ? PyBytes_AS_STRING(*bytes) : NULL;
}

/* For a get without the GIL. */
static void *alloc_raw(void *arg, size_t length) {
  channel_wait_t *w = arg;
  w->out = malloc(length ? length : 1);
  w->out_length = length;
  return w->out;
}

static int get_fn(void *arg, double timeout) {
  channel_wait_t *w = arg;
  return ff_channel_get(w->channel, timeout, alloc_raw, w, &w->recovered);
}

/* get(block=True, timeout=None) */
static PyObject *channel_get(ffpy_channel_t *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames) {
  double wait = parse_wait(args, nargs, kwnames, 0, "get");
  if (wait == -2.0 || channel_ready(self) < 0) return NULL;
  if (self->closed) {
    PyErr_SetString(PyExc_ValueError, "Queue is closed");
    return NULL;
  }
  PyObject *bytes = NULL;
  int recovered = 0;
  int rc = ff_channel_get(self->channel, 0, alloc_bytes, &bytes, &recovered);
  if (rc == 0) {
    if (warn_recovered(recovered) < 0) {
      Py_DECREF(bytes);
      return NULL;
    }
    PyObject *value = PyObject_CallOneArg(self->loads, bytes);
    Py_DECREF(bytes);
    return value;
  }
  if (rc == -ENOMEM && PyErr_Occurred()) return NULL;
  channel_wait_t w = {self->channel, NULL, 0, NULL, 0, recovered};
  if (rc == -ETIMEDOUT && wait != 0) {
    int got = ffpy_wait_interruptibly(get_fn, &w, wait);
    rc = got < 0 ? -EINTR : got ? 0 : -ETIMEDOUT;
  }
  if (rc == 0) {
    PyObject *view = PyMemoryView_FromMemory(w.out, (Py_ssize_t)w.out_length,
                                             PyBUF_READ);
    PyObject *value = view ? PyObject_CallOneArg(self->loads, view) : NULL;
    if (view) ffpy_release_view(view, &value);
    free(w.out);
    if (value != NULL && warn_recovered(w.recovered) < 0)
      Py_CLEAR(value);
    return value;
  }
  free(w.out);
  if (rc == -EINTR) return NULL;
  if (warn_recovered(w.recovered) < 0) return NULL;
  if (rc == -ETIMEDOUT) {
    PyErr_SetNone(ffpy_class(FFPY_QUEUE_EMPTY));
    return NULL;
  }
  if (rc == FF_EPROTOCOL) return corrupt_error();
  return ffpy_raise(rc);
}

static PyObject *channel_qsize(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  if (channel_ready(self) < 0) return NULL;
  return PyLong_FromUnsignedLong(ff_channel_count(self->channel));
}

static PyObject *channel_empty(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  if (channel_ready(self) < 0) return NULL;
  return PyBool_FromLong(ff_channel_count(self->channel) == 0);
}

static PyObject *channel_full(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  if (channel_ready(self) < 0) return NULL;
  unsigned max = ff_channel_maxsize(self->channel);
  return PyBool_FromLong(max != 0 && ff_channel_count(self->channel) >= max);
}

static PyObject *channel_task_done(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  if (channel_ready(self) < 0) return NULL;
  if (ff_channel_task_done(self->channel) < 0) {
    PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
    return NULL;
  }
  Py_RETURN_NONE;
}

static int join_fn(void *arg, double timeout) {
  return ff_channel_join(arg, timeout);
}

static PyObject *channel_join(ffpy_channel_t *self, PyObject *args) {
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTuple(args, "|O:join", &timeout) || channel_ready(self) < 0)
    return NULL;
  double t = ffpy_parse_timeout(timeout);
  if (t == -2.0) return NULL;
  int got = ffpy_wait_interruptibly(join_fn, self->channel, t);
  if (got < 0) return NULL;
  return PyBool_FromLong(got);
}

static PyObject *channel_close(ffpy_channel_t *self, PyObject *unused) {
  (void)unused;
  self->closed = 1;
  Py_RETURN_NONE;
}

static PyObject *channel_get_closed(ffpy_channel_t *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(self->closed);
}

static PyObject *channel_get_maxsize(ffpy_channel_t *self, void *closure) {
  (void)closure;
  if (channel_ready(self) < 0) return NULL;
  return PyLong_FromUnsignedLong(ff_channel_maxsize(self->channel));
}

/* A bound method of a Queue (queue.put) is one of the channel's: it
 * pickles as the channel, which only the Queue knows how to send. */
static PyObject *channel_reduce(ffpy_channel_t *self, PyObject *unused) {
  (void)self;
  (void)unused;
  PyErr_SetString(PyExc_TypeError,
                  "a queue's methods cannot be pickled on their own: pass "
                  "the queue itself (its put and get run where it arrives)");
  return NULL;
}

static PyMethodDef channel_methods[] = {
    {"__reduce__", (PyCFunction)channel_reduce, METH_NOARGS, NULL},
    {"init", (PyCFunction)channel_init, METH_VARARGS,
     "init(capacity, maxsize): makes the channel in the segment"},
    {"attach", (PyCFunction)channel_attach_method, METH_NOARGS,
     "attach(): uses the channel made in the segment"},
    {"put", (PyCFunction)(void (*)(void))channel_put,
     METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None): queue.Full when still full"},
    {"get", (PyCFunction)(void (*)(void))channel_get,
     METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None): queue.Empty when still empty"},
    {"qsize", (PyCFunction)channel_qsize, METH_NOARGS, "qsize() -> int"},
    {"empty", (PyCFunction)channel_empty, METH_NOARGS, "empty() -> bool"},
    {"full", (PyCFunction)channel_full, METH_NOARGS, "full() -> bool"},
    {"task_done", (PyCFunction)channel_task_done, METH_NOARGS,
     "task_done(): ValueError when called more often than put"},
    {"join", (PyCFunction)channel_join, METH_VARARGS,
     "join(timeout=None) -> bool: until every put had its task_done"},
    {"close", (PyCFunction)channel_close, METH_NOARGS,
     "close(): this handle puts and gets no more"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"closed", (getter)channel_get_closed, NULL, "close() was called", NULL},
    {"maxsize", (getter)channel_get_maxsize, NULL, "0: no bound", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ffpy_channel_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Channel",
    .tp_basicsize = sizeof(ffpy_channel_t),
    .tp_dealloc = (destructor)channel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Channel(segment, dumps, loads): a "
              "message queue in a shared segment",
    .tp_methods = channel_methods,
    .tp_getset = channel_getset,
    .tp_new = channel_new,
};
