/* Shared memory for Python: segments (the memory of shared arrays), the
 * arenas large buffers go out of band through, the regions a receiver
 * reads them in, and the pins of a message (the segments it names).
 *
 * _core.Segment is a mapped segment that exports its bytes with the buffer
 * protocol; forkfarm/shared.py builds ndarrays on it. A segment starts with
 * a header page (lib/segment.c: its id, its size, and whether its creator
 * let it go, which tells a worker's cache to drop it); the bytes follow.
 *
 * The codec (codec.c) sends each large out-of-band buffer (an ndarray's
 * data, a bytearray, a PickleBuffer) through this process's arena: one
 * copy here, none on the other side, where it hands the unpickler a
 * _core.Region over the arena's bytes. This file knows nothing of the
 * codec. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  PyObject_HEAD
  uint64_t id;
  char *base; /* the header (lib/segment.c); the bytes follow at
                 FF_SEGMENT_HEADER */
  size_t size;
  size_t mapped; /* the bytes mapped here (a queue maps its own windows) */
  int creator;  /* made here (or for here, by the parent): lent until this
                   object goes */
  int parent;   /* in a worker: made by the parent, which can open it */
  int retained; /* opened here and kept lendable while this object lives */
  PyObject *weakrefs;
} ffpy_segment_t;

/* The bytes of a segment of size to map: all, or the first `mapped`
 * (negative: all). */
static size_t mapped_bytes(size_t size, Py_ssize_t mapped) {
  return mapped < 0 || (size_t)mapped > size ? size : (size_t)mapped;
}

static PyObject *segment_new(PyTypeObject *type, PyObject *args,
                             PyObject *kw) {
  static char *names[] = {"size", "parent", "mapped", NULL};
  Py_ssize_t size, mapped = -1;
  int parent = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "n|pn:Segment", names, &size,
                                   &parent, &mapped))
    return NULL;
  if (size < 0) {
    PyErr_SetString(PyExc_ValueError, "a segment's size cannot be negative");
    return NULL;
  }
  ffpy_segment_t *self = (ffpy_segment_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  void *base;
  int rc = ff_segment_create_mapped((size_t)size,
                                    parent ? FF_SEGMENT_PARENT : 0,
                                    mapped_bytes((size_t)size, mapped),
                                    &self->id, &base);
  if (rc < 0) {
    Py_DECREF(self);
    return ffpy_raise(rc);
  }
  self->base = base;
  self->size = (size_t)size;
  self->mapped = mapped_bytes(self->size, mapped);
  self->creator = 1;
  self->parent = parent && ffpy_in_worker();
  return (PyObject *)self;
}

static PyObject *segment_open(PyObject *cls, PyObject *args,
                              PyObject *kw) {
  static char *names[] = {"id", "mapped", NULL};
  unsigned long long id;
  Py_ssize_t mapped = -1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "K|n:open", names, &id, &mapped))
    return NULL;
  void *base;
  size_t size;
  int rc = ff_segment_open_mapped(
      (uint64_t)id, mapped_bytes(SIZE_MAX, mapped), &base, &size);
  if (rc == -ENOENT) {
    PyErr_Format(PyExc_LookupError,
                 "shared segment %llu is not reachable from this process: "
                 "shared arrays travel to the workers of the process that "
                 "made them (and back), not elsewhere",
                 id);
    return NULL;
  }
  if (rc == FF_EPROTOCOL) {
    PyErr_Format(PyExc_ValueError, "segment %llu is not a shared array", id);
    return NULL;
  }
  if (rc < 0) return ffpy_raise(rc);
  size_t bytes = mapped_bytes(size, mapped);
  ffpy_segment_t *self =
      (ffpy_segment_t *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
  if (self == NULL) {
    ff_segment_unmap(base, bytes);
    return NULL;
  }
  self->id = (uint64_t)id;
  self->base = base;
  self->size = size;
  self->mapped = bytes;
  /* A segment a worker made (and returned) stays lendable to other workers
   * while this process holds it. */
  self->retained = ff_segment_retain(self->id) == 0;
  return (PyObject *)self;
}

static void segment_dealloc(ffpy_segment_t *self) {
  if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
  if (self->base) {
    if (self->creator) {
      /* Workers drop their copies of what this process made; what the
       * parent made for a worker, the parent decides. */
      if (!self->parent) ff_segment_mark_released(self->base);
      ff_segment_forget(self->id);
    }
    ff_segment_unmap(self->base, self->mapped);
  }
  if (self->retained) ff_segment_release(self->id);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int segment_getbuffer(ffpy_segment_t *self, Py_buffer *view,
                             int flags) {
  return PyBuffer_FillInfo(view, (PyObject *)self,
                           self->base + FF_SEGMENT_HEADER,
                           (Py_ssize_t)self->mapped, 0, flags);
}

static PyBufferProcs segment_as_buffer = {
    (getbufferproc)segment_getbuffer,
    NULL,
};

uint64_t ffpy_segment_id(PyObject *segment) {
  return ((ffpy_segment_t *)segment)->id;
}

size_t ffpy_segment_size(PyObject *segment) {
  return ((ffpy_segment_t *)segment)->size;
}

char *ffpy_segment_data(PyObject *segment) {
  return ((ffpy_segment_t *)segment)->base + FF_SEGMENT_HEADER;
}

static PyObject *segment_get_id(ffpy_segment_t *self, void *closure) {
  (void)closure;
  return PyLong_FromUnsignedLongLong(self->id);
}

static PyObject *segment_get_size(ffpy_segment_t *self, void *closure) {
  (void)closure;
  return PyLong_FromSize_t(self->size);
}

static PyObject *segment_get_address(ffpy_segment_t *self, void *closure) {
  (void)closure;
  return PyLong_FromVoidPtr(self->base + FF_SEGMENT_HEADER);
}

static PyObject *segment_get_released(ffpy_segment_t *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(ff_segment_released(self->base));
}

static PyObject *segment_get_creator(ffpy_segment_t *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(self->creator);
}

static PyObject *segment_get_lendable(ffpy_segment_t *self, void *closure) {
  (void)closure;
  /* Only a worker's own segments are beyond its parent's reach. */
  return PyBool_FromLong(!(self->creator && !self->parent && ffpy_in_worker()));
}

static PyGetSetDef segment_getset[] = {
    {"lendable", (getter)segment_get_lendable, NULL,
     "True if it travels as a handle from here: its id can be opened by the "
     "processes this one sends to.",
     NULL},
    {"id", (getter)segment_get_id, NULL, "The id other processes open it by.",
     NULL},
    {"size", (getter)segment_get_size, NULL, "Its size in bytes.", NULL},
    {"address", (getter)segment_get_address, NULL,
     "The address of its first byte in this process.", NULL},
    {"released", (getter)segment_get_released, NULL,
     "True once the process that made it let it go.", NULL},
    {"creator", (getter)segment_get_creator, NULL,
     "True in the process that made it.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef segment_methods[] = {
    {"open", (PyCFunction)(void (*)(void))segment_open,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "open(id, mapped=-1) -> Segment: maps (the first mapped bytes of) a "
     "segment made by this process, its parent, or one of its workers."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_segment_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Segment",
    .tp_basicsize = sizeof(ffpy_segment_t),
    .tp_dealloc = (destructor)segment_dealloc,
    .tp_as_buffer = &segment_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Segment(size, parent=False, mapped=-1): shared memory (an "
              "anonymous memfd) that this process lends to its workers by "
              "id; with parent, in a worker, the parent makes it. Exports its "
              "bytes (the first mapped of them, when mapped >= 0) with the "
              "buffer protocol.",
    .tp_weaklistoffset = offsetof(ffpy_segment_t, weakrefs),
    .tp_methods = segment_methods,
    .tp_getset = segment_getset,
    .tp_new = segment_new,
};

/* ---- Region: the receiver's view of an out-of-band buffer -------------- */

typedef struct {
  PyObject_HEAD
  ff_arena_ref_t ref;
  char *data;
  unsigned how; /* FF_ARENA_FROM_WORKER or _FROM_PARENT: where it goes back */
} ffpy_region_t;

static void region_dealloc(ffpy_region_t *self) {
  if (self->data) ff_arena_release(&self->ref, self->how);
  PyObject_Free(self);
}

static int region_getbuffer(ffpy_region_t *self, Py_buffer *view, int flags) {
  return PyBuffer_FillInfo(view, (PyObject *)self, self->data,
                           (Py_ssize_t)self->ref.length, 0, flags);
}

static PyBufferProcs region_as_buffer = {
    (getbufferproc)region_getbuffer,
    NULL,
};

PyTypeObject ffpy_region_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.Region",
    .tp_basicsize = sizeof(ffpy_region_t),
    .tp_dealloc = (destructor)region_dealloc,
    .tp_as_buffer = &region_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The bytes of a buffer that came out of band, in the sender's "
              "arena; they go back to it when the last view goes.",
};

/* ---- the arenas -------------------------------------------------------- */

/* This process's arenas, made on first use (again in each worker: a
 * forked copy of the parent's would allocate in the parent's chunks): one
 * for the messages it sends its own pools' workers, which it does not
 * trust, and, in a worker, one for the results it sends its parent, which
 * the parent makes and claims from. */
static ff_arena_t *arena;
static ff_arena_t *result_arena;
static pid_t arena_pid;
/* Set while a worker encodes a result for its parent, or decodes a message
 * from it. */
static _Thread_local int upstream;
static int in_worker;

void ffpy_shared_after_fork_in_worker(void) {
  arena = NULL;
  result_arena = NULL;
  arena_pid = 0;
  in_worker = 1;
}

void ffpy_set_upstream(int on) { upstream = on; }

int ffpy_in_worker(void) { return in_worker; }

ff_arena_t *ffpy_sending_arena(void) {
  if (arena_pid != getpid()) {
    arena = NULL;
    result_arena = NULL;
    arena_pid = getpid();
  }
  int results = in_worker && upstream;
  ff_arena_t **slot = results ? &result_arena : &arena;
  if (*slot != NULL) return *slot;
  /* At most a quarter of the memory, and 64 MiB chunks. */
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  size_t limit = pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 4
                                       : (size_t)1 << 30;
  unsigned flags = results ? FF_SEGMENT_PARENT | FF_ARENA_TO_PARENT : 0;
  ff_arena_t *made;
  if (ff_arena_create(&made, flags, (size_t)64 << 20, limit) < 0) return NULL;
  *slot = made;
  return made;
}

size_t ffpy_trim_arena(size_t keep) {
  if (arena_pid != getpid()) return 0;
  size_t released = 0;
  Py_BEGIN_ALLOW_THREADS
  if (arena != NULL) released += ff_arena_trim(arena, keep);
  if (result_arena != NULL) released += ff_arena_trim(result_arena, keep);
  Py_END_ALLOW_THREADS
  return released;
}

/* Where a received reference goes back: a worker's message from its
 * parent to the parent; a result of this process's worker, to that
 * worker. */
static unsigned receiving_from(void) {
  return in_worker && upstream ? FF_ARENA_FROM_PARENT : FF_ARENA_FROM_WORKER;
}

PyObject *ffpy_region_receive(const ff_arena_ref_t *ref) {
  ffpy_region_t *self = PyObject_New(ffpy_region_t, &ffpy_region_type);
  if (self == NULL) return NULL;
  self->ref = *ref;
  self->data = NULL;
  self->how = receiving_from();
  void *data;
  int rc = ff_arena_receive(ref, self->how, &data);
  if (rc < 0) {
    Py_DECREF(self);
    PyErr_Format(PyExc_RuntimeError,
                 "an out-of-band buffer of %llu bytes could not be received "
                 "(%s)",
                 (unsigned long long)ref->length, ff_strerror(rc));
    return NULL;
  }
  self->data = data;
  return (PyObject *)self;
}

void ffpy_region_discard(const ff_arena_ref_t *ref) {
  ff_arena_discard(ref, receiving_from());
}

/* ---- pins ------------------------------------------------------------- */

/* The scope of the pool pickling that runs in this thread, or NULL. */
static _Thread_local ffpy_pin_scope_t *current_scope;

void ffpy_pin_scope_enter(ffpy_pin_scope_t *scope, int collect) {
  scope->ids = NULL;
  scope->count = 0;
  scope->capacity = 0;
  scope->collect = collect;
  scope->outer = current_scope;
  current_scope = scope;
}

void ffpy_pin_scope_exit(ffpy_pin_scope_t *scope) {
  current_scope = scope->outer;
}

int ffpy_pickling_for_pool(void) { return current_scope != NULL; }

int ffpy_note_pin(uint64_t id) {
  ffpy_pin_scope_t *c = current_scope;
  if (c == NULL || !c->collect) return 0;
  for (size_t i = 0; i < c->count; i++)
    if (c->ids[i] == id) return 0;
  if (c->count == c->capacity) {
    size_t capacity = c->capacity * 2 + 4;
    uint64_t *grown = PyMem_Realloc(c->ids, capacity * sizeof(*grown));
    if (grown == NULL) {
      PyErr_NoMemory();
      return -1;
    }
    c->ids = grown;
    c->capacity = capacity;
  }
  c->ids[c->count++] = id;
  return 0;
}
