/* _core.Pool: a runtime pool whose workers run Python.
 *
 * The pool's completion callback runs on the runtime's callback thread (a C
 * thread), or in the thread that waits for the task; it takes the GIL once
 * per batch of finished tasks and calls each task's notify callable. Tasks
 * without one never touch the GIL outside their caller. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>

typedef struct {
  PyObject_HEAD
  ff_pool_t *pool;
  ffpy_worker_context_t context;
} ffpy_pool_t;

static int interpreter_finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

static void pool_on_complete(ff_task_t **tasks, size_t count, void *arg) {
  (void)arg;
  /* A thread that takes the GIL while the interpreter shuts down never gets
   * it back; the notify callables are moot by then. */
  if (interpreter_finalizing()) return;
  PyGILState_STATE gil = PyGILState_Ensure();
  for (size_t i = 0; i < count; i++) {
    ffpy_task_t *obj = ff_task_user_data(tasks[i]);
    PyObject *notify = obj->notify;
    obj->notify = NULL;
    if (notify) {
      PyObject *r = PyObject_CallOneArg(notify, (PyObject *)obj);
      if (r == NULL)
        PyErr_WriteUnraisable(notify);
      else
        Py_DECREF(r);
      Py_DECREF(notify);
    }
    Py_DECREF(obj); /* the reference taken at submit */
  }
  PyGILState_Release(gil);
}

static int pool_init(ffpy_pool_t *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"processes", "hooks", "initializer", "initargs",
                          "maxtasksperchild", "task_timeout", "retries",
                          "max_memory", "zygote", "max_message", "lendable",
                          "on_demand", "capture_output", NULL};
  int processes;
  unsigned int max_tasks = 0;
  double task_timeout = 0;
  unsigned int retries = 0;
  unsigned long long max_memory = 0, max_message = 0;
  PyObject *hooks, *initializer, *initargs, *zygote = Py_None;
  PyObject *lendable = NULL;
  int on_demand = 0, capture_output = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "iOOO!|IdIKOKO!pp:Pool", names,
                                   &processes, &hooks, &initializer,
                                   &PyTuple_Type, &initargs, &max_tasks,
                                   &task_timeout, &retries, &max_memory,
                                   &zygote, &max_message, &PyList_Type,
                                   &lendable, &on_demand, &capture_output))
    return -1;
  ff_zygote_t adopted = {-1, 0, -1};
  if (zygote != Py_None &&
      !PyArg_ParseTuple(zygote, "iii;zygote must be (ctl, pid, pidfd)",
                        &adopted.ctl, &adopted.pid, &adopted.pidfd))
    return -1;
  if (!(task_timeout >= 0)) {
    PyErr_SetString(PyExc_ValueError, "task_timeout must be 0 (none) or more");
    return -1;
  }
  if (self->pool != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "Pool is already initialized");
    return -1;
  }
  if (processes < 1) {
    PyErr_SetString(PyExc_ValueError, "processes must be at least 1");
    return -1;
  }
  if (ffpy_worker_context_load(&self->context, hooks, initializer,
                               initargs) < 0)
    return -1;

  ff_pool_options_t options;
  ff_pool_options_init(&options);
  options.workers = (unsigned)processes;
  options.max_tasks_per_worker = max_tasks;
  options.task_timeout = task_timeout;
  options.task_retries = retries;
  options.max_memory_per_worker = (size_t)max_memory;
  options.max_message_size = (size_t)max_message;
  options.start_on_demand = on_demand;
  options.capture_output = capture_output;
  options.on_complete = pool_on_complete;
  /* The segments every worker may open (the initializer's, for a fork
   * server's workers, which did not inherit them). */
  Py_ssize_t count = lendable ? PyList_GET_SIZE(lendable) : 0;
  uint64_t *ids = count ? PyMem_Malloc((size_t)count * sizeof(*ids)) : NULL;
  if (count && ids == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < count; i++) {
    ids[i] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(lendable, i));
    if (ids[i] == (uint64_t)-1 && PyErr_Occurred()) {
      PyMem_Free(ids);
      return -1;
    }
  }
  options.lendable = ids;
  options.lendable_count = (size_t)count;
  /* The descriptors are the pool's now: zygote() must not close them. */
  options.zygote = adopted;
  ffpy_worker_options(&options, &self->context);
  int rc = ffpy_pool_create_released(&self->pool, &options);
  PyMem_Free(ids);
  if (rc < 0) {
    self->pool = NULL;
    ffpy_raise(rc);
    return -1;
  }
  return 0;
}

static void pool_dealloc(ffpy_pool_t *self) {
  if (self->pool) {
    ff_pool_t *pool = self->pool;
    self->pool = NULL;
    /* A finalizer may run anywhere, for instance in a thread that holds a
     * lock a completion callback is waiting for: it must not wait for the
     * loop. The loop terminates and reaps the pool. */
    ff_pool_abandon(pool);
  }
  ffpy_worker_context_clear(&self->context);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pool_check(ffpy_pool_t *self) {
  if (self->pool == NULL) {
    PyErr_SetString(PyExc_ValueError, "the pool is not initialized");
    return -1;
  }
  return 0;
}

/* The runtime's queue and context behind submit()'s arguments (None for
 * neither): 0, or -1 with TypeError. */
static int submit_targets(PyObject *queue, PyObject *context, ff_queue_t **q,
                          ff_context_t **ctx) {
  if (queue != Py_None && !PyObject_TypeCheck(queue, &ffpy_queue_type)) {
    PyErr_SetString(PyExc_TypeError, "queue must be a CompletionQueue");
    return -1;
  }
  if (context != Py_None && !PyObject_TypeCheck(context, &ffpy_context_type)) {
    PyErr_SetString(PyExc_TypeError, "context must be a Context or None");
    return -1;
  }
  *q = queue == Py_None ? NULL : ((ffpy_queue_t *)queue)->queue;
  *ctx = context == Py_None ? NULL : ((ffpy_context_t *)context)->context;
  return 0;
}

/* A Task object before its runtime task exists. */
static ffpy_task_t *task_object_new(void) {
  ffpy_task_t *obj = PyObject_New(ffpy_task_t, &ffpy_task_type);
  if (obj != NULL) {
    obj->task = NULL;
    obj->notify = NULL;
    obj->consumed = 0;
  }
  return obj;
}

static PyObject *pool_submit(ffpy_pool_t *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"payload", "notify",  "queue", "context",
                          "timeout", "retries", "claimable", NULL};
  Py_buffer payload;
  PyObject *notify = Py_None;
  PyObject *queue = Py_None;
  PyObject *context = Py_None;
  int claimable = 0;
  ff_submit_options_t options = FF_SUBMIT_OPTIONS_DEFAULT;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|OOOdip:submit", names,
                                   &payload, &notify, &queue, &context,
                                   &options.timeout, &options.retries,
                                   &claimable))
    return NULL;
  ff_queue_t *q;
  ff_context_t *ctx;
  if (submit_targets(queue, context, &q, &ctx) < 0) goto fail;
  if (pool_check(self) < 0) goto fail;
  if (notify != Py_None && !PyCallable_Check(notify)) {
    PyErr_SetString(PyExc_TypeError, "notify must be callable or None");
    goto fail;
  }
  ffpy_task_t *obj = task_object_new();
  if (obj == NULL) goto fail;
  unsigned flags = 0;
  if (notify != Py_None) {
    flags |= FF_SUBMIT_NOTIFY | (claimable ? FF_SUBMIT_CLAIMABLE : 0);
    obj->notify = Py_NewRef(notify);
    Py_INCREF(obj); /* held until the completion callback runs */
  }
  int rc = ff_pool_submit_with(self->pool, ctx, payload.buf,
                               (size_t)payload.len, flags, &options, q, obj,
                               &obj->task);
  PyBuffer_Release(&payload);
  if (rc < 0) {
    if (flags & FF_SUBMIT_NOTIFY) Py_DECREF(obj);
    Py_CLEAR(obj->notify);
    obj->task = NULL;
    Py_DECREF(obj);
    return ffpy_raise_for_pool(rc, self->pool);
  }
  return (PyObject *)obj;

fail:
  PyBuffer_Release(&payload);
  return NULL;
}

/* submit_many(payloads, queue, context, timeout=-1, retries=-1): submit()
 * for each payload of a list, in order, without a Python call per task. A
 * negative timeout or retries is the pool's. */
static PyObject *pool_submit_many(ffpy_pool_t *self, PyObject *args) {
  PyObject *payloads, *queue, *context;
  ff_submit_options_t options = FF_SUBMIT_OPTIONS_DEFAULT;
  if (!PyArg_ParseTuple(args, "O!OO|di:submit_many", &PyList_Type, &payloads,
                        &queue, &context, &options.timeout, &options.retries))
    return NULL;
  if (pool_check(self) < 0) return NULL;
  ff_queue_t *q;
  ff_context_t *ctx;
  if (submit_targets(queue, context, &q, &ctx) < 0) return NULL;
  Py_ssize_t n = PyList_GET_SIZE(payloads);
  PyObject *tasks = PyList_New(n);
  if (tasks == NULL) return NULL;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *payload = PyList_GET_ITEM(payloads, i);
    if (!PyBytes_Check(payload)) {
      PyErr_SetString(PyExc_TypeError, "payloads must be bytes");
      goto fail;
    }
    ffpy_task_t *obj = task_object_new();
    if (obj == NULL) goto fail;
    const char *data = PyBytes_AS_STRING(payload);
    size_t length = (size_t)PyBytes_GET_SIZE(payload);
    int rc = ff_pool_submit_with(self->pool, ctx, data, length, 0, &options,
                                 q, obj, &obj->task);
    if (rc < 0) {
      obj->task = NULL;
      Py_DECREF(obj);
      ffpy_raise_for_pool(rc, self->pool);
      goto fail;
    }
    PyList_SET_ITEM(tasks, i, (PyObject *)obj);
  }
  return tasks;

fail:
  /* The tasks already submitted run; the caller learns of the failure. */
  Py_DECREF(tasks);
  return NULL;
}

static PyObject *pool_call_released(ffpy_pool_t *self,
                                    int (*fn)(ff_pool_t *pool)) {
  if (pool_check(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = fn(self->pool);
  Py_END_ALLOW_THREADS
  if (rc < 0) return ffpy_raise_for_pool(rc, self->pool);
  Py_RETURN_NONE;
}

static PyObject *pool_close(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  return pool_call_released(self, ff_pool_close);
}

static PyObject *pool_set_idle_limit(ffpy_pool_t *self, PyObject *args,
                                     PyObject *kw) {
  static char *names[] = {"seconds", "close", NULL};
  double seconds;
  int close = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "d|p:set_idle_limit", names,
                                   &seconds, &close))
    return NULL;
  if (pool_check(self) < 0) return NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = ff_pool_set_idle_limit(self->pool, seconds,
                              close ? FF_IDLE_CLOSE : FF_IDLE_STOP_WORKERS);
  Py_END_ALLOW_THREADS
  if (rc == FF_ECLOSED) Py_RETURN_FALSE;
  if (rc < 0) return ffpy_raise_for_pool(rc, self->pool);
  Py_RETURN_TRUE;
}

static PyObject *pool_terminate(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  return pool_call_released(self, ff_pool_terminate);
}

static int pool_join_fn(void *arg, double timeout) {
  return ff_pool_join(arg, timeout);
}

static PyObject *pool_join(ffpy_pool_t *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"timeout", NULL};
  PyObject *timeout_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:join", names, &timeout_obj))
    return NULL;
  if (pool_check(self) < 0) return NULL;
  double timeout = ffpy_parse_timeout(timeout_obj);
  if (timeout == -2.0) return NULL;
  int rc = ffpy_wait_interruptibly(pool_join_fn, self->pool, timeout);
  if (rc < 0) return NULL;
  return PyBool_FromLong(rc);
}

static PyObject *pool_worker_pids(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  if (pool_check(self) < 0) return NULL;
  /* Every worker's pid, however many: asked again with room for as many as
   * the pool said it has, should more have started than there was room
   * for (the runtime's growable buffer holds them). */
  ff_buf_t buf = {NULL, 0, 0};
  size_t capacity = 64, count;
  for (;;) {
    if (ff_buf_reserve(&buf, capacity * sizeof(pid_t)) == NULL) {
      free(buf.base);
      return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    count = ff_pool_worker_pids(self->pool, (pid_t *)buf.base, capacity);
    Py_END_ALLOW_THREADS
    if (count <= capacity) break;
    capacity = count;
  }
  const pid_t *pids = (const pid_t *)buf.base;
  PyObject *list = PyList_New((Py_ssize_t)count);
  for (size_t i = 0; list != NULL && i < count; i++) {
    PyObject *pid = PyLong_FromLong((long)pids[i]);
    if (pid == NULL) {
      Py_CLEAR(list);
      break;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, pid);
  }
  free(buf.base);
  return list;
}

/* worker_count() -> int: the workers started and not seen exit, those
 * whose pid is not known yet included. */
static PyObject *pool_worker_count(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  if (pool_check(self) < 0) return NULL;
  size_t count;
  Py_BEGIN_ALLOW_THREADS
  count = ff_pool_worker_count(self->pool);
  Py_END_ALLOW_THREADS
  return PyLong_FromSize_t(count);
}

/* stop_workers(signum): closes the pool and signals every worker. */
static PyObject *pool_stop_workers(ffpy_pool_t *self, PyObject *arg) {
  if (pool_check(self) < 0) return NULL;
  long signum = PyLong_AsLong(arg);
  if (signum == -1 && PyErr_Occurred()) return NULL;
  if (signum <= 0 || signum > INT_MAX) {
    PyErr_SetString(PyExc_ValueError, "signum must be a signal number");
    return NULL;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = ff_pool_stop_workers(self->pool, (int)signum);
  Py_END_ALLOW_THREADS
  if (rc < 0) return ffpy_raise_for_pool(rc, self->pool);
  Py_RETURN_NONE;
}

/* worker_pidfd(pid) -> int: a new pidfd of the live worker pid (the
 * caller's to close), or None when pid is not one. */
static PyObject *pool_worker_pidfd(ffpy_pool_t *self, PyObject *arg) {
  if (pool_check(self) < 0) return NULL;
  long pid = PyLong_AsLong(arg);
  if (pid == -1 && PyErr_Occurred()) return NULL;
  if (pid <= 0 || pid > INT_MAX) {
    PyErr_SetString(PyExc_ValueError, "pid must be a positive process id");
    return NULL;
  }
  int fd;
  Py_BEGIN_ALLOW_THREADS
  fd = ff_pool_worker_pidfd(self->pool, (pid_t)pid);
  Py_END_ALLOW_THREADS
  if (fd == -ENOENT) Py_RETURN_NONE;
  if (fd < 0) return ffpy_raise(fd);
  return PyLong_FromLong(fd);
}

/* worker_exit(pid) -> (exit_code, signal) of a worker of this pool that
 * exited recently, else None. */
static PyObject *pool_worker_exit(ffpy_pool_t *self, PyObject *arg) {
  if (pool_check(self) < 0) return NULL;
  long pid = PyLong_AsLong(arg);
  if (pid == -1 && PyErr_Occurred()) return NULL;
  if (pid <= 0 || pid > INT_MAX) {
    PyErr_SetString(PyExc_ValueError, "pid must be a positive process id");
    return NULL;
  }
  ff_exit_t how;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = ff_pool_worker_exit(self->pool, (pid_t)pid, &how);
  Py_END_ALLOW_THREADS
  if (rc == -ENOENT) Py_RETURN_NONE;
  if (rc < 0) return ffpy_raise(rc);
  return Py_BuildValue("(ii)", how.exit_code, how.term_signal);
}

/* Context(bytes): a map's function, sent to each worker once. */
static PyObject *pool_context(ffpy_pool_t *self, PyObject *arg) {
  if (pool_check(self) < 0) return NULL;
  Py_buffer data;
  if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
  ffpy_context_t *obj = PyObject_New(ffpy_context_t, &ffpy_context_type);
  if (obj == NULL) {
    PyBuffer_Release(&data);
    return NULL;
  }
  int rc = ff_context_create(self->pool, data.buf, (size_t)data.len,
                             &obj->context);
  PyBuffer_Release(&data);
  if (rc < 0) {
    obj->context = NULL;
    Py_DECREF(obj);
    return ffpy_raise_for_pool(rc, self->pool);
  }
  return (PyObject *)obj;
}

static void context_dealloc(ffpy_context_t *self) {
  ff_context_release(self->context);
  PyObject_Free(self);
}

PyTypeObject ffpy_context_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "forkfarm._core.Context",
    .tp_basicsize = sizeof(ffpy_context_t),
    .tp_dealloc = (destructor)context_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes shared by many tasks (a map's function), sent to each "
              "worker once: made by Pool.context().",
};

/* (code, detail, (pid, exit_code, signal)) once the pool has failed, else
 * None. */
static PyObject *pool_error(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  if (pool_check(self) < 0) return NULL;
  return ffpy_pool_failure(self->pool);
}

/* take_output() -> (stdout, stderr, records) bytes the workers wrote that
 * no task owns, taken once; None when there are none. */
static PyObject *pool_take_output(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  if (pool_check(self) < 0) return NULL;
  ff_buf_t streams[FF_OUTPUT_STREAMS] = {{NULL, 0, 0}};
  PyObject *result = NULL;
  size_t total = 0;
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) {
    if (ff_pool_take_output(self->pool, i, &streams[i]) < 0) {
      PyErr_NoMemory();
      goto done;
    }
    total += streams[i].len;
  }
  if (total == 0) {
    result = Py_NewRef(Py_None);
    goto done;
  }
  result = Py_BuildValue("(y#y#y#)", streams[0].base ? streams[0].base : "",
                         (Py_ssize_t)streams[0].len,
                         streams[1].base ? streams[1].base : "",
                         (Py_ssize_t)streams[1].len,
                         streams[2].base ? streams[2].base : "",
                         (Py_ssize_t)streams[2].len);
done:
  for (unsigned i = 0; i < FF_OUTPUT_STREAMS; i++) free(streams[i].base);
  return result;
}

/* stats() -> (queued, in_flight, done, failed, [(pid, restarts, tasks_done,
 * busy_ns, idle_ns, bytes_sent, bytes_received, current_task, current_ns),
 * ...]) */
static PyObject *pool_stats(ffpy_pool_t *self, PyObject *unused) {
  (void)unused;
  if (pool_check(self) < 0) return NULL;
  ff_worker_stats_t workers[256];
  ff_pool_stats_t stats;
  size_t count = ff_pool_stats(self->pool, &stats, workers, 256);
  if (count > 256) count = 256;
  PyObject *list = PyList_New((Py_ssize_t)count);
  if (list == NULL) return NULL;
  for (size_t i = 0; i < count; i++) {
    ff_worker_stats_t *w = &workers[i];
    PyObject *item = Py_BuildValue(
        "(iIKKKKKKK)", (int)w->pid, w->restarts,
        (unsigned long long)w->tasks_done, (unsigned long long)w->busy_ns,
        (unsigned long long)w->idle_ns, (unsigned long long)w->bytes_sent,
        (unsigned long long)w->bytes_received,
        (unsigned long long)w->current_task, (unsigned long long)w->current_ns);
    if (item == NULL) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, item);
  }
  return Py_BuildValue("(KKKKN)", (unsigned long long)stats.queued,
                       (unsigned long long)stats.in_flight,
                       (unsigned long long)stats.done,
                       (unsigned long long)stats.failed, list);
}

static PyMethodDef pool_methods[] = {
    {"take_output", (PyCFunction)pool_take_output, METH_NOARGS,
     "take_output() -> (stdout, stderr, records) | None: what the workers "
     "wrote that no task owns, taken once."},
    {"stats", (PyCFunction)pool_stats, METH_NOARGS,
     "stats() -> (queued, in_flight, done, failed, [worker tuples])"},
    {"submit", (PyCFunction)(void (*)(void))pool_submit,
     METH_VARARGS | METH_KEYWORDS,
     "submit(payload, notify=None, queue=None, context=None, timeout=-1, "
     "retries=-1, claimable=False) -> Task\n\nA negative timeout or "
     "retries is the pool's. notify runs on the runtime's callback thread, "
     "in completion order; with claimable, a thread that waits for the task "
     "runs it itself if it gets there first."},
    {"submit_many", (PyCFunction)pool_submit_many, METH_VARARGS,
     "submit_many(payloads, queue, context, timeout=-1, retries=-1) -> "
     "list[Task]"},
    {"context", (PyCFunction)pool_context, METH_O,
     "context(data) -> Context: bytes that travel to each worker once, for "
     "the tasks submitted with it."},
    {"close", (PyCFunction)pool_close, METH_NOARGS,
     "Stops accepting tasks; queued ones still run."},
    {"set_idle_limit", (PyCFunction)(void (*)(void))pool_set_idle_limit,
     METH_VARARGS | METH_KEYWORDS,
     "set_idle_limit(seconds, close=True) -> bool\n\nOnce the pool has been "
     "idle for seconds, closes it (or, with close=False, stops its idle "
     "workers, which start again on demand); a negative seconds disarms. "
     "False when the pool no longer accepts tasks."},
    {"terminate", (PyCFunction)pool_terminate, METH_NOARGS,
     "Fails every unfinished task and kills the workers."},
    {"join", (PyCFunction)(void (*)(void))pool_join,
     METH_VARARGS | METH_KEYWORDS,
     "join(timeout=None) -> bool\n\nWaits for the workers and the zygote to "
     "exit after close() or terminate(). False on timeout."},
    {"worker_pids", (PyCFunction)pool_worker_pids, METH_NOARGS,
     "The pids of the live workers."},
    {"worker_count", (PyCFunction)pool_worker_count, METH_NOARGS,
     "worker_count() -> int: the workers started and not seen exit, those "
     "whose pid is not known yet included."},
    {"stop_workers", (PyCFunction)pool_stop_workers, METH_O,
     "stop_workers(signum): closes the pool and sends every worker signum; "
     "their running tasks fail as lost, the others are cancelled."},
    {"worker_pidfd", (PyCFunction)pool_worker_pidfd, METH_O,
     "worker_pidfd(pid) -> int: a new pidfd of the live worker pid, the "
     "caller's to close; None when pid is not one."},
    {"worker_exit", (PyCFunction)pool_worker_exit, METH_O,
     "worker_exit(pid) -> (exit_code, signal) of a worker that exited "
     "recently (exit_code -1 when a signal ended it), else None."},
    {"error", (PyCFunction)pool_error, METH_NOARGS,
     "(code, detail) once the pool has failed, else None."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ffpy_pool_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "forkfarm._core.Pool",
    .tp_basicsize = sizeof(ffpy_pool_t),
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A runtime pool of worker processes that run Python.",
    .tp_methods = pool_methods,
    .tp_init = (initproc)pool_init,
    .tp_new = PyType_GenericNew,
};
