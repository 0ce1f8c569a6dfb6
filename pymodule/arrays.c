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
