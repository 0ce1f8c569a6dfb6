/* forkfarm._core: the CPython extension over the C runtime. */
#include "core.h"

#include <string.h>

static PyObject *core_strerror(PyObject *module, PyObject *arg) {
  (void)module;
  long code = PyLong_AsLong(arg);
  if (code == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(ff_strerror((int)code));
}

/* encode_singletons(items, dumps, protocol): the chunks of one item each
 * of a map with chunksize 1, each [item] encoded as a map chunk is
 * (compact for an int or a float, dumps([item], protocol) else). */
static PyObject *core_encode_singletons(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *items, *dumps, *protocol;
  if (!PyArg_ParseTuple(args, "OOO:encode_singletons", &items, &dumps,
                        &protocol))
    return NULL;
  PyObject *seq = PySequence_Fast(items, "items must be a sequence");
  if (seq == NULL) return NULL;
  ffpy_encoding_t how = {protocol, FFPY_ENCODE_COMPACT | FFPY_ENCODE_ONE_ITEM,
                         NULL, dumps, NULL};
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject *out = PyList_New(n);
  for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
    PyObject *payload =
        ffpy_encode(PySequence_Fast_GET_ITEM(seq, i), &how, NULL);
    if (payload == NULL) Py_CLEAR(out);
    else PyList_SET_ITEM(out, i, payload);
  }
  Py_DECREF(seq);
  return out;
}

/* dumps(value, protocol=5, oob=True, *, memo=None), parsed by hand: it
 * runs for every message, and argument parsing would cost as much as a
 * small pickle. */
static PyObject *core_dumps(PyObject *module, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames) {
  (void)module;
  PyObject *value = NULL, *protocol = NULL, *oob = NULL, *memo = NULL;
  PyObject **slots[3] = {&value, &protocol, &oob};
  if (nargs < 1 || nargs > 3) {
    PyErr_SetString(PyExc_TypeError,
                    "dumps() takes from 1 to 3 positional arguments");
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nargs; i++) *slots[i] = args[i];
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
    PyObject **slot = name == NULL                  ? NULL
                      : strcmp(name, "protocol") == 0 ? &protocol
                      : strcmp(name, "oob") == 0      ? &oob
                      : strcmp(name, "memo") == 0     ? &memo
                                                      : NULL;
    if (slot == NULL || *slot != NULL) {
      if (name != NULL)
        PyErr_Format(PyExc_TypeError, "dumps() got an unexpected or repeated "
                                      "keyword argument '%s'",
                     name);
      return NULL;
    }
    *slot = args[nargs + i];
  }
  int use_oob = oob == NULL ? 1 : PyObject_IsTrue(oob);
  if (use_oob < 0) return NULL;
  static PyObject *five;
  if (five == NULL && (five = PyLong_FromLong(5)) == NULL) return NULL;
  ffpy_encoding_t how = {protocol ? protocol : five,
                         use_oob ? FFPY_ENCODE_OOB : 0, memo, NULL, NULL};
  return ffpy_encode(value, &how, NULL);
}

/* loads(data, loads=pickle.loads): decodes a message as a worker or the
 * parent does (a compact result, a frame of arena references, or a pickle):
 * what dumps made, or bytes from anywhere, which must fail cleanly. */
static PyObject *core_loads(PyObject *module, PyObject *args) {
  (void)module;
  Py_buffer data;
  PyObject *loads = NULL;
  if (!PyArg_ParseTuple(args, "y*|O:loads", &data, &loads)) return NULL;
  PyObject *pickle = NULL;
  if (loads == NULL) {
    pickle = PyImport_ImportModule("pickle");
    loads = pickle ? PyObject_GetAttrString(pickle, "loads") : NULL;
    Py_XDECREF(pickle);
    if (loads == NULL) {
      PyBuffer_Release(&data);
      return NULL;
    }
  } else {
    Py_INCREF(loads);
  }
  PyObject *value = ffpy_decode(data.buf, (size_t)data.len, loads);
  Py_DECREF(loads);
  PyBuffer_Release(&data);
  return value;
}

static PyObject *core_pins_of(PyObject *module, PyObject *value) {
  (void)module;
  static PyObject *five;
  if (five == NULL && (five = PyLong_FromLong(5)) == NULL) return NULL;
  PyObject *pins;
  ffpy_encoding_t how = {five, 0, NULL, NULL, &pins};
  PyObject *pickled = ffpy_encode(value, &how, NULL);
  if (pickled == NULL) return NULL;
  Py_DECREF(pickled);
  return pins;
}

static PyObject *core_pickling_for_pool(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyBool_FromLong(ffpy_pickling_for_pool());
}

static PyObject *core_pin(PyObject *module, PyObject *arg) {
  (void)module;
  unsigned long long id = PyLong_AsUnsignedLongLong(arg);
  if (id == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  if (ffpy_note_pin((uint64_t)id) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *core_trim_arena(PyObject *module, PyObject *arg) {
  (void)module;
  size_t keep = PyLong_AsSize_t(arg);
  if (keep == (size_t)-1 && PyErr_Occurred()) return NULL;
  return PyLong_FromSize_t(ffpy_trim_arena(keep));
}

static PyObject *core_worker_slot(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyLong_FromLong(ff_worker_slot());
}

static PyObject *core_worker_output_fd(PyObject *module, PyObject *arg) {
  (void)module;
  unsigned long stream = PyLong_AsUnsignedLong(arg);
  if (stream == (unsigned long)-1 && PyErr_Occurred()) return NULL;
  if (stream >= FF_OUTPUT_STREAMS) {
    PyErr_Format(PyExc_ValueError, "stream must be 0, 1 or 2, not %lu",
                 stream);
    return NULL;
  }
  return PyLong_FromLong(ff_worker_output_fd((unsigned)stream));
}

static PyObject *core_in_worker(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  return PyBool_FromLong(ffpy_in_worker());
}

static PyObject *core_set_oob_threshold(PyObject *module, PyObject *arg) {
  (void)module;
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 1) {
    PyErr_SetString(PyExc_ValueError, "the threshold must be at least 1 byte");
    return NULL;
  }
  ffpy_set_oob_threshold(n);
  Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"dumps", (PyCFunction)(void (*)(void))core_dumps,
     METH_FASTCALL | METH_KEYWORDS,
     "dumps(value, protocol=5, oob=True, *, memo=None) -> bytes: pickles "
     "for a pool: shared arrays as handles, and (with oob) large buffers "
     "through the arena, once per memo."},
    {"slot_refs", ffpy_slot_refs, METH_VARARGS,
     "slot_refs(segment, offset, delta) -> the count after adding delta"},
    {"loads", core_loads, METH_VARARGS,
     "loads(data, loads=pickle.loads): decodes what dumps made"},
    {"array_on_segment",
     (PyCFunction)(void (*)(void))ffpy_array_on_segment,
     METH_VARARGS | METH_KEYWORDS,
     "array_on_segment(segment, offset, shape, strides, dtype, writeable, "
     "subtype, fortran=False): an array of subtype on the segment's bytes "
     "from offset (strides None: contiguous), the segment its base; checked "
     "to lie within the segment. Needs NumPy (loaded on first use)."},
    {"pins_of", core_pins_of, METH_O,
     "pins_of(value) -> list[int]: the segments a pool's message carrying "
     "value would name (its shared arrays, queues and locks)."},
    {"pickling_for_pool", core_pickling_for_pool, METH_NOARGS,
     "pickling_for_pool() -> bool: True inside dumps() in this thread."},
    {"pin", core_pin, METH_O,
     "pin(segment_id): inside dumps(), the message keeps the segment open "
     "for its task's workers until the task finishes."},
    {"trim_arena", core_trim_arena, METH_O,
     "trim_arena(keep) -> int: releases idle arena memory beyond keep "
     "bytes; returns the bytes released."},
    {"worker_slot", core_worker_slot, METH_NOARGS,
     "worker_slot() -> int: in a pool's worker, the slot it fills (a "
     "replacement fills its predecessor's); -1 elsewhere."},
    {"worker_output_fd", core_worker_output_fd, METH_O,
     "worker_output_fd(stream) -> int: in a worker of a pool that captures "
     "output, the descriptor of stream (0 stdout, 1 stderr, 2 records); -1 "
     "elsewhere."},
    {"in_worker", core_in_worker, METH_NOARGS,
     "in_worker() -> bool: True in a pool's worker process."},
    {"set_oob_threshold", core_set_oob_threshold, METH_O,
     "set_oob_threshold(n): buffers of n bytes and more go out of band."},
    {"shared_counts", ffpy_core_shared_counts, METH_NOARGS,
     "shared_counts() -> dict: this process's arrays born in shared memory "
     "(held bytes and count, allocations, results lent and copied, regions "
     "frozen before a fork) and the threshold."},
    {"set_shared_threshold", ffpy_core_set_shared_threshold, METH_O,
     "set_shared_threshold(n): in a worker, NumPy array data of n bytes and "
     "more is born in shared memory (0: none)."},
    {"use_shared_allocator", ffpy_core_use_shared_allocator, METH_NOARGS,
     "use_shared_allocator() -> handler: in this thread's context, NumPy "
     "array data of the threshold and more is born in shared memory; "
     "returns the handler it replaces. Needs NumPy."},
    {"restore_allocator", ffpy_core_restore_allocator, METH_O,
     "restore_allocator(handler): NumPy's allocator is handler again."},
    {"encode_singletons", core_encode_singletons, METH_VARARGS,
     "encode_singletons(items, dumps, protocol) -> list[bytes]: one map "
     "chunk per item, compact for ints and floats."},
    {"fork", ffpy_fork, METH_VARARGS,
     "fork(callbacks_wait=1.0) -> int: os.fork() made through the runtime, "
     "its loop thread parked and its callback thread between batches: the "
     "child's pid, or 0 in the child; OSError(EBUSY), and no fork, when a "
     "batch of callbacks runs on for callbacks_wait seconds (negative: "
     "the fork does not wait for it)."},
    {"dumps_with_pins", ffpy_dumps_with_pins, METH_VARARGS,
     "dumps_with_pins(value, protocol=5, dumps=None) -> (bytes, list[int]): "
     "pickles (with dumps(value, protocol), else pickle.dumps) shared "
     "objects as handles, buffers in band, and names the segments the "
     "handles need."},
    {"segment_fd", ffpy_segment_fd, METH_O,
     "segment_fd(id) -> int: a new descriptor of a segment this process "
     "lends (the caller closes it)."},
    {"adopt_segment", ffpy_adopt_segment, METH_VARARGS,
     "adopt_segment(id, fd): the segment received as fd is lent here under "
     "id, as if made here; takes over fd."},
    {"zygote_serve", ffpy_zygote_serve, METH_VARARGS,
     "zygote_serve(ctl, hooks, initializer, initargs, max_tasks=0, "
     "max_memory=0, max_message=0): serves a pool as its zygote until ctl's other end "
     "closes, then exits. Only a single-threaded process may call it."},
    {"strerror", core_strerror, METH_O,
     "strerror(code) -> str: describes a runtime return code."},
    {"register_errors", (PyCFunction)(void (*)(void))ffpy_register_errors,
     METH_VARARGS | METH_KEYWORDS,
     "register_errors(*, WorkerStartError, Empty, Full, AbandonedLockWarning, "
     "BufferTooShort, pool_failure): the classes runtime codes are raised "
     "as, and pool_failure(code, detail, exit) -> the exception of a pool "
     "that cannot run tasks; called once, at the package's import."},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject *m) {
  ffpy_error_type = PyErr_NewExceptionWithDoc(
      "forkfarm._core.Error",
      "A runtime call failed: args are (code, message).", PyExc_RuntimeError,
      NULL);
  if (ffpy_error_type == NULL) return -1;
  if (PyModule_AddObjectRef(m, "Error", ffpy_error_type) < 0) return -1;
  PyTypeObject *types[] = {&ffpy_task_type, &ffpy_queue_type,
                           &ffpy_pool_type, &ffpy_context_type,
                           &ffpy_segment_type, &ffpy_region_type,
                           &ffpy_memo_type, &ffpy_mutex_type,
                           &ffpy_semaphore_type, &ffpy_event_type,
                           &ffpy_cond_type, &ffpy_channel_type,
                           &ffpy_pipe_end_type};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (PyModule_AddType(m, types[i]) < 0) return -1;
#define XX(name, value, text)                                                \
  if (PyModule_AddIntConstant(m, "E" #name, value) < 0) return -1;
  FF_ERRNO_MAP(XX)
#undef XX
  if (PyModule_AddIntConstant(m, "ESPAWN_BASE", FF_ESPAWN_BASE) < 0) return -1;
  /* The runtime's version, meson.build's project version: the package's
   * __version__. */
  if (PyModule_AddStringConstant(m, "__version__", ff_version()) < 0)
    return -1;
  return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "forkfarm._core",
    .m_doc = "The forkfarm runtime: pools of worker processes driven by a C "
             "loop thread.",
    .m_size = 0,
    .m_methods = core_methods,
    .m_slots = core_slots,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
