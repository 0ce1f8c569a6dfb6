"""A joblib backend on forkfarm: ``import forkfarm.joblib`` registers it,
then

    with joblib.parallel_config(backend="forkfarm"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(f)(x) for x in xs)

runs ``joblib.Parallel``, and so scikit-learn's ``n_jobs``, on forkfarm's
:class:`~forkfarm.Executor`, as joblib's default backend runs on loky's
executor: joblib batches the calls and forkfarm runs the batches.

- Every ``return_as`` (``"list"``, ``"generator"``,
  ``"generator_unordered"``), result callbacks, ``timeout=``,
  ``batch_size="auto"``, ``pre_dispatch`` and ``verbose=`` behave as with
  loky. An error in one task aborts the call: its other tasks are
  cancelled, its workers killed (the next call gets fresh ones), and the
  error arrives with the worker's traceback.
- Workers live from one call to the next: the backend runs on
  :func:`forkfarm.get_reusable_executor`, whose workers come from the fork
  server and exit after ``idle_worker_timeout`` seconds idle (300, as
  loky's under joblib). A call with another configuration (``n_jobs``,
  ``inner_max_num_threads``) gets fresh workers. A program that set the
  ``"fork"`` start method gets a fork executor per call instead, whose
  workers see the program as it is then.
- joblib's memmapping contract holds (``_joblib_memmap.py``): an array
  above ``max_nbytes`` reaches the workers as an ``np.memmap`` opened with
  ``mmap_mode``, dumped once per call into ``temp_folder``, removed at the
  call's end; ``max_nbytes=None`` turns it off, and arrays travel as
  forkfarm sends them.
- ``inner_max_num_threads`` caps BLAS and OpenMP threads in each worker
  (forkfarm's ``inner_threads``); by default each worker gets its share of
  the cores, as joblib's default does.
- In a worker, ``Parallel`` with this backend runs sequentially, with
  joblib's warning, as joblib's process backends do: the workers are
  daemonic, as multiprocessing's are.
"""

from __future__ import annotations

import multiprocessing
import warnings
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from . import _backend, _engine, _node, _start
from ._joblib_memmap import Memmapping, for_the_caller
from ._reusable import get_reusable_executor
from .executor import Executor

__all__ = ["IDLE_WORKER_TIMEOUT", "ForkfarmBackend", "run_batch"]

# How long a call's workers wait idle for the next call, in seconds:
# joblib's idle timeout for loky's workers.
IDLE_WORKER_TIMEOUT = 300.0

# What Parallel passes for its memmapping, and its defaults.
_MEMMAP_DEFAULTS: dict[str, Any] = {
    "max_nbytes": 1e6,
    "mmap_mode": "r",
    "temp_folder": None,
    "verbose": 0,
    "prewarm": False,
}


class ForkfarmBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's process backend on a :class:`forkfarm.Executor`."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._executor: Executor | None = None
        self._own_executor = False
        self._memmapping: Memmapping | None = None
        self._options: dict[str, Any] = {}

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of workers a call gets: 1 inside a worker process
        or below a thread of a parallel call, as joblib's process backends
        decide, with their warning."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if multiprocessing.current_process().daemon:
            if n_jobs != 1:
                warnings.warn(
                    "forkfarm-backed parallel loops cannot be called in a worker process, "
                    "setting n_jobs=1",
                    stacklevel=3,
                )
            return 1
        if not (self.in_main_thread() or self.nesting_level == 0):
            if n_jobs != 1:
                warnings.warn(
                    "forkfarm-backed parallel loops cannot be nested below threads, setting n_jobs=1",
                    stacklevel=3,
                )
            return 1
        if n_jobs < 0:
            n_jobs = max(_node.available_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: Any = None,
        require: Any = None,
        idle_worker_timeout: float | None = None,
        **kwargs: Any,
    ) -> int:
        """Makes (or takes again) the executor of a call and its memmapping;
        returns the number of workers."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = {**self.backend_kwargs, **kwargs}
        if "timeout" in options:
            raise ValueError(
                "the forkfarm joblib backend takes no 'timeout': Parallel(timeout=) bounds a "
                "task, and idle_worker_timeout how long idle workers stay"
            )
        if idle_worker_timeout is None:
            idle_worker_timeout = self.backend_kwargs.get("idle_worker_timeout", IDLE_WORKER_TIMEOUT)
        # The context joblib passes is multiprocessing's default, no choice
        # of the program's: forkfarm's own start method decides.
        options.pop("context", None)
        options.pop("context_id", None)
        memmap = {key: options.pop(key, default) for key, default in _MEMMAP_DEFAULTS.items()}
        if options:
            raise TypeError(
                "the forkfarm joblib backend got unexpected options: " + ", ".join(sorted(options))
            )
        inner_threads: int | str | None = self.inner_max_num_threads
        if inner_threads is None:
            inner_threads = _engine.AUTO
        if _start.setting.method == "fork" or _backend.default is not None:
            # Fork workers must see the program as it is now, and MPI ranks
            # are not this machine's to keep: an executor per call.
            self._executor = Executor(n_jobs, inner_threads=inner_threads)
            self._own_executor = True
        else:
            self._executor = get_reusable_executor(
                n_jobs, timeout=idle_worker_timeout, inner_threads=inner_threads
            )
            self._own_executor = False
        self._memmapping = None
        if memmap["max_nbytes"] is not None and _numpy_loaded():
            context_id = parallel._id if parallel is not None else None
            self._memmapping = Memmapping(context_id, **memmap)
        self._options = {"idle_worker_timeout": idle_worker_timeout, **memmap}
        self.parallel = parallel
        return n_jobs

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Runs one batch of calls in a worker; callback(future) once it is
        done."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the forkfarm joblib backend is not configured")
        if self._memmapping is not None:
            func = self._memmapping.prepare(func)
        future = executor.submit(run_batch, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        """The batch's results, or its error (with the worker's traceback
        as its cause)."""
        return future.result()

    def terminate(self) -> None:
        """The end of a call: its memmapped files go; the reusable
        executor's workers stay for the next call."""
        self._release(kill=False)
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """An error, a timeout or a dropped generator: the call's workers
        are killed and its other tasks cancelled; with ensure_ready, fresh
        workers for what joblib still runs."""
        self._release(kill=True)
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self._options)

    def _release(self, kill: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None and (kill or self._own_executor):
            if kill:
                executor.kill_workers()
            # Killed workers' tasks fail at once: nothing to wait for.
            executor.shutdown(wait=True, cancel_futures=True)
        memmapping, self._memmapping = self._memmapping, None
        if memmapping is not None:
            memmapping.clean()


def run_batch(batch: Any) -> Any:
    """In a worker: runs one of joblib's batches. It lives here so that a
    worker imports this module, and ``Parallel(backend="forkfarm")``
    inside a task finds the backend registered."""
    return for_the_caller(batch())


def _numpy_loaded() -> bool:
    """Whether arrays may be among the arguments: only NumPy's are
    memmapped, and this process has them only if it imported NumPy."""
    import sys

    return "numpy" in sys.modules


register_parallel_backend("forkfarm", ForkfarmBackend)
