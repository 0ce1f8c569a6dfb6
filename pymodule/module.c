/* forkfarm._core: the CPython extension over the C runtime. */
#include "core.h"

static PyObject *core_strerror(PyObject *module, PyObject *arg) {
  (void)module;
  long code = PyLong_AsLong(arg);
  if (code == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(ff_strerror((int)code));
}

static PyObject *core_encode_singletons(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *items, *dumps, *protocol;
  if (!PyArg_ParseTuple(args, "OOO:encode_singletons", &items, &dumps,
                        &protocol))
    return NULL;
  return ffpy_encode_singletons(items, dumps, protocol);
}

static PyMethodDef core_methods[] = {
    {"encode_singletons", core_encode_singletons, METH_VARARGS,
     "encode_singletons(items, dumps, protocol) -> list[bytes]: one map "
     "chunk per item, compact for ints and floats."},
    {"strerror", core_strerror, METH_O,
     "strerror(code) -> str: describes a runtime return code."},
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
                           &ffpy_pool_type, &ffpy_context_type};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    if (PyModule_AddType(m, types[i]) < 0) return -1;
#define XX(name, value, text)                                                \
  if (PyModule_AddIntConstant(m, "E" #name, value) < 0) return -1;
  FF_ERRNO_MAP(XX)
#undef XX
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
