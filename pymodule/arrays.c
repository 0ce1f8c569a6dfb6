/* NumPy's C API, in the one file of the extension that uses it.
 *
 * NumPy is optional at run time: the extension imports and pools run
 * without it. Nothing here runs until the package asks for an array, which
 * it does only with numpy imported, and NumPy's API table is loaded then
 * (_import_array(), never the import_array() macro in PyInit, which would
 * make the whole module fail to import without NumPy).
 *
 * The headers are NumPy 2's, built for the API of NumPy 1.22 and later
 * (NPY_TARGET_VERSION), so that one build runs on every NumPy from 1.22:
 * 1.22 is where NEP 49's allocator API (PyDataMem_SetHandler) begins. */
#include "core.h"

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <stdint.h>
#include <string.h>

static int numpy_loaded;

/* Loads NumPy's API table once: 0, or -1 with an exception that says NumPy
 * is what is missing. */
static int numpy_load(void) {
  if (numpy_loaded) return 0;
  if (_import_array() < 0) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyErr_Format(PyExc_ImportError,
                 "forkfarm's arrays need NumPy 1.22 or later: %S", value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return -1;
  }
  numpy_loaded = 1;
  return 0;
}

/* A tuple of ints (Py_ssize_t) into dims: its length, or -1 with an
 * exception naming what. */
static int read_dims(PyObject *tuple, const char *what, npy_intp *dims) {
  if (!PyTuple_Check(tuple)) {
    PyErr_Format(PyExc_TypeError, "%s must be a tuple of ints, not %.100s",
                 what, Py_TYPE(tuple)->tp_name);
    return -1;
  }
  Py_ssize_t n = PyTuple_GET_SIZE(tuple);
  if (n > NPY_MAXDIMS) {
    PyErr_Format(PyExc_ValueError, "%s has %zd dimensions, more than %d",
                 what, n, NPY_MAXDIMS);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    Py_ssize_t v = PyNumber_AsSsize_t(PyTuple_GET_ITEM(tuple, i),
                                      PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) return -1;
    dims[i] = (npy_intp)v;
  }
  return (int)n;
}

/* Whether an array of nd dims with these strides, itemsize bytes an
 * element, starting `offset` bytes into a region of `size` bytes, lies
 * within it. The handle came from another process: nothing in it is
 * trusted. */
static int within(const npy_intp *dims, const npy_intp *strides, int nd,
                  npy_intp itemsize, Py_ssize_t offset, size_t size) {
  /* The lowest and one past the highest byte, from the first element. */
  __int128 low = 0, high = itemsize;
  for (int i = 0; i < nd; i++) {
    if (dims[i] < 0) return 0;
    if (dims[i] == 0) return 1; /* no element: nothing is read */
    __int128 span = (__int128)(dims[i] - 1) * strides[i];
    if (span < 0)
      low += span;
    else
      high += span;
  }
  return offset >= 0 && offset + low >= 0 &&
         offset + high <= (__int128)size;
}

/* array_on_segment(segment, offset, shape, strides, dtype, writeable,
 * subtype, fortran=False): an array of subtype (an ndarray subclass) whose
 * data is the segment's bytes from offset, with the segment as its base.
 * strides None: contiguous, in C order or (fortran) Fortran order. An
 * array with no element gets its own (empty) data. */
PyObject *ffpy_array_on_segment(PyObject *module, PyObject *args,
                                PyObject *kw) {
  (void)module;
  static char *names[] = {"segment", "offset",  "shape",   "strides",
                          "dtype",   "writeable", "subtype", "fortran",
                          NULL};
  PyObject *segment, *shape, *strides_arg, *dtype, *subtype;
  Py_ssize_t offset;
  int writeable, fortran = 0;
  if (!PyArg_ParseTupleAndKeywords(
          args, kw, "O!nOOOpO!|p:array_on_segment", names, &ffpy_segment_type,
          &segment, &offset, &shape, &strides_arg, &dtype, &writeable,
          &PyType_Type, &subtype, &fortran))
    return NULL;
  if (numpy_load() < 0) return NULL;
  if (!PyType_IsSubtype((PyTypeObject *)subtype, &PyArray_Type)) {
    PyErr_SetString(PyExc_TypeError, "subtype must be an ndarray subclass");
    return NULL;
  }
  npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
  int nd = read_dims(shape, "shape", dims);
  if (nd < 0) return NULL;
  int have_strides = strides_arg != Py_None;
  if (have_strides) {
    int ns = read_dims(strides_arg, "strides", strides);
    if (ns < 0) return NULL;
    if (ns != nd) {
      PyErr_Format(PyExc_ValueError,
                   "strides has %d dimensions and shape %d", ns, nd);
      return NULL;
    }
  }
  PyArray_Descr *descr = NULL;
  if (!PyArray_DescrConverter(dtype, &descr)) return NULL;
  if (PyDataType_REFCHK(descr)) {
    PyErr_SetString(PyExc_TypeError,
                    "an array of Python objects cannot live in shared memory");
    Py_DECREF(descr);
    return NULL;
  }
  npy_intp count = 1;
  for (int i = 0; i < nd; i++) {
    if (dims[i] < 0) {
      PyErr_SetString(PyExc_ValueError, "negative dimensions are not allowed");
      Py_DECREF(descr);
      return NULL;
    }
    count *= dims[i];
  }
  npy_intp itemsize = PyDataType_ELSIZE(descr);
  if (!have_strides && count > 0) {
    /* Contiguous, in the order asked for. */
    npy_intp step = itemsize;
    for (int k = 0; k < nd; k++) {
      int i = fortran ? k : nd - 1 - k;
      strides[i] = step;
      step *= dims[i];
    }
  }
  size_t size = ffpy_segment_size(segment);
  char *data = NULL;
  if (count > 0) {
    if (!within(dims, strides, nd, itemsize, offset, size)) {
      PyErr_Format(PyExc_ValueError,
                   "the array (shape %R, offset %zd) does not lie within its "
                   "segment of %zu bytes",
                   shape, offset, size);
      Py_DECREF(descr);
      return NULL;
    }
    data = ffpy_segment_data(segment) + offset;
  }
  int flags = (writeable && count > 0 ? NPY_ARRAY_WRITEABLE : 0) |
              (fortran && !have_strides ? NPY_ARRAY_F_CONTIGUOUS : 0);
  /* Steals descr. */
  PyObject *array = PyArray_NewFromDescr(
      (PyTypeObject *)subtype, descr, nd, dims,
      count > 0 ? strides : NULL, data, flags, NULL);
  if (array == NULL) return NULL;
  if (data != NULL) {
    /* The segment stays mapped as long as the array (and its views). */
    if (PyArray_SetBaseObject((PyArrayObject *)array, Py_NewRef(segment)) <
        0) {
      Py_DECREF(array);
      return NULL;
    }
    PyArray_UpdateFlags((PyArrayObject *)array, NPY_ARRAY_UPDATE_ALL);
  } else if (!writeable) {
    PyArray_CLEARFLAGS((PyArrayObject *)array, NPY_ARRAY_WRITEABLE);
  }
  return array;
}

/* ---- the NEP 49 allocator: array data born in shared memory --------------
 * Requests of at least the threshold go to allocator.c, in a worker; the
 * rest, and anything allocator.c declines, to the handler that was current
 * when ours was installed. Freeing goes back to the one that allocated,
 * which allocator.c tells by address. */

/* The handler ours delegates to, held for ever (NEP 49: handlers are
 * immortal). */
static PyObject *previous_capsule;
static PyDataMemAllocator previous;

static void *shared_malloc(void *ctx, size_t size) {
  (void)ctx;
  void *p = ffpy_shared_alloc(size, 0);
  return p != NULL ? p : previous.malloc(previous.ctx, size);
}

static void *shared_calloc(void *ctx, size_t count, size_t size) {
  (void)ctx;
  void *p = NULL;
  if (size == 0 || count <= SIZE_MAX / size) p = ffpy_shared_alloc(count * size, 1);
  return p != NULL ? p : previous.calloc(previous.ctx, count, size);
}

static void *shared_realloc(void *ctx, void *p, size_t size) {
  (void)ctx;
  /* NEP 49's realloc is not told the old size: only our own blocks may
   * move between allocators, since only their size is known. */
  size_t old = ffpy_shared_length(p);
  if (old == 0) return previous.realloc(previous.ctx, p, size);
  if (ffpy_shared_resize(p, size)) return p;
  void *moved = ffpy_shared_alloc(size, 0);
  if (moved == NULL) moved = previous.malloc(previous.ctx, size);
  if (moved == NULL) return NULL;
  memcpy(moved, p, old < size ? old : size);
  ffpy_shared_free(p);
  return moved;
}

static void shared_free(void *ctx, void *p, size_t size) {
  (void)ctx;
  if (!ffpy_shared_free(p)) previous.free(previous.ctx, p, size);
}

static PyDataMem_Handler shared_handler = {
    "forkfarm_shared",
    1,
    {NULL, shared_malloc, shared_calloc, shared_realloc, shared_free},
};
static PyObject *shared_capsule;

PyObject *ffpy_numpy_use_shared_allocator(void) {
  if (numpy_load() < 0) return NULL;
  if (shared_capsule == NULL) {
    /* The capsule's name is the one NumPy requires. */
    shared_capsule = PyCapsule_New(&shared_handler, "mem_handler", NULL);
    if (shared_capsule == NULL) return NULL;
  }
  PyObject *old = PyDataMem_SetHandler(shared_capsule);
  if (old == NULL) return NULL;
  PyDataMem_Handler *handler = PyCapsule_GetPointer(old, "mem_handler");
  if (handler == NULL) {
    Py_XDECREF(PyDataMem_SetHandler(old));
    Py_DECREF(old);
    return NULL;
  }
  if (handler != &shared_handler && previous_capsule == NULL) {
    previous_capsule = Py_NewRef(old); /* held for ever */
    previous = handler->allocator;
  }
  return old;
}

/* _core.use_shared_allocator() -> the handler it replaces. */
PyObject *ffpy_core_use_shared_allocator(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return ffpy_numpy_use_shared_allocator();
}

/* _core.restore_allocator(handler): NumPy's allocator is handler again. */
PyObject *ffpy_core_restore_allocator(PyObject *module, PyObject *handler) {
  (void)module;
  if (numpy_load() < 0) return NULL;
  if (!PyCapsule_IsValid(handler, "mem_handler")) {
    PyErr_SetString(PyExc_TypeError,
                    "restore_allocator() takes what use_shared_allocator() "
                    "returned");
    return NULL;
  }
  PyObject *ours = PyDataMem_SetHandler(handler);
  if (ours == NULL) return NULL;
  Py_DECREF(ours);
  Py_RETURN_NONE;
}
