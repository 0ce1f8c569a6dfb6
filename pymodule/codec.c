/* The task codec: how a value becomes the bytes of a message or a result
 * (ffpy_encode) and how those bytes become a value again (ffpy_decode, and
 * ffpy_decode_into for a map chunk's result). Everything that goes between
 * a pool's parent and its workers goes through these two; what the
 * messages mean (a call, a chunk, an error) is forkfarm/_protocol.py's.
 *
 * The wire format. A message's first four bytes say which kind it is:
 *
 * - A plain pickle (any other first bytes; pickles of protocol 2 and more
 *   start with the PROTO opcode, 0x80). Shared arrays, queues and locks in
 *   it are handles (forkfarm/shared.py), decoded with loads. Contexts (a
 *   map's (kind, func), sent once per worker) are always plain pickles.
 *
 * - A frame, FF_ARENA_FRAME_MAGIC ("\xff" "FFB"), for a message that
 *   carries large buffers out of band or names shared segments:
 *     bytes 0-3    the magic
 *     bytes 4-7    R, the count of arena references (uint32_t)
 *     bytes 8-11   P, the count of pinned segments (uint32_t)
 *     bytes 12-15  zero
 *     then R ff_arena_ref_t (32 bytes each: chunk, offset, length, slot,
 *     generation), P segment ids (uint64_t), and the pickle, which loads
 *     with buffers= the R regions in order (pickle protocol 5's
 *     out-of-band buffers). The pool keeps the pinned segments open until
 *     the task finishes (lib/frame.c parses the frame, lib/arena.c the
 *     references).
 *
 * - The compact encoding, FF_COMPACT_MAGIC ("\xff" "FFL"), for a list of
 *   ints that each fit 64 bits, or of floats:
 *     bytes 0-3    the magic
 *     byte 4       the kind: FF_COMPACT_INTS ('i') or FF_COMPACT_FLOATS ('d')
 *     bytes 5-7    zero
 *     bytes 8-15   N, the count (uint64_t)
 *     then N values of 8 bytes (int64_t, or a double's bits).
 *   Only a map chunk's result travels so (and the chunks of a map with
 *   chunksize 1, one item each): unpickling a million ints costs about as
 *   much as creating them, and what the encoding saves is the pickling in
 *   the worker and the parsing in the parent, about 25 ns an item between
 *   them (docs/architecture.md).
 *
 * Integers are in the machine's byte order: both ends are on one machine.
 * The receiver does not trust the sender (a worker's result is read by its
 * parent): the frame and the compact header are checked by lib/ before any
 * byte after them is read.
 *
 * codec.c uses shared.c (the arenas, regions and pins); shared.c knows
 * nothing of the codec. */
#include "core.h"

#include <stdint.h>
#include <string.h>

/* ---- the compact encoding ------------------------------------------------ */

/* The compact kind of a list (FF_COMPACT_INTS or _FLOATS), or 0 when it is
 * not one. */
static char compact_kind(PyObject *value, Py_ssize_t *count) {
  if (!PyList_CheckExact(value)) return 0;
  Py_ssize_t n = PyList_GET_SIZE(value);
  if (n < FFPY_COMPACT_MIN_ITEMS) return 0;
  *count = n;
  int ints = 1, floats = 1;
  for (Py_ssize_t i = 0; i < n && ints; i++)
    ints = PyLong_CheckExact(PyList_GET_ITEM(value, i));
  if (ints) return FF_COMPACT_INTS;
  for (Py_ssize_t i = 0; i < n && floats; i++)
    floats = PyFloat_CheckExact(PyList_GET_ITEM(value, i));
  return floats ? FF_COMPACT_FLOATS : 0;
}

/* Writes the compact encoding of value (a list of kind) at base: 1, or 0
 * when an int does not fit 64 bits (the pickle has room for it). */
static int compact_fill(char *base, PyObject *value, Py_ssize_t n, char kind) {
  int64_t *values = (int64_t *)(base + FF_COMPACT_HEADER);
  if (kind == FF_COMPACT_INTS) {
    for (Py_ssize_t i = 0; i < n; i++) {
      int overflow = 0;
      long long v =
          PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(value, i), &overflow);
      if (overflow) return 0;
      values[i] = (int64_t)v;
    }
  } else {
    for (Py_ssize_t i = 0; i < n; i++) {
      double d = PyFloat_AS_DOUBLE(PyList_GET_ITEM(value, i));
      memcpy(&values[i], &d, sizeof(d));
    }
  }
  memcpy(base, FF_COMPACT_MAGIC, 4);
  memset(base + 4, 0, 4);
  base[4] = kind;
  uint64_t count = (uint64_t)n;
  memcpy(base + 8, &count, sizeof(count));
  return 1;
}

/* The compact encoding of value when it applies: into out (returning
 * Py_None) or as bytes; NULL without an exception when it does not apply,
 * with one on a memory error. */
static PyObject *compact_encode(PyObject *value, ff_buf_t *out) {
  Py_ssize_t n = 0;
  char kind = compact_kind(value, &n);
  if (kind == 0) return NULL;
  size_t size = FF_COMPACT_HEADER + (size_t)n * 8;
  if (out != NULL) {
    char *base = ff_buf_reserve(out, size);
    if (base == NULL) return PyErr_NoMemory();
    if (compact_fill(base, value, n, kind)) Py_RETURN_NONE;
    out->len = 0;
    return NULL;
  }
  PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
  if (bytes == NULL) return NULL;
  if (compact_fill(PyBytes_AS_STRING(bytes), value, n, kind)) return bytes;
  Py_DECREF(bytes);
  return NULL;
}

/* The compact encoding of [item] when item is an int that fits 64 bits or
 * a float, as bytes; NULL without an exception when it is neither, with
 * one on a memory error. No list is made: a map with chunksize 1 encodes
 * every item so. */
static PyObject *compact_singleton(PyObject *item) {
  char kind;
  int64_t raw;
  if (PyLong_CheckExact(item)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow) return NULL;
    kind = FF_COMPACT_INTS;
    raw = (int64_t)v;
  } else if (PyFloat_CheckExact(item)) {
    double d = PyFloat_AS_DOUBLE(item);
    memcpy(&raw, &d, sizeof(raw));
    kind = FF_COMPACT_FLOATS;
  } else {
    return NULL;
  }
  char buf[FF_COMPACT_HEADER + 8];
  memcpy(buf, FF_COMPACT_MAGIC, 4);
  memset(buf + 4, 0, 4);
  buf[4] = kind;
  uint64_t count = 1;
  memcpy(buf + 8, &count, sizeof(count));
  memcpy(buf + FF_COMPACT_HEADER, &raw, sizeof(raw));
  return PyBytes_FromStringAndSize(buf, (Py_ssize_t)sizeof(buf));
}

/* Checks a compact payload's header (ff_compact_parse): its count, or -1
 * with ValueError. */
static Py_ssize_t compact_count(const char *data, size_t length) {
  char kind;
  uint64_t count;
  if (ff_compact_parse(data, length, &kind, &count) != 1 ||
      count > (uint64_t)PY_SSIZE_T_MAX) {
    PyErr_SetString(PyExc_ValueError, "a corrupt compact result");
    return -1;
  }
  return (Py_ssize_t)count;
}

/* Item i of a checked compact payload, as a new object. */
static PyObject *compact_item(const char *data, Py_ssize_t i) {
  int64_t v;
  memcpy(&v, data + FF_COMPACT_HEADER + (size_t)i * 8, sizeof(v));
  if (data[4] == FF_COMPACT_INTS) return PyLong_FromLongLong((long long)v);
  double d;
  memcpy(&d, &v, sizeof(d));
  return PyFloat_FromDouble(d);
}

static PyObject *compact_decode(const char *data, size_t length) {
  Py_ssize_t count = compact_count(data, length);
  if (count < 0) return NULL;
  PyObject *list = PyList_New(count);
  if (list == NULL) return NULL;
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *item = compact_item(data, i);
    if (item == NULL) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, i, item);
  }
  return list;
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

/* ---- the pickler: out-of-band buffers through the arena ------------------ */

/* Buffers smaller than this stay in the pickle: copying them twice costs
 * less than an arena slot and a mapping lookup. */
static Py_ssize_t oob_threshold = 64 * 1024;

int ffpy_set_oob_threshold(Py_ssize_t threshold) {
  oob_threshold = threshold;
  return 0;
}

typedef struct {
  char *refs; /* the frame's references so far */
  size_t count;
  size_t capacity;
  ff_arena_t *arena; /* where they are */
  ffpy_memo_t *memo; /* or NULL */
} oob_collector_t;

/* The collector of the encoding running in this thread, for the buffer
 * callback. */
static _Thread_local oob_collector_t *current_collector;

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
  if (c == NULL) Py_RETURN_TRUE; /* called outside an encoding: in band */
  Py_buffer view;
  if (PyObject_GetBuffer(buffer, &view, PyBUF_ANY_CONTIGUOUS) < 0) {
    PyErr_Clear();
    Py_RETURN_TRUE;
  }
  ff_arena_t *a = view.len >= oob_threshold ? ffpy_sending_arena() : NULL;
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
    int fresh = 0; /* a reference no message of the memo has yet */
    if (seen != NULL && c->memo->arena == a) {
      rc = ff_arena_share(a, &seen->ref, &ref);
    } else if (ffpy_shared_lend(view.buf, (size_t)view.len, a, &ref)) {
      rc = 0; /* born in shared memory: lent, not copied */
      fresh = 1;
    } else {
      Py_BEGIN_ALLOW_THREADS
      rc = ff_arena_alloc(a, (size_t)view.len, &ref, &data);
      if (rc == 0) memcpy(data, view.buf, (size_t)view.len);
      Py_END_ALLOW_THREADS
      /* The messages of a memo share the copy: each receiver maps it
       * privately, so that what one task writes no other sees. */
      if (rc == 0 && c->memo != NULL) ref.flags |= FF_ARENA_REF_PRIVATE;
      fresh = rc == 0;
    }
    if (fresh && c->memo != NULL)
      memo_add(c->memo, a, view.buf, (size_t)view.len, &ref, buffer);
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
 * callback, which finds the encoding it serves through current_collector. */
static PyObject *pickle_dumps;
static PyObject *callback_kwnames;
static PyObject *oob_callback;

static int pickler_init(void) {
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

/* The frame ahead of pickled (bytes): a new bytes object. */
static PyObject *add_frame(const oob_collector_t *c,
                           const ffpy_pin_scope_t *pins, PyObject *pickled) {
  size_t refs_length = c->count * sizeof(ff_arena_ref_t);
  size_t pins_length = pins->count * sizeof(uint64_t);
  size_t body = FF_ARENA_FRAME_HEADER + refs_length + pins_length;
  PyObject *framed = PyBytes_FromStringAndSize(
      NULL, (Py_ssize_t)(body + (size_t)PyBytes_GET_SIZE(pickled)));
  if (framed == NULL) return NULL;
  char *out = PyBytes_AS_STRING(framed);
  uint32_t counts[3] = {(uint32_t)c->count, (uint32_t)pins->count, 0};
  memcpy(out, FF_ARENA_FRAME_MAGIC, 4);
  memcpy(out + 4, counts, sizeof(counts));
  if (refs_length) memcpy(out + FF_ARENA_FRAME_HEADER, c->refs, refs_length);
  if (pins_length)
    memcpy(out + FF_ARENA_FRAME_HEADER + refs_length, pins->ids, pins_length);
  memcpy(out + body, PyBytes_AS_STRING(pickled),
         (size_t)PyBytes_GET_SIZE(pickled));
  return framed;
}

/* A list of the ids of a pin scope, or NULL with an exception. */
static PyObject *pin_list(const ffpy_pin_scope_t *pins) {
  PyObject *list = PyList_New((Py_ssize_t)pins->count);
  for (size_t i = 0; list != NULL && i < pins->count; i++) {
    PyObject *id = PyLong_FromUnsignedLongLong(pins->ids[i]);
    if (id == NULL) Py_CLEAR(list);
    else PyList_SET_ITEM(list, (Py_ssize_t)i, id);
  }
  return list;
}

/* Pickles value as a pool's message: shared objects as handles (a pin
 * scope), and with FFPY_ENCODE_OOB large buffers through the arena and a
 * frame when there are buffers or pins; with how->pins, the pins are
 * returned instead of framed. */
static PyObject *pickle_value(PyObject *value, const ffpy_encoding_t *how) {
  if (pickler_init() < 0) return NULL;
  PyObject *memo = how->memo == Py_None ? NULL : how->memo;
  if (memo != NULL && !PyObject_TypeCheck(memo, &ffpy_memo_type)) {
    PyErr_SetString(PyExc_TypeError, "memo must be a BufferMemo");
    return NULL;
  }
  int oob = (how->flags & FFPY_ENCODE_OOB) && how->pins == NULL;
  PyObject *dumps = how->dumps != NULL ? how->dumps : pickle_dumps;
  oob_collector_t collector = {NULL, 0, 0, NULL, (ffpy_memo_t *)memo};
  oob_collector_t *outer = current_collector;
  ffpy_pin_scope_t pins;
  /* A context (neither oob nor pins) is a plain pickle: no frame, so no
   * pins are noted. */
  ffpy_pin_scope_enter(&pins, oob || how->pins != NULL);
  current_collector = oob ? &collector : NULL;
  PyObject *args[3] = {value, how->protocol, oob_callback};
  /* The buffer callback is the codec's own pickler's, not a given dumps. */
  int callback = oob && how->dumps == NULL;
  PyObject *pickled = PyObject_Vectorcall(dumps, args, 2,
                                          callback ? callback_kwnames : NULL);
  current_collector = outer;
  ffpy_pin_scope_exit(&pins);
  if (pickled != NULL && !PyBytes_Check(pickled)) {
    PyErr_SetString(PyExc_TypeError, "dumps must return bytes");
    Py_CLEAR(pickled);
  }
  if (pickled != NULL && how->pins != NULL) {
    *how->pins = pin_list(&pins);
    if (*how->pins == NULL) Py_CLEAR(pickled);
  } else if (pickled != NULL && oob && collector.count + pins.count > 0) {
    Py_SETREF(pickled, add_frame(&collector, &pins, pickled));
  }
  /* What went into the arena for a message that failed goes back. */
  if (pickled == NULL) collector_cancel(&collector);
  PyMem_Free(collector.refs);
  PyMem_Free(pins.ids);
  return pickled;
}

/* ffpy_encode of [item] (FFPY_ENCODE_ONE_ITEM). */
static PyObject *encode_one_item(PyObject *item, const ffpy_encoding_t *how,
                                 ff_buf_t *out) {
  if ((how->flags & FFPY_ENCODE_COMPACT) && out == NULL) {
    PyObject *compact = compact_singleton(item);
    if (compact != NULL || PyErr_Occurred()) return compact;
  }
  PyObject *one = PyList_New(1);
  if (one == NULL) return NULL;
  PyList_SET_ITEM(one, 0, Py_NewRef(item));
  ffpy_encoding_t as_list = *how;
  as_list.flags &= ~FFPY_ENCODE_ONE_ITEM;
  PyObject *encoded = ffpy_encode(one, &as_list, out);
  Py_DECREF(one);
  return encoded;
}

PyObject *ffpy_encode(PyObject *value, const ffpy_encoding_t *how,
                      ff_buf_t *out) {
  if (how->pins != NULL) *how->pins = NULL;
  if (how->flags & FFPY_ENCODE_ONE_ITEM)
    return encode_one_item(value, how, out);
  if (how->flags & FFPY_ENCODE_COMPACT) {
    PyObject *compact = compact_encode(value, out);
    if (compact != NULL || PyErr_Occurred()) return compact;
  }
  PyObject *encoded;
  if (how->dumps != NULL && how->pins == NULL) {
    /* A hook that encodes by itself (the worker's dumps, _core.dumps). */
    PyObject *args[2] = {value, how->protocol};
    encoded = PyObject_Vectorcall(how->dumps, args, 2, NULL);
  } else {
    encoded = pickle_value(value, how);
  }
  if (encoded == NULL || out == NULL) return encoded;
  if (!PyBytes_Check(encoded)) {
    Py_DECREF(encoded);
    PyErr_SetString(PyExc_TypeError, "dumps() must return bytes");
    return NULL;
  }
  int rc = ff_buf_set(out, PyBytes_AS_STRING(encoded),
                      (size_t)PyBytes_GET_SIZE(encoded));
  Py_DECREF(encoded);
  if (rc < 0) return PyErr_NoMemory();
  Py_RETURN_NONE;
}

/* ---- decoding ------------------------------------------------------------ */

void ffpy_release_view(PyObject *view, PyObject **value) {
  /* loads is done with the memory; a view that outlived it would dangle.
   * The exception loads raised, if any, waits while release runs. */
  PyObject *type = NULL, *exc = NULL, *tb = NULL;
  if (*value == NULL) PyErr_Fetch(&type, &exc, &tb);
  PyObject *released = PyObject_CallMethod(view, "release", NULL);
  Py_XDECREF(released);
  if (released == NULL && *value != NULL) Py_CLEAR(*value);
  if (type != NULL) {
    PyErr_Clear();
    PyErr_Restore(type, exc, tb);
  }
  Py_DECREF(view);
}

/* loads(data) on a memoryview of data, released after. */
static PyObject *load_plain(const char *data, size_t length, PyObject *loads) {
  PyObject *view =
      PyMemoryView_FromMemory((char *)data, (Py_ssize_t)length, PyBUF_READ);
  if (view == NULL) return NULL;
  PyObject *value = PyObject_CallOneArg(loads, view);
  ffpy_release_view(view, &value);
  return value;
}

/* A framed message: loads(body, buffers=[regions]). */
static PyObject *load_framed(const char *data, size_t length,
                             PyObject *loads) {
  ff_arena_frame_t frame;
  int rc = ff_arena_frame(data, length, &frame);
  if (rc < 0) return ffpy_raise(rc);
  size_t count = frame.refs, body = frame.body;
  PyObject *buffers = PyList_New((Py_ssize_t)count);
  if (buffers == NULL) return NULL;
  for (size_t i = 0; i < count; i++) {
    ff_arena_ref_t ref;
    ff_arena_frame_ref(data, i, &ref);
    PyObject *region = ffpy_region_receive(&ref);
    if (region == NULL) {
      /* The ones not reached are never taken: give them back. */
      for (size_t j = i + 1; j < count; j++) {
        ff_arena_frame_ref(data, j, &ref);
        ffpy_region_discard(&ref);
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

ffpy_wire_kind_t ffpy_wire_kind(const char *data, size_t length) {
  if (length >= FF_COMPACT_HEADER && memcmp(data, FF_COMPACT_MAGIC, 4) == 0)
    return FFPY_WIRE_COMPACT;
  if (length >= 4 && memcmp(data, FF_ARENA_FRAME_MAGIC, 4) == 0)
    return FFPY_WIRE_FRAMED;
  return FFPY_WIRE_PICKLE;
}

PyObject *ffpy_decode(const char *data, size_t length, PyObject *loads) {
  switch (ffpy_wire_kind(data, length)) {
  case FFPY_WIRE_COMPACT:
    return compact_decode(data, length);
  case FFPY_WIRE_FRAMED:
    return load_framed(data, length, loads);
  case FFPY_WIRE_PICKLE:
    break;
  }
  return load_plain(data, length, loads);
}

int ffpy_decode_into(const char *data, size_t length, PyObject *loads,
                     PyObject *target, Py_ssize_t start, Py_ssize_t count) {
  if (!PyList_Check(target) || start < 0 ||
      start > PyList_GET_SIZE(target) - count) {
    PyErr_SetString(PyExc_ValueError, "the target slice is out of range");
    return -1;
  }
  if (ffpy_wire_kind(data, length) != FFPY_WIRE_COMPACT) {
    PyObject *values = ffpy_decode(data, length, loads);
    if (values == NULL) return -1;
    int rc = -1;
    if (!PyList_Check(values) || PyList_GET_SIZE(values) != count)
      PyErr_SetString(PyExc_ValueError,
                      "a chunk's result does not match its items");
    else
      rc = PyList_SetSlice(target, start, start + count, values);
    Py_DECREF(values);
    return rc;
  }
  Py_ssize_t got = compact_count(data, length);
  if (got < 0) return -1;
  if (got != count) {
    PyErr_SetString(PyExc_ValueError,
                    "a chunk's result does not match its items");
    return -1;
  }
  /* Straight into the result list: no list per chunk, no slice copy. */
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *item = compact_item(data, i);
    if (item == NULL) return -1;
    PyObject *old = PyList_GET_ITEM(target, start + i);
    PyList_SET_ITEM(target, start + i, item);
    Py_XDECREF(old);
  }
  return 0;
}
