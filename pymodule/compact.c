/* The compact encoding of a map chunk's result: a list of ints or floats
 * as an array of 8-byte values instead of a pickle. Unpickling a million
 * ints costs about as much as creating them; what this saves is the
 * pickling in the worker and the parsing in the parent, about 25 ns an
 * item between them (see docs/architecture.md). */
#include "core.h"

#include <stdint.h>
#include <string.h>

static int all_ints(PyObject *list, Py_ssize_t n) {
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *item = PyList_GET_ITEM(list, i);
    if (!PyLong_CheckExact(item)) return 0;
  }
  return 1;
}

static int all_floats(PyObject *list, Py_ssize_t n) {
  for (Py_ssize_t i = 0; i < n; i++)
    if (!PyFloat_CheckExact(PyList_GET_ITEM(list, i))) return 0;
  return 1;
}

int ffpy_compact_encode(PyObject *value, ff_buf_t *out) {
  if (!PyList_CheckExact(value)) return 0;
  Py_ssize_t n = PyList_GET_SIZE(value);
  if (n < FFPY_COMPACT_MIN_ITEMS) return 0;
  char kind;
  if (all_ints(value, n))
    kind = FF_COMPACT_INTS;
  else if (all_floats(value, n))
    kind = FF_COMPACT_FLOATS;
  else
    return 0;
  size_t size = FF_COMPACT_HEADER + (size_t)n * 8;
  char *base = ff_buf_reserve(out, size);
  if (base == NULL) return -1;
  int64_t *values = (int64_t *)(base + FF_COMPACT_HEADER);
  if (kind == FF_COMPACT_INTS) {
    for (Py_ssize_t i = 0; i < n; i++) {
      int overflow = 0;
      long long v =
          PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(value, i), &overflow);
      if (overflow) {
        /* A big int: the pickle has room for it. */
        out->len = 0;
        return 0;
      }
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

static int is_compact(const char *data, size_t length) {
  return length >= FF_COMPACT_HEADER &&
         memcmp(data, FF_COMPACT_MAGIC, 4) == 0;
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

int ffpy_decode_into(const char *data, size_t length, PyObject *loads,
                     PyObject *target, Py_ssize_t start, Py_ssize_t count) {
  if (!PyList_Check(target) || start < 0 ||
      start > PyList_GET_SIZE(target) - count) {
    PyErr_SetString(PyExc_ValueError, "the target slice is out of range");
    return -1;
  }
  if (!is_compact(data, length)) {
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

/* A compact payload of one int or float, or NULL (no exception) when item is
 * neither or does not fit. */
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

PyObject *ffpy_encode_singletons(PyObject *items, PyObject *dumps,
                                 PyObject *protocol) {
  PyObject *seq = PySequence_Fast(items, "items must be a sequence");
  if (seq == NULL) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject *out = PyList_New(n);
  for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *payload = compact_singleton(item);
    if (payload == NULL && !PyErr_Occurred()) {
      PyObject *one = PyList_New(1);
      if (one != NULL) {
        Py_INCREF(item);
        PyList_SET_ITEM(one, 0, item);
        PyObject *args[2] = {one, protocol};
        payload = PyObject_Vectorcall(dumps, args, 2, NULL);
        Py_DECREF(one);
      }
    }
    if (payload == NULL) Py_CLEAR(out);
    else PyList_SET_ITEM(out, i, payload);
  }
  Py_DECREF(seq);
  return out;
}

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

PyObject *ffpy_decode(const char *data, size_t length, PyObject *loads) {
  if (is_compact(data, length)) return compact_decode(data, length);
  if (length >= 4 && memcmp(data, FF_ARENA_FRAME_MAGIC, 4) == 0)
    return ffpy_decode_framed(data, length, loads);
  PyObject *view =
      PyMemoryView_FromMemory((char *)data, (Py_ssize_t)length, PyBUF_READ);
  if (view == NULL) return NULL;
  PyObject *value = PyObject_CallOneArg(loads, view);
  ffpy_release_view(view, &value);
  return value;
}
