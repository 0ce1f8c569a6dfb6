/* _core.PipeEnd: one end of a forkfarm Pipe. Messages go through a channel
 * (lib/channel.c) per direction, in one shared segment; a socket pair
 * carries nothing but wake-ups and the end of the stream.
 *
 * The segment starts with a page of per-direction flags, `asleep`, which a
 * receiver raises before it sleeps in poll() on its socket: a sender that
 * sees it writes one byte to wake it. A receiver spins
 * briefly before it sleeps: in a ping-pong the answer usually comes first,
 * and then no system call is made at all. The kernel closes a dead
 * process's socket, so a receiver whose peer died gets POLLHUP and, once
 * the channel is empty, EOFError, as with multiprocessing's pipes. */
#include "core.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a receiver spins on an empty channel before it sleeps. */
#define PIPE_SPIN_NS 50000ull
/* The ring each direction starts with: the address space it maps. */
#define PIPE_FIRST_RING (64u << 10)
/* How long a sender blocked on a full pipe waits before it looks whether
 * the receiver is still there. */
#define PIPE_SEND_CHECK 0.05

typedef struct {
  _Atomic uint32_t asleep[2]; /* per direction: its receiver sleeps */
} pipe_flags_t;

typedef struct {
  PyObject_HEAD
  Py_buffer view;       /* of the segment: keeps it mapped */
  pipe_flags_t *flags;
  ff_channel_t handles[2];
  ff_channel_t *in;     /* NULL: not readable */
  ff_channel_t *out;    /* NULL: not writable */
  int in_index, out_index;
  int fd;               /* this end of the socket pair; -1 once closed */
  int peer_gone;        /* the socket said so */
  PyObject *dumps, *loads;
} ffpy_pipe_end_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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
  ffpy_pipe_end_t *self = (ffpy_pipe_end_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  self->fd = -1;
  if (PyObject_GetBuffer(segment, &self->view, PyBUF_WRITABLE) < 0) {
    self->view.obj = NULL;
    Py_DECREF(self);
    return NULL;
  }
  if (!PyObject_TypeCheck(segment, &ffpy_segment_type) || region < 8192 ||
      region % 4096 != 0 || self->view.len < 4096 ||
      ffpy_segment_size(segment) < 4096 + 2 * (size_t)region ||
      in_index > 1 || out_index > 1) {
    PyErr_SetString(PyExc_ValueError, "the segment cannot hold a pipe");
    Py_DECREF(self);
    return NULL;
  }
  char *base = self->view.buf;
  self->flags = (pipe_flags_t *)base;
  int indices[2] = {in_index, out_index};
  ff_channel_t **channels[2] = {&self->in, &self->out};
  for (int i = 0; i < 2; i++) {
    if (indices[i] < 0) continue;
    /* After the segment's header page and the flags page; only the ring a
     * direction uses is mapped, and grows with it. */
    uint64_t at = 2 * 4096 + (uint64_t)indices[i] * (uint64_t)region;
    int rc = ff_channel_map(&self->handles[i], ffpy_segment_id(segment), at,
                            (size_t)region, PIPE_FIRST_RING, init,
                            PIPE_FIRST_RING, 0);
    if (rc < 0) {
      if (rc == -EINVAL)
        PyErr_SetString(PyExc_ValueError, "the segment holds no pipe");
      else
        ffpy_raise(rc);
      Py_DECREF(self);
      return NULL;
    }
    *channels[i] = &self->handles[i];
  }
  self->in_index = in_index;
  self->out_index = out_index;
  self->fd = fd;
  self->dumps = Py_NewRef(dumps);
  self->loads = Py_NewRef(loads);
  return (PyObject *)self;
}

static void pipe_end_close_fd(ffpy_pipe_end_t *self) {
  if (self->fd >= 0) {
    close(self->fd);
    self->fd = -1;
  }
}

static void pipe_end_dealloc(ffpy_pipe_end_t *self) {
  if (self->in) ff_channel_unmap(self->in);
  if (self->out) ff_channel_unmap(self->out);
  if (self->view.obj != NULL) {
    pipe_end_close_fd(self);
    PyBuffer_Release(&self->view);
  }
  Py_XDECREF(self->dumps);
  Py_XDECREF(self->loads);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(ffpy_pipe_end_t *self) {
  if (self->fd >= 0) return 0;
  PyErr_SetString(PyExc_OSError, "handle is closed");
  return -1;
}

/* Whether the peer's socket end is closed everywhere (it died, or closed
 * it), looking without waiting. */
static int peer_hung_up(ffpy_pipe_end_t *self) {
  if (self->peer_gone) return 1;
  struct pollfd p = {self->fd, POLLIN, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
    self->peer_gone = 1;
    return 1;
  }
  return 0;
}

/* ---- sending ---------------------------------------------------------------- */

static int pipe_send_raw(ffpy_pipe_end_t *self, const char *data,
                         size_t length) {
  if (check_open(self) < 0) return -1;
  if (self->out == NULL) {
    PyErr_SetString(PyExc_OSError, "connection is read-only");
    return -1;
  }
  /* A receiver that keeps up leaves the channel empty; only messages
   * piling up make it worth asking the socket whether the other end is
   * gone (closed in every process, or its process dead). */
  if (ff_channel_count(self->out) > 0 && peer_hung_up(self)) {
    PyErr_SetString(PyExc_BrokenPipeError,
                    "the other end of the pipe is closed");
    return -1;
  }
  int rc = ff_channel_put(self->out, data, length, 0, NULL);
  /* Full: wait for room without the GIL, in short steps, looking between
   * them whether the receiver died (its end of the socket closes). */
  while (rc == -ETIMEDOUT) {
    if (peer_hung_up(self)) {
      PyErr_SetString(PyExc_BrokenPipeError,
                      "the other end of the pipe is closed");
      return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = ff_channel_put(self->out, data, length, PIPE_SEND_CHECK, NULL);
    Py_END_ALLOW_THREADS
    if ((rc == -ETIMEDOUT || rc == -EINTR) && PyErr_CheckSignals() < 0)
      return -1;
    if (rc == -EINTR) rc = -ETIMEDOUT;
  }
  if (rc == -EMSGSIZE) {
    PyErr_Format(PyExc_ValueError,
                 "a message of %zu bytes is larger than the pipe can hold",
                 length);
    return -1;
  }
  if (rc < 0) {
    ffpy_raise(rc);
    return -1;
  }
  /* The receiver raised its flag before it slept (sequentially consistent
   * with the put above): ring. A full socket buffer already rings. */
  if (atomic_load(&self->flags->asleep[self->out_index])) {
    ssize_t n = write(self->fd, "", 1);
    (void)n;
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

/* ---- receiving ----------------------------------------------------------------- */

typedef struct {
  ffpy_pipe_end_t *end;
} wait_arg_t;

/* Waits until the channel holds a message or the peer is gone (0),
 * the timeout passes (-ETIMEDOUT) or a signal comes (-EINTR). Runs without
 * the GIL. */
static int pipe_wait_fn(void *arg, double timeout) {
  ffpy_pipe_end_t *self = ((wait_arg_t *)arg)->end;
  uint64_t start = now_ns();
  uint64_t deadline = timeout < 0 ? UINT64_MAX
                                  : start + (uint64_t)(timeout * 1e9);
  for (unsigned i = 0; ff_channel_count(self->in) == 0; i++) {
    uint64_t now = now_ns();
    if (now >= deadline) return -ETIMEDOUT;
    if (now - start >= PIPE_SPIN_NS) break;
    if (i % 64 == 63) sched_yield();
  }
  _Atomic uint32_t *asleep = &self->flags->asleep[self->in_index];
  for (;;) {
    if (ff_channel_count(self->in) > 0) return 0;
    atomic_store(asleep, 1);
    if (ff_channel_count(self->in) > 0) {
      atomic_store(asleep, 0);
      return 0;
    }
    int ms = -1;
    if (deadline != UINT64_MAX) {
      uint64_t now = now_ns();
      if (now >= deadline) {
        atomic_store(asleep, 0);
        return -ETIMEDOUT;
      }
      ms = (int)((deadline - now + 999999) / 1000000);
    }
    struct pollfd p = {self->fd, POLLIN, 0};
    int n = poll(&p, 1, ms);
    atomic_store(asleep, 0);
    if (n < 0 && errno == EINTR) return -EINTR;
    if (n > 0 && (p.revents & POLLIN)) {
      char drain[256];
      ssize_t got = read(self->fd, drain, sizeof(drain));
      if (got == 0) self->peer_gone = 1;
    }
    if (n > 0 && (p.revents & (POLLHUP | POLLERR))) self->peer_gone = 1;
    if (self->peer_gone) return 0; /* recv finds what is left, or EOF */
  }
}

static void *alloc_bytes(void *arg, size_t length) {
  PyObject **bytes = arg;
  *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
  return *bytes ? PyBytes_AS_STRING(*bytes) : NULL;
}

/* The next message's bytes, waiting for it; NULL with EOFError when the
 * peer is gone and nothing is left. */
static PyObject *pipe_recv_raw(ffpy_pipe_end_t *self) {
  if (check_open(self) < 0) return NULL;
  if (self->in == NULL) {
    PyErr_SetString(PyExc_OSError, "connection is write-only");
    return NULL;
  }
  for (;;) {
    PyObject *bytes = NULL;
    int rc = ff_channel_get(self->in, 0, alloc_bytes, &bytes, NULL);
    if (rc == 0) return bytes;
    if (rc != -ETIMEDOUT) {
      if (!PyErr_Occurred()) ffpy_raise(rc);
      return NULL;
    }
    wait_arg_t arg = {self};
    int got = ffpy_wait_interruptibly(pipe_wait_fn, &arg, -1.0);
    if (got < 0) {
      /* -EPIPE comes back as an error code through the waiter. */
      if (PyErr_Occurred()) return NULL;
    }
    if (self->peer_gone && ff_channel_count(self->in) == 0) {
      PyErr_SetNone(PyExc_EOFError);
      return NULL;
    }
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
    pipe_end_close_fd(self);
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
    PyObject *too_short = PyImport_ImportModule("multiprocessing");
    PyObject *cls = too_short ? PyObject_GetAttrString(too_short,
                                                       "BufferTooShort")
                              : NULL;
    if (cls && exc_args) PyErr_SetObject(cls, exc_args);
    Py_XDECREF(cls);
    Py_XDECREF(too_short);
    Py_XDECREF(exc_args);
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
      check_open(self) < 0)
    return NULL;
  if (self->in == NULL) {
    PyErr_SetString(PyExc_OSError, "connection is write-only");
    return NULL;
  }
  if (ff_channel_count(self->in) > 0) Py_RETURN_TRUE;
  double timeout = timeout_obj == NULL ? 0.0 : ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;
  if (timeout == 0) return PyBool_FromLong(peer_hung_up(self));
  wait_arg_t arg = {self};
  int got = ffpy_wait_interruptibly(pipe_wait_fn, &arg, timeout);
  if (got < 0 && PyErr_Occurred()) return NULL;
  return PyBool_FromLong(ff_channel_count(self->in) > 0 || self->peer_gone);
}

/* For forkfarm.connection.wait: arm() raises the flag a sender rings on
 * and returns whether a message is there already; disarm() lowers it,
 * drains the wake-up bytes and returns whether recv would not block. */
static PyObject *pipe_end_arm(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  if (self->in == NULL) Py_RETURN_FALSE;
  atomic_store(&self->flags->asleep[self->in_index], 1);
  return PyBool_FromLong(ff_channel_count(self->in) > 0);
}

static PyObject *pipe_end_disarm(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  if (self->in == NULL) Py_RETURN_FALSE;
  atomic_store(&self->flags->asleep[self->in_index], 0);
  char drain[256];
  for (;;) {
    ssize_t got = read(self->fd, drain, sizeof(drain));
    if (got == 0) self->peer_gone = 1;
    if (got <= 0) break;
  }
  return PyBool_FromLong(ff_channel_count(self->in) > 0 || peer_hung_up(self));
}

static PyObject *pipe_end_close(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  pipe_end_close_fd(self);
  Py_RETURN_NONE;
}

static PyObject *pipe_end_fileno(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  if (check_open(self) < 0) return NULL;
  return PyLong_FromLong(self->fd);
}

static PyObject *pipe_end_get_closed(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->fd < 0);
}

static PyObject *pipe_end_get_readable(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->in != NULL);
}

static PyObject *pipe_end_get_writable(ffpy_pipe_end_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->out != NULL);
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
