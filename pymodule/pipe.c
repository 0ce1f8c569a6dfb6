/* _core.PipeEnd: one end of a forkfarm Pipe, over the runtime's pipes
 * (lib/pipe.c, ff_pipe_*): a channel per direction in one segment, and a
 * socket pair for wake-ups, descriptors (send_handle) and the end of the
 * stream. This file is the binding: arguments, pickling, the GIL
 * (released while a call waits, in slices that let signal handlers run),
 * and multiprocessing's exceptions: EOFError at the end of the stream,
 * OSError for a closed or one-way end, BufferTooShort. */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

/* The pipe's offset in its segment: after the segment's header page. */
#define PIPE_OFFSET 4096u

typedef struct {
  PyObject_HEAD
  ff_pipe_t *pipe;
  PyObject *segment; /* kept lendable while the end lives */
  PyObject *dumps, *loads;
} ffpy_pipe_end_t;

/* PipeEnd(segment, region_size, in_index, out_index, fd, dumps, loads,
 * init): in/out index the channels (-1: none); the segment holds the flags
 * page, then two regions of region_size bytes. */
static PyObject *pipe_end_new(PyTypeObject *type, PyObject *args,
                              PyObject *kw) {
  static char *names[] = {"segment", "region_size", "in_index", "out_index",
                          "fd",      "dumps",       "loads",    "init",
                          NULL};
  PyObject *segment, *dumps, *loads;
  Py_ssize_t region;
  int in_index, out_index, fd, init;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OniiiOOp:PipeEnd", names,
                                   &segment, &region, &in_index, &out_index,
                                   &fd, &dumps, &loads, &init))
    return NULL;
  if (!PyObject_TypeCheck(segment, &ffpy_segment_type) || region < 8192 ||
      region % 4096 != 0 ||
      ffpy_segment_size(segment) < FF_PIPE_HEADER + 2 * (size_t)region ||
      in_index > 1 || out_index > 1) {
    PyErr_SetString(PyExc_ValueError, "the segment cannot hold a pipe");
    return NULL;
  }
  ffpy_pipe_end_t *self = (ffpy_pipe_end_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  /* On failure the caller still owns fd. */
  int rc = ff_pipe_open(&self->pipe, ffpy_segment_id(segment), PIPE_OFFSET,
                        (size_t)region, in_index, out_index, fd, init);
  if (rc < 0) {
    self->pipe = NULL;
    Py_DECREF(self);
    if (rc == -EINVAL)
      PyErr_SetString(PyExc_ValueError, "the segment holds no pipe");
    else
      ffpy_raise(rc);
    return NULL;
  }
  self->segment = Py_NewRef(segment);
  self->dumps = Py_NewRef(dumps);
  self->loads = Py_NewRef(loads);
  return (PyObject *)self;
}

static void pipe_end_dealloc(ffpy_pipe_end_t *self) {
  ff_pipe_destroy(self->pipe);
  Py_XDECREF(self->segment);
  Py_XDECREF(self->dumps);
  Py_XDECREF(self->loads);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(ffpy_pipe_end_t *self) {
  if (ff_pipe_fd(self->pipe) >= 0) return 0;
  PyErr_SetString(PyExc_OSError, "handle is closed");
  return -1;
}

/* The end is open and goes the way asked, else -1 with multiprocessing's
 * exception. */
static int check_way(ffpy_pipe_end_t *self, int writing) {
  if (check_open(self) < 0) return -1;
  if (writing ? ff_pipe_writable(self->pipe) : ff_pipe_readable(self->pipe))
    return 0;
  PyErr_SetString(PyExc_OSError, writing ? "connection is read-only"
                                         : "connection is write-only");
  return -1;
}

/* ---- sending ------------------------------------------------------------ */

typedef struct {
  ff_pipe_t *pipe;
  const char *data;
  size_t length;
  int rc;
} send_arg_t;

/* Without the GIL: one slice of a send that waits for room. A result
 * other than a wait's ends the wait, kept in rc. */
static int send_fn(void *arg, double timeout) {
  send_arg_t *a = arg;
  a->rc = ff_pipe_send(a->pipe, a->data, a->length, timeout);
  return a->rc == -ETIMEDOUT || a->rc == -EINTR ? a->rc : 0;
}

static int pipe_send_raw(ffpy_pipe_end_t *self, const char *data,
                         size_t length) {
  if (check_way(self, 1) < 0) return -1;
  send_arg_t arg = {self->pipe, data, length, 0};
  /* Under the GIL first: a receiver that keeps up leaves room. */
  arg.rc = ff_pipe_send(self->pipe, data, length, 0);
  if ((arg.rc == -ETIMEDOUT || arg.rc == -EINTR) &&
      ffpy_wait_interruptibly(send_fn, &arg, -1.0) < 0)
    return -1;
  if (arg.rc == -EMSGSIZE) {
    PyErr_Format(PyExc_ValueError,
                 "a message of %zu bytes is larger than the pipe can hold",
                 length);
    return -1;
  }
  if (arg.rc < 0) {
    ffpy_raise(arg.rc); /* -EPIPE: BrokenPipeError, as multiprocessing's */
    return -1;
  }
  return 0;
}
static PyObject *pipe_end_send(ffpy_pipe_end_t *self, PyObject *obj) {
  PyObject *payload = PyObject_CallOneArg(self->dumps, obj);
  if (payload == NULL) return NULL;
  if (!PyBytes_Check(payload)) {
    Py_DECREF(payload);
    PyErr_SetString(PyExc_TypeError, "dumps() must return bytes");
    return NULL;
  }
  int rc = pipe_send_raw(self, PyBytes_AS_STRING(payload),
                         (size_t)PyBytes_GET_SIZE(payload));
  Py_DECREF(payload);
  if (rc < 0) return NULL;
  Py_RETURN_NONE;
}

/* send_bytes(buf, offset=0, size=None) */
static PyObject *pipe_end_send_bytes(ffpy_pipe_end_t *self, PyObject *args,
                                     PyObject *kw) {
  static char *names[] = {"buf", "offset", "size", NULL};
  Py_buffer buf;
  Py_ssize_t offset = 0;
  PyObject *size_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|nO:send_bytes", names, &buf,
                                   &offset, &size_obj))
    return NULL;
  Py_ssize_t n = buf.len;
  Py_ssize_t size = n - offset;
  if (size_obj != Py_None) {
    size = PyLong_AsSsize_t(size_obj);
    if (size == -1 && PyErr_Occurred()) {
      PyBuffer_Release(&buf);
      return NULL;
    }
  }
  if (offset < 0) {
    PyErr_SetString(PyExc_ValueError, "offset is negative");
  } else if (n < offset) {
    PyErr_SetString(PyExc_ValueError, "buffer length < offset");
  } else if (size < 0) {
    PyErr_SetString(PyExc_ValueError, "size is negative");
  } else if (offset + size > n) {
    PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
  }
  int rc = PyErr_Occurred()
               ? -1
               : pipe_send_raw(self, (const char *)buf.buf + offset,
                               (size_t)size);
  PyBuffer_Release(&buf);
  if (rc < 0) return NULL;
  Py_RETURN_NONE;
}

/* ---- receiving ---------------------------------------------------------- */

/* Without the GIL: one slice of a wait for something to receive. */
static int poll_fn(void *arg, double timeout) {
  int rc = ff_pipe_poll(arg, timeout);
  return rc > 0 ? 0 : rc == 0 ? -ETIMEDOUT : rc;
}

static void *alloc_bytes(void *arg, size_t length) {
  PyObject **bytes = arg;
  *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
  return *bytes ? PyBytes_AS_STRING(*bytes) : NULL;
}

/* The next message's bytes, waiting for it; NULL with EOFError when the
 * peer is gone and nothing is left. */
static PyObject *pipe_recv_raw(ffpy_pipe_end_t *self) {
  if (check_way(self, 0) < 0) return NULL;
  for (;;) {
    PyObject *bytes = NULL;
    int rc = ff_pipe_recv(self->pipe, 0, alloc_bytes, &bytes);
    if (rc == 0) return bytes;
    if (rc == -EPIPE) {
      PyErr_SetNone(PyExc_EOFError);
      return NULL;
    }
    if (rc != -ETIMEDOUT && rc != -EINTR) {
      if (!PyErr_Occurred()) ffpy_raise(rc);
      return NULL;
    }
    if (ffpy_wait_interruptibly(poll_fn, self->pipe, -1.0) < 0) return NULL;
  }
}
static PyObject *pipe_end_recv(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  PyObject *bytes = pipe_recv_raw(self);
  if (bytes == NULL) return NULL;
  PyObject *value = PyObject_CallOneArg(self->loads, bytes);
  Py_DECREF(bytes);
  return value;
}

/* recv_bytes(maxlength=None) */
static PyObject *pipe_end_recv_bytes(ffpy_pipe_end_t *self, PyObject *args,
                                     PyObject *kw) {
  static char *names[] = {"maxlength", NULL};
  PyObject *max_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv_bytes", names,
                                   &max_obj))
    return NULL;
  Py_ssize_t maxlength = -1;
  if (max_obj != Py_None) {
    maxlength = PyLong_AsSsize_t(max_obj);
    if (maxlength == -1 && PyErr_Occurred()) return NULL;
    if (maxlength < 0) {
      PyErr_SetString(PyExc_ValueError, "negative maxlength");
      return NULL;
    }
  }
  PyObject *bytes = pipe_recv_raw(self);
  if (bytes == NULL) return NULL;
  if (maxlength >= 0 && PyBytes_GET_SIZE(bytes) > maxlength) {
    Py_DECREF(bytes);
    /* multiprocessing closes the connection here: the stream is lost. */
    ff_pipe_close(self->pipe);
    PyErr_SetString(PyExc_OSError, "bad message length");
    return NULL;
  }
  return bytes;
}

/* recv_bytes_into(buf, offset=0) */
static PyObject *pipe_end_recv_bytes_into(ffpy_pipe_end_t *self,
                                          PyObject *args, PyObject *kw) {
  static char *names[] = {"buf", "offset", NULL};
  PyObject *target;
  Py_ssize_t offset = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n:recv_bytes_into", names,
                                   &target, &offset))
    return NULL;
  Py_buffer buf;
  if (PyObject_GetBuffer(target, &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
    return NULL;
  /* As multiprocessing: the offset counts bytes, whatever the item size. */
  Py_ssize_t start = offset;
  if (offset < 0 || start > buf.len) {
    PyBuffer_Release(&buf);
    PyErr_SetString(PyExc_ValueError,
                    offset < 0 ? "negative offset" : "offset too large");
    return NULL;
  }
  PyObject *bytes = pipe_recv_raw(self);
  if (bytes == NULL) {
    PyBuffer_Release(&buf);
    return NULL;
  }
  Py_ssize_t size = PyBytes_GET_SIZE(bytes);
  PyObject *result;
  if (size > buf.len - start) {
    /* As multiprocessing: the message comes back in the exception. */
    PyObject *exc_args = Py_BuildValue("(O)", bytes);
    if (exc_args != NULL) {
      PyErr_SetObject(ffpy_class(FFPY_BUFFER_TOO_SHORT), exc_args);
      Py_DECREF(exc_args);
    }
    result = NULL;
  } else {
    memcpy((char *)buf.buf + start, PyBytes_AS_STRING(bytes), (size_t)size);
    result = PyLong_FromSsize_t(size);
  }
  Py_DECREF(bytes);
  PyBuffer_Release(&buf);
  return result;
}

/* poll(timeout=0.0) -> whether recv would not block. */
static PyObject *pipe_end_poll(ffpy_pipe_end_t *self, PyObject *args,
                               PyObject *kw) {
  static char *names[] = {"timeout", NULL};
  PyObject *timeout_obj = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:poll", names,
                                   &timeout_obj) ||
      check_way(self, 0) < 0)
    return NULL;
  double timeout = timeout_obj == NULL ? 0.0 : ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;
  if (timeout == 0) {
    int rc = ff_pipe_poll(self->pipe, 0);
    return rc < 0 ? ffpy_raise(rc) : PyBool_FromLong(rc);
  }
  int got = ffpy_wait_interruptibly(poll_fn, self->pipe, timeout);
  return got < 0 ? NULL : PyBool_FromLong(got);
}

/* For forkfarm.connection.wait: arm() raises the flag a sender rings on
 * and returns whether a message is there already; disarm() lowers it,
 * drains the wake-up bytes and returns whether recv would not block. */
static PyObject *pipe_end_arm(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  int rc = ff_pipe_arm(self->pipe);
  return rc < 0 ? ffpy_raise(rc) : PyBool_FromLong(rc);
}

static PyObject *pipe_end_disarm(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  int rc = ff_pipe_disarm(self->pipe);
  return rc < 0 ? ffpy_raise(rc) : PyBool_FromLong(rc);
}

/* ---- descriptors -------------------------------------------------------- */

typedef struct {
  ff_pipe_t *pipe;
  int *fds;
  unsigned count;
  int rc;
} fds_arg_t;

/* Without the GIL: one slice of a send_fds or recv_fds (count 0) that
 * waits for the socket. A result other than a wait's ends it, in rc. */
static int fds_fn(void *arg, double timeout) {
  fds_arg_t *a = arg;
  a->rc = a->count > 0 ? ff_pipe_send_fds(a->pipe, a->fds, a->count, timeout)
                       : ff_pipe_recv_fds(a->pipe, a->fds, timeout);
  return a->rc == -ETIMEDOUT || a->rc == -EINTR ? a->rc : 0;
}

/* send_fds(fds): sends descriptors over the socket, as
 * multiprocessing.reduction.sendfds does (one byte, their count, with
 * SCM_RIGHTS); they reach the other end's recv_fds, whatever messages go
 * through the channels meanwhile. */
static PyObject *pipe_end_send_fds(ffpy_pipe_end_t *self, PyObject *arg) {
  if (check_open(self) < 0) return NULL;
  PyObject *seq = PySequence_Fast(arg, "fds must be a sequence of ints");
  if (seq == NULL) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n < 1 || n > FF_PIPE_MAX_FDS) {
    Py_DECREF(seq);
    PyErr_Format(PyExc_ValueError, "can send 1 to %d descriptors, not %zd",
                 FF_PIPE_MAX_FDS, n);
    return NULL;
  }
  int fds[FF_PIPE_MAX_FDS];
  for (Py_ssize_t i = 0; i < n; i++) {
    long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
    if (fd == -1 && PyErr_Occurred()) {
      Py_DECREF(seq);
      return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
      Py_DECREF(seq);
      PyErr_Format(PyExc_ValueError, "%ld is not a file descriptor", fd);
      return NULL;
    }
    fds[i] = (int)fd;
  }
  Py_DECREF(seq);
  fds_arg_t a = {self->pipe, fds, (unsigned)n, 0};
  if (ffpy_wait_interruptibly(fds_fn, &a, -1.0) < 0) return NULL;
  if (a.rc < 0) return ffpy_raise(a.rc);
  Py_RETURN_NONE;
}

/* recv_fds() -> list of the descriptors of the next message send_fds (or
 * multiprocessing.reduction.sendfds) sent, waiting for it. Wake-up bytes
 * are skipped; another byte without descriptors is RuntimeError, and the
 * end of the stream EOFError, as multiprocessing.reduction.recvfds. The
 * descriptors are close-on-exec. */
static PyObject *pipe_end_recv_fds(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  int fds[FF_PIPE_MAX_FDS];
  fds_arg_t a = {self->pipe, fds, 0, 0};
  if (ffpy_wait_interruptibly(fds_fn, &a, -1.0) < 0) return NULL;
  if (a.rc == -EPIPE) {
    PyErr_SetNone(PyExc_EOFError);
    return NULL;
  }
  if (a.rc == FF_EPROTOCOL) {
    PyErr_SetString(PyExc_RuntimeError, "received 0 items of ancdata");
    return NULL;
  }
  if (a.rc < 0) return ffpy_raise(a.rc);
  size_t nfds = (size_t)a.rc;
  PyObject *list = PyList_New((Py_ssize_t)nfds);
  for (size_t i = 0; i < nfds; i++) {
    PyObject *number = list ? PyLong_FromLong(fds[i]) : NULL;
    if (number == NULL) {
      for (size_t k = i; k < nfds; k++) close(fds[k]);
      Py_XDECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, number);
  }
  return list;
}

static PyObject *pipe_end_close(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  ff_pipe_close(self->pipe);
  Py_RETURN_NONE;
}

static PyObject *pipe_end_fileno(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  return PyLong_FromLong(ff_pipe_fd(self->pipe));
}

static PyObject *pipe_end_get_closed(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(ff_pipe_fd(self->pipe) < 0);
}

static PyObject *pipe_end_get_readable(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(ff_pipe_readable(self->pipe));
}

static PyObject *pipe_end_get_writable(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(ff_pipe_writable(self->pipe));
}

static PyObject *pipe_end_reduce(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)self;
  (void)unused;
  PyErr_SetString(PyExc_TypeError,
                  "a connection's methods cannot be pickled on their own");
  return NULL;
}

static PyMethodDef pipe_end_methods[] = {
    {"send", (PyCFunction)pipe_end_send, METH_O, "send(obj)"},
    {"send_bytes", (PyCFunction)(void (*)(void))pipe_end_send_bytes,
     METH_VARARGS | METH_KEYWORDS, "send_bytes(buf, offset=0, size=None)"},
    {"recv", (PyCFunction)pipe_end_recv, METH_NOARGS, "recv() -> obj"},
    {"recv_bytes", (PyCFunction)(void (*)(void))pipe_end_recv_bytes,
     METH_VARARGS | METH_KEYWORDS,
     "recv_bytes(maxlength=None) -> bytes"},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))pipe_end_recv_bytes_into,
     METH_VARARGS | METH_KEYWORDS,
     "recv_bytes_into(buf, offset=0) -> int"},
    {"poll", (PyCFunction)(void (*)(void))pipe_end_poll,
     METH_VARARGS | METH_KEYWORDS,
     "poll(timeout=0.0) -> bool"},
    {"arm", (PyCFunction)pipe_end_arm, METH_NOARGS, NULL},
    {"disarm", (PyCFunction)pipe_end_disarm, METH_NOARGS, NULL},
    {"send_fds", (PyCFunction)pipe_end_send_fds, METH_O,
     "send_fds(fds): sends descriptors to the other end"},
    {"recv_fds", (PyCFunction)pipe_end_recv_fds, METH_NOARGS,
     "recv_fds() -> list of the descriptors the other end sent next"},
    {"close", (PyCFunction)pipe_end_close, METH_NOARGS, "close()"},
    {"fileno", (PyCFunction)pipe_end_fileno, METH_NOARGS, "fileno() -> int"},
    {"__reduce__", (PyCFunction)pipe_end_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pipe_end_getset[] = {
    {"closed", (getter)pipe_end_get_closed, NULL, NULL, NULL},
    {"readable", (getter)pipe_end_get_readable, NULL, NULL, NULL},
    {"writable", (getter)pipe_end_get_writable, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ffpy_pipe_end_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.PipeEnd",
    .tp_basicsize = sizeof(ffpy_pipe_end_t),
    .tp_dealloc = (destructor)pipe_end_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PipeEnd(segment, region_size, in_index, out_index, fd, dumps, "
              "loads, init): one end of a forkfarm Pipe",
    .tp_methods = pipe_end_methods,
    .tp_getset = pipe_end_getset,
    .tp_new = pipe_end_new,
};
