/* _core.PipeEnd: one end of a forkfarm Pipe. Messages go through a channel
 * (lib/channel.c) per direction, in one shared segment; a socket pair
 * carries wake-ups, descriptors (send_handle) and the end of the stream.
 *
 * The segment starts with a page of per-direction flags, `asleep`, which a
 * receiver raises before it sleeps in poll() on its socket: a sender that
 * sees it writes one byte, PIPE_WAKE, to wake it. A receiver spins
 * briefly before it sleeps: in a ping-pong the answer usually comes first,
 * and then no system call is made at all. The kernel closes a dead
 * process's socket, so a receiver whose peer died gets POLLHUP and, once
 * the channel is empty, EOFError, as with multiprocessing's pipes.
 *
 * Descriptors travel on the socket as multiprocessing.reduction.sendfds
 * sends them: one byte (their count) with SCM_RIGHTS. A receiver that
 * drains wake-ups keeps the descriptors it meets for recv_fds, so a handle
 * is never lost to a wake-up's read; recv_fds skips wake-up bytes. The
 * socket itself is blocking (multiprocessing.reduction's own functions may
 * use it), so every call here passes MSG_DONTWAIT. */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How long a receiver spins on an empty channel before it sleeps. */
#define PIPE_SPIN_NS 50000ull
/* The ring each direction starts with: the address space it maps. */
#define PIPE_FIRST_RING (64u << 10)
/* How long a sender blocked on a full pipe waits before it looks whether
 * the receiver is still there. */
#define PIPE_SEND_CHECK 0.05
/* The wake-up byte. A descriptor message's byte is its count, at most
 * SCM_MAX_FD (253), so a wake-up is never taken for one. */
#define PIPE_WAKE 0xFF
/* The most descriptors one message carries: Linux's SCM_MAX_FD. */
#define PIPE_MAX_FDS 253

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
  /* Descriptors met while draining wake-ups, kept for recv_fds: messages
   * laid out as [count, fd...], oldest first. Guarded by held_lock, since
   * a receiver drains without the GIL. */
  int *held;
  size_t held_len, held_cap;
  _Atomic int held_lock; /* the pid of the holder, 0 when free */
} ffpy_pipe_end_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- descriptors kept for recv_fds ------------------------------------------ */

/* The lock lives in this process's memory, so a holder with another pid
 * is a thread of the parent this process was forked from, which does not
 * exist here: its lock is taken over rather than waited for forever. */
static void held_acquire(ffpy_pipe_end_t *self) {
  int me = (int)getpid();
  for (;;) {
    int holder = 0;
    if (atomic_compare_exchange_weak(&self->held_lock, &holder, me)) return;
    if (holder != 0 && holder != me &&
        atomic_compare_exchange_weak(&self->held_lock, &holder, me))
      return;
    sched_yield();
  }
}

static void held_release(ffpy_pipe_end_t *self) {
  atomic_store(&self->held_lock, 0);
}

/* The descriptors an SCM_RIGHTS message brought, into fds (at most
 * PIPE_MAX_FDS); returns how many. */
static size_t fds_of(struct msghdr *msg, int *fds) {
  size_t n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL;
       c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count && n < PIPE_MAX_FDS; i++)
      memcpy(&fds[n++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  return n;
}

/* Keeps one message's descriptors; called with held_lock. Closes them if
 * there is no memory to keep them in (the handle is lost, not leaked). */
static void held_push(ffpy_pipe_end_t *self, const int *fds, size_t n) {
  if (self->held_len + n + 1 > self->held_cap) {
    size_t cap = self->held_cap ? self->held_cap * 2 : 16;
    while (cap < self->held_len + n + 1) cap *= 2;
    int *grown = realloc(self->held, cap * sizeof(int));
    if (grown == NULL) {
      for (size_t i = 0; i < n; i++) close(fds[i]);
      return;
    }
    self->held = grown;
    self->held_cap = cap;
  }
  self->held[self->held_len++] = (int)n;
  memcpy(self->held + self->held_len, fds, n * sizeof(int));
  self->held_len += n;
}

/* Takes the oldest kept message's descriptors into fds; returns how many,
 * or -1 when none is kept. Called with held_lock. */
static int held_pop(ffpy_pipe_end_t *self, int *fds) {
  if (self->held_len == 0) return -1;
  int n = self->held[0];
  memcpy(fds, self->held + 1, (size_t)n * sizeof(int));
  self->held_len -= (size_t)n + 1;
  memmove(self->held, self->held + n + 1, self->held_len * sizeof(int));
  return n;
}

static void held_close_all(ffpy_pipe_end_t *self) {
  held_acquire(self);
  for (size_t i = 0; i < self->held_len;) {
    int n = self->held[i];
    for (int k = 1; k <= n; k++) close(self->held[i + (size_t)k]);
    i += (size_t)n + 1;
  }
  free(self->held);
  self->held = NULL;
  self->held_len = self->held_cap = 0;
  held_release(self);
}

/* One recvmsg of at most size bytes, without waiting; the descriptors it
 * brings go to fds, *nfds says how many. Returns recvmsg's result (errno
 * set when negative). */
static ssize_t recv_with_fds(int fd, char *data, size_t size, int *fds,
                             size_t *nfds) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PIPE_MAX_FDS * sizeof(int))];
  } control;
  struct iovec iov = {data, size};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  ssize_t got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  *nfds = got >= 0 ? fds_of(&msg, fds) : 0;
  return got;
}

/* Reads the wake-up bytes waiting on the socket, without waiting: once,
 * or until none is left. Descriptors met on the way are kept for recv_fds.
 * Sets peer_gone at the end of the stream. Needs no GIL. */
static void drain_socket(ffpy_pipe_end_t *self, int once) {
  for (;;) {
    char data[256];
    int fds[PIPE_MAX_FDS];
    size_t nfds;
    held_acquire(self);
    ssize_t got = recv_with_fds(self->fd, data, sizeof(data), fds, &nfds);
    if (nfds > 0) held_push(self, fds, nfds);
    held_release(self);
    if (got == 0) self->peer_gone = 1;
    if (got <= 0 || once) return;
  }
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
  held_close_all(self);
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
    const unsigned char wake = PIPE_WAKE;
    ssize_t n = send(self->fd, &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
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
    if (n > 0 && (p.revents & POLLIN)) drain_socket(self, 1);
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
  drain_socket(self, 0);
  return PyBool_FromLong(ff_channel_count(self->in) > 0 || peer_hung_up(self));
}

/* ---- descriptors ---------------------------------------------------------- */

typedef struct {
  ffpy_pipe_end_t *end;
  short events;
} fd_wait_arg_t;

/* Waits until the socket is ready for events (or hung up), or, when
 * reading, until a drain in another thread kept a message of descriptors.
 * Runs without the GIL. */
static int fd_wait_fn(void *arg, double timeout) {
  fd_wait_arg_t *a = arg;
  if (a->events & POLLIN) {
    held_acquire(a->end);
    size_t held = a->end->held_len;
    held_release(a->end);
    if (held > 0) return 0;
  }
  struct pollfd p = {a->end->fd, a->events, 0};
  int n = poll(&p, 1, timeout < 0 ? -1 : (int)(timeout * 1000 + 0.5));
  if (n < 0) return errno == EINTR ? -EINTR : -errno;
  return n > 0 ? 0 : -ETIMEDOUT;
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
  if (n < 1 || n > PIPE_MAX_FDS) {
    Py_DECREF(seq);
    PyErr_Format(PyExc_ValueError, "can send 1 to %d descriptors, not %zd",
                 PIPE_MAX_FDS, n);
    return NULL;
  }
  int fds[PIPE_MAX_FDS];
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
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(PIPE_MAX_FDS * sizeof(int))];
  } control;
  memset(&control, 0, sizeof(control));
  unsigned char count = (unsigned char)(n % 256);
  struct iovec iov = {&count, 1};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = CMSG_SPACE((size_t)n * sizeof(int));
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
  memcpy(CMSG_DATA(c), fds, (size_t)n * sizeof(int));
  for (;;) {
    ssize_t sent = sendmsg(self->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == 1) Py_RETURN_NONE;
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
        errno != EINTR)
      return PyErr_SetFromErrno(PyExc_OSError);
    /* The socket's buffer is full of wake-ups the other end has not read:
     * wait for room. */
    fd_wait_arg_t wait = {self, POLLOUT};
    if (ffpy_wait_interruptibly(fd_wait_fn, &wait, -1.0) < 0) return NULL;
    if (check_open(self) < 0) return NULL;
  }
}

/* recv_fds() -> list of the descriptors of the next message send_fds (or
 * multiprocessing.reduction.sendfds) sent, waiting for it. Wake-up bytes
 * are skipped; another byte without descriptors is RuntimeError, and the
 * end of the stream EOFError, as multiprocessing.reduction.recvfds. The
 * descriptors are close-on-exec. */
static PyObject *pipe_end_recv_fds(ffpy_pipe_end_t *self, PyObject *unused) {
  (void)unused;
  int fds[PIPE_MAX_FDS];
  for (;;) {
    if (check_open(self) < 0) return NULL;
    unsigned char byte = 0;
    size_t nfds = 0;
    held_acquire(self);
    int kept = held_pop(self, fds);
    ssize_t got = 0;
    int error = 0;
    if (kept >= 0) {
      nfds = (size_t)kept;
      got = 1;
    } else {
      /* One byte at a time: a message's descriptors come with its byte. */
      got = recv_with_fds(self->fd, (char *)&byte, 1, fds, &nfds);
      error = errno;
    }
    held_release(self);
    if (got > 0 && nfds > 0) {
      PyObject *list = PyList_New((Py_ssize_t)nfds);
      if (list == NULL) {
        for (size_t i = 0; i < nfds; i++) close(fds[i]);
        return NULL;
      }
      for (size_t i = 0; i < nfds; i++) {
        PyObject *number = PyLong_FromLong(fds[i]);
        if (number == NULL) {
          for (size_t k = i; k < nfds; k++) close(fds[k]);
          Py_DECREF(list);
          return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, number);
      }
      return list;
    }
    if (got > 0) {
      if (byte == PIPE_WAKE) continue;
      PyErr_SetString(PyExc_RuntimeError, "received 0 items of ancdata");
      return NULL;
    }
    if (got == 0) {
      self->peer_gone = 1;
      PyErr_SetNone(PyExc_EOFError);
      return NULL;
    }
    if (error != EAGAIN && error != EWOULDBLOCK && error != EINTR) {
      errno = error;
      return PyErr_SetFromErrno(PyExc_OSError);
    }
    fd_wait_arg_t wait = {self, POLLIN};
    if (ffpy_wait_interruptibly(fd_wait_fn, &wait, -1.0) < 0) return NULL;
  }
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
