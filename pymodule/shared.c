/* Shared memory for Python: segments (the memory of shared arrays), and
 * large buffers sent out of band through the arena.
 *
 * _core.Segment is a mapped segment that exports its bytes with the buffer
 * protocol; forkfarm/shared.py builds ndarrays on it. A segment starts with
 * a header page (lib/segment.c: its id, its size, and whether its creator
 * let it go, which tells a worker's cache to drop it); the bytes follow.
 *
 * _core.dumps pickles with protocol 5 and sends each large out-of-band
 * buffer (an ndarray's data, a bytearray, a PickleBuffer) through this
 * process's arena: one copy here, none on the other side, where
 * ffpy_decode hands the unpickler a _core.Region over the arena's bytes. */
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

static PyObject *region_receive(const ff_arena_ref_t *ref, unsigned how) {
  ffpy_region_t *self = PyObject_New(ffpy_region_t, &ffpy_region_type);
  if (self == NULL) return NULL;
  self->ref = *ref;
  self->data = NULL;
  self->how = how;
  void *data;
  int rc = ff_arena_receive(ref, how, &data);
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

/* ---- pickling ----------------------------------------------------------- */

/* Buffers smaller than this stay in the pickle: copying them twice costs
 * less than an arena slot and a mapping lookup. */
static Py_ssize_t oob_threshold = 64 * 1024;

/* This process's arenas, made on first use (again in each worker: a
 * forked copy of the parent's would allocate in the parent's chunks): one
 * for the messages it sends its own pools' workers, which it does not
 * trust, and, in a worker, one for the results it sends its parent, which
 * the parent makes and claims from. */
static ff_arena_t *arena;
static ff_arena_t *result_arena;
static pid_t arena_pid;
/* Set while _core.dumps runs in this thread: shared arrays then pickle as
 * handles (forkfarm/shared.py asks with pickling_for_pool()). */
static _Thread_local int pickling_for_pool;
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

static ff_arena_t *process_arena(void) {
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

/* ---- BufferMemo: one copy of a buffer for all the messages of a map ---- */

typedef struct memo_entry_s {
  const void *address;
  size_t length;
  ff_arena_ref_t ref; /* the memo's own claim, which keeps the bytes */
  PyObject *buffer;   /* keeps the source alive, so the address stays its */
} memo_entry_t;

typedef struct {
  PyObject_HEAD
  memo_entry_t *entries;
  size_t count;
  ff_arena_t *arena; /* the arena of its entries */
} ffpy_memo_t;

static void memo_dealloc(ffpy_memo_t *self) {
  for (size_t i = 0; i < self->count; i++) {
    if (self->arena != NULL) ff_arena_cancel(self->arena, &self->entries[i].ref);
    Py_DECREF(self->entries[i].buffer);
  }
  PyMem_Free(self->entries);
  PyObject_Free(self);
}

static PyObject *memo_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  if (PyTuple_GET_SIZE(args) != 0 || (kw != NULL && PyDict_GET_SIZE(kw))) {
    PyErr_SetString(PyExc_TypeError, "BufferMemo() takes no arguments");
    return NULL;
  }
  ffpy_memo_t *self = (ffpy_memo_t *)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  self->entries = NULL;
  self->count = 0;
  self->arena = NULL;
  return (PyObject *)self;
}

PyTypeObject ffpy_memo_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "forkfarm._core.BufferMemo",
    .tp_basicsize = sizeof(ffpy_memo_t),
    .tp_dealloc = (destructor)memo_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BufferMemo(): given to dumps() for every message of one map "
              "call, it copies a buffer that several messages carry into "
              "the arena once.",
    .tp_new = memo_new,
};

static memo_entry_t *memo_find(ffpy_memo_t *memo, const void *address,
                               size_t length) {
  for (size_t i = 0; memo != NULL && i < memo->count; i++)
    if (memo->entries[i].address == address &&
        memo->entries[i].length == length)
      return &memo->entries[i];
  return NULL;
}

static void memo_add(ffpy_memo_t *memo, ff_arena_t *a, const void *address,
                     size_t length, const ff_arena_ref_t *ref,
                     PyObject *buffer) {
  memo_entry_t *grown =
      PyMem_Realloc(memo->entries, (memo->count + 1) * sizeof(*grown));
  if (grown == NULL) return; /* only the sharing is lost */
  memo->entries = grown;
  memo_entry_t *e = &memo->entries[memo->count];
  if (memo->arena != NULL && memo->arena != a) return;
  if (ff_arena_share(a, ref, &e->ref) != 0) return;
  memo->arena = a;
  e->address = address;
  e->length = length;
  Py_INCREF(buffer);
  e->buffer = buffer;
  memo->count++;
}

typedef struct {
  char *refs; /* the frame's references so far */
  size_t count;
  size_t capacity;
  ff_arena_t *arena; /* where they are */
  ffpy_memo_t *memo; /* or NULL */
  uint64_t *pins;    /* the segments its handles name */
  size_t pin_count;
  size_t pin_capacity;
} oob_collector_t;

/* The collector of the dumps() running in this thread, for pins. */
static _Thread_local oob_collector_t *current_collector;

int ffpy_note_pin(uint64_t id) {
  oob_collector_t *c = current_collector;
  if (c == NULL) return 0;
  for (size_t i = 0; i < c->pin_count; i++)
    if (c->pins[i] == id) return 0;
  if (c->pin_count == c->pin_capacity) {
    size_t capacity = c->pin_capacity * 2 + 4;
    uint64_t *grown = PyMem_Realloc(c->pins, capacity * sizeof(*grown));
    if (grown == NULL) {
      PyErr_NoMemory();
      return -1;
    }
    c->pins = grown;
    c->pin_capacity = capacity;
  }
  c->pins[c->pin_count++] = id;
  return 0;
}

static void collector_cancel(oob_collector_t *c) {
  for (size_t i = 0; i < c->count; i++) {
    ff_arena_ref_t ref;
    memcpy(&ref, c->refs + i * sizeof(ref), sizeof(ref));
    ff_arena_cancel(c->arena, &ref);
  }
}

/* pickle's buffer_callback: False sends the buffer out of band (it went
 * into the arena), True keeps it in the pickle. */
static PyObject *oob_collect(PyObject *unused, PyObject *buffer) {
  (void)unused;
  oob_collector_t *c = current_collector;
  if (c == NULL) Py_RETURN_TRUE; /* called outside dumps(): keep it in band */
  Py_buffer view;
  if (PyObject_GetBuffer(buffer, &view, PyBUF_ANY_CONTIGUOUS) < 0) {
    PyErr_Clear();
    Py_RETURN_TRUE;
  }
  ff_arena_t *a = view.len >= oob_threshold ? process_arena() : NULL;
  if (a != NULL) c->arena = a;
  ff_arena_ref_t ref;
  void *data;
  int sent = 0;
  if (a != NULL && c->count == c->capacity) {
    size_t capacity = c->capacity * 2 + 4;
    char *grown = PyMem_Realloc(c->refs, capacity * sizeof(ref));
    if (grown == NULL) {
      PyBuffer_Release(&view);
      return PyErr_NoMemory();
    }
    c->refs = grown;
    c->capacity = capacity;
  }
  if (a != NULL) {
    int rc;
    memo_entry_t *seen = memo_find(c->memo, view.buf, (size_t)view.len);
    if (seen != NULL && c->memo->arena == a) {
      rc = ff_arena_share(a, &seen->ref, &ref);
    } else {
      Py_BEGIN_ALLOW_THREADS
      rc = ff_arena_alloc(a, (size_t)view.len, &ref, &data);
      if (rc == 0) memcpy(data, view.buf, (size_t)view.len);
      Py_END_ALLOW_THREADS
      if (rc == 0 && c->memo != NULL)
        memo_add(c->memo, a, view.buf, (size_t)view.len, &ref, buffer);
    }
    if (rc == 0) {
      memcpy(c->refs + c->count * sizeof(ref), &ref, sizeof(ref));
      c->count++;
      sent = 1;
    }
  }
  PyBuffer_Release(&view);
  return PyBool_FromLong(!sent);
}

static PyMethodDef oob_collect_def = {"buffer_callback", oob_collect, METH_O,
                                      NULL};

/* Made once: pickle.dumps, the keyword name of its callback, and the
 * callback, which finds the dumps() it serves through current_collector. */
static PyObject *pickle_dumps;
static PyObject *callback_kwnames;
static PyObject *oob_callback;

static int dumps_init(void) {
  if (oob_callback != NULL) return 0;
  PyObject *pickle = PyImport_ImportModule("pickle");
  if (pickle == NULL) return -1;
  pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
  Py_DECREF(pickle);
  callback_kwnames = Py_BuildValue("(s)", "buffer_callback");
  oob_callback = PyCFunction_New(&oob_collect_def, NULL);
  if (pickle_dumps == NULL || callback_kwnames == NULL || oob_callback == NULL) {
    Py_CLEAR(pickle_dumps);
    Py_CLEAR(callback_kwnames);
    Py_CLEAR(oob_callback);
    return -1;
  }
  return 0;
}

PyObject *ffpy_dumps(PyObject *value, PyObject *protocol, int oob,
                     PyObject *memo) {
  if (dumps_init() < 0) return NULL;
  if (memo != NULL && memo != Py_None &&
      !PyObject_TypeCheck(memo, &ffpy_memo_type)) {
    PyErr_SetString(PyExc_TypeError, "memo must be a BufferMemo");
    return NULL;
  }
  oob_collector_t collector = {
      NULL, 0, 0, NULL, memo == Py_None ? NULL : (ffpy_memo_t *)memo,
      NULL, 0, 0};
  int outer = pickling_for_pool;
  oob_collector_t *outer_collector = current_collector;
  pickling_for_pool = 1;
  /* A context (oob false) is a plain pickle: no frame, so no pins. */
  current_collector = oob ? &collector : NULL;
  PyObject *args[3] = {value, protocol, oob_callback};
  PyObject *pickled = PyObject_Vectorcall(pickle_dumps, args, 2,
                                          oob ? callback_kwnames : NULL);
  pickling_for_pool = outer;
  current_collector = outer_collector;
  PyObject *framed = NULL;
  if (pickled != NULL && PyBytes_Check(pickled) &&
      collector.count + collector.pin_count > 0) {
    size_t refs_length = collector.count * sizeof(ff_arena_ref_t);
    size_t pins_length = collector.pin_count * sizeof(uint64_t);
    size_t body = FF_ARENA_FRAME_HEADER + refs_length + pins_length;
    framed = PyBytes_FromStringAndSize(
        NULL, (Py_ssize_t)(body + (size_t)PyBytes_GET_SIZE(pickled)));
    if (framed != NULL) {
      char *out = PyBytes_AS_STRING(framed);
      uint32_t counts[3] = {(uint32_t)collector.count,
                            (uint32_t)collector.pin_count, 0};
      memcpy(out, FF_ARENA_FRAME_MAGIC, 4);
      memcpy(out + 4, counts, sizeof(counts));
      if (refs_length)
        memcpy(out + FF_ARENA_FRAME_HEADER, collector.refs, refs_length);
      if (pins_length)
        memcpy(out + FF_ARENA_FRAME_HEADER + refs_length, collector.pins,
               pins_length);
      memcpy(out + body, PyBytes_AS_STRING(pickled),
             (size_t)PyBytes_GET_SIZE(pickled));
    }
    Py_SETREF(pickled, framed);
  }
  /* What went into the arena for a message that failed goes back. */
  if (pickled == NULL) collector_cancel(&collector);
  PyMem_Free(collector.refs);
  PyMem_Free(collector.pins);
  return pickled;
}

PyObject *ffpy_decode_framed(const char *data, size_t length,
                             PyObject *loads) {
  ff_arena_frame_t frame;
  int rc = ff_arena_frame(data, length, &frame);
  if (rc < 0) return ffpy_raise(rc);
  size_t count = frame.refs, body = frame.body;
  /* A worker's message from its parent goes back to the parent; a result
   * of this process's worker, to that worker. */
  unsigned how =
      in_worker && upstream ? FF_ARENA_FROM_PARENT : FF_ARENA_FROM_WORKER;
  PyObject *buffers = PyList_New((Py_ssize_t)count);
  if (buffers == NULL) return NULL;
  for (size_t i = 0; i < count; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(data, i, &ref);
    PyObject *region = region_receive(&ref, how);
    if (region == NULL) {
      /* The ones not reached are never taken: give them back. */
      for (size_t j = i + 1; j < count; j++) {
        ff_arena_frame_ref(data, j, &ref);
        ff_arena_discard(&ref, how);
      }
      Py_DECREF(buffers);
      return NULL;
    }
    PyList_SET_ITEM(buffers, (Py_ssize_t)i, region);
  }
  PyObject *view = PyMemoryView_FromMemory((char *)data + body,
                                           (Py_ssize_t)(length - body),
                                           PyBUF_READ);
  PyObject *value = NULL;
  if (view != NULL) {
    PyObject *args[2] = {view, buffers};
    PyObject *names = Py_BuildValue("(s)", "buffers");
    if (names != NULL) value = PyObject_Vectorcall(loads, args, 1, names);
    Py_XDECREF(names);
    ffpy_release_view(view, &value);
  }
  Py_DECREF(buffers);
  return value;
}

PyObject *ffpy_dumps_pinned(PyObject *value, PyObject *protocol,
                            PyObject *dumps, PyObject **pins) {
  *pins = NULL;
  if (dumps_init() < 0) return NULL;
  if (dumps == NULL) dumps = pickle_dumps;
  oob_collector_t collector = {NULL, 0, 0, NULL, NULL, NULL, 0, 0};
  int outer = pickling_for_pool;
  oob_collector_t *outer_collector = current_collector;
  pickling_for_pool = 1;
  current_collector = &collector;
  /* No buffer callback: buffers stay in band, only the pins are noted. */
  PyObject *args[2] = {value, protocol};
  PyObject *pickled = PyObject_Vectorcall(dumps, args, 2, NULL);
  pickling_for_pool = outer;
  current_collector = outer_collector;
  if (pickled != NULL && !PyBytes_Check(pickled)) {
    PyErr_SetString(PyExc_TypeError, "dumps must return bytes");
    Py_CLEAR(pickled);
  }
  if (pickled != NULL) {
    PyObject *list = PyList_New((Py_ssize_t)collector.pin_count);
    for (size_t i = 0; list != NULL && i < collector.pin_count; i++) {
      PyObject *id = PyLong_FromUnsignedLongLong(collector.pins[i]);
      if (id == NULL) Py_CLEAR(list);
      else PyList_SET_ITEM(list, (Py_ssize_t)i, id);
    }
    if (list == NULL) Py_CLEAR(pickled);
    *pins = list;
  }
  PyMem_Free(collector.pins);
  return pickled;
}

PyObject *ffpy_pins_of(PyObject *value, PyObject *protocol) {
  PyObject *pins;
  PyObject *pickled = ffpy_dumps_pinned(value, protocol, NULL, &pins);
  if (pickled == NULL) return NULL;
  Py_DECREF(pickled);
  return pins;
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

int ffpy_pickling_for_pool(void) { return pickling_for_pool; }

int ffpy_in_worker(void) { return in_worker; }

int ffpy_set_oob_threshold(Py_ssize_t threshold) {
  oob_threshold = threshold;
  return 0;
}
