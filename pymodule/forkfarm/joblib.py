"""A joblib backend on forkfarm: ``import forkfarm.joblib`` registers it,
then

    with joblib.parallel_config(backend="forkfarm"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(f)(x) for x in xs)

runs ``joblib.Parallel``, and so scikit-learn's ``n_jobs``, on a
``forkfarm.Pool``. It is joblib's multiprocessing backend with forkfarm's
pool in place of multiprocessing's: joblib batches the calls, forkfarm
runs them. Large NumPy arguments need no memmapping here: they travel out
of band through forkfarm's shared arena, and shared arrays as handles.

Repeated ``Parallel`` calls keep their workers: each call's pool is made
with ``reuse``, so that when joblib closes it at the end of the call its
workers (with what they imported: scikit-learn, say) are parked, and the
next call's pool adopts them instead of starting its own. They wait
REUSE_SECONDS, joblib's own idle timeout for loky's workers (300 s): a
script that calls ``Parallel`` in a loop, with its own work in between,
keeps them warm, and they are gone within minutes of the last call. Such
pools take their workers from the fork server: a fork pool cannot be
reused, so a program that set the ``"fork"`` start method (or runs under
``python -m forkfarm.mpi``) gets a new pool per call, as before.
"""

from __future__ import annotations

import gc
import multiprocessing
from typing import Any

from joblib import parallel, register_parallel_backend
from joblib._parallel_backends import FallbackToBackend, MultiprocessingBackend, SequentialBackend

from . import _backend, _start
from .pool import Pool

__all__ = ["REUSE_SECONDS", "ForkfarmBackend"]

# How long a Parallel call's workers wait for the next call: joblib's idle
# timeout for loky's workers.
REUSE_SECONDS = 300.0


def _reusable(options: dict[str, Any]) -> bool:
    """Whether a pool made with these options may park its workers: not
    when it forks (the start method set, or the context given, is fork),
    nor when its workers are MPI ranks. joblib passes multiprocessing's
    default context unless ``JOBLIB_START_METHOD`` names one: that is no
    choice of the program's, and is dropped here (forkfarm chooses)."""
    if "reuse" in options or options.get("backend") not in (None, "local"):
        return False
    context = options.get("context")
    default = parallel.DEFAULT_MP_CONTEXT is None and context is multiprocessing.get_context()
    if context is not None and default:
        context = None
    if context is not None:
        return _start.for_pool(context) != "fork"
    if _start.setting.method == "fork":
        return False
    if _backend.default is not None and options.get("backend") != "local":
        return False
    options.pop("context", None)
    return True


class ForkfarmBackend(MultiprocessingBackend):  # type: ignore[misc]
    """joblib's multiprocessing backend, on a :class:`forkfarm.Pool`."""

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: Any = None,
        require: Any = None,
        **pool_kwargs: Any,
    ) -> int:
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = {**self.backend_kwargs, **pool_kwargs}
        # What joblib passes for its memmapping pool; forkfarm shares
        # arrays its own way.
        for key in ("max_nbytes", "mmap_mode", "temp_folder", "verbose", "context_id", "prewarm"):
            options.pop(key, None)
        if _reusable(options):
            # joblib closes and then terminates the pool at the end of the
            # call: the close parks the workers, the terminate then has
            # nothing left to kill (a call that failed still kills them).
            options["reuse"] = REUSE_SECONDS
        else:
            # As joblib does before a fork: less to copy into the workers.
            # Workers from the fork server copy nothing of this process,
            # and a collection (50 ms with scikit-learn imported) would
            # cost a reused pool more than the rest of its start.
            gc.collect()
        self._pool = Pool(n_jobs, **options)
        self.parallel = parallel
        return n_jobs


register_parallel_backend("forkfarm", ForkfarmBackend)
