"""A joblib backend on forkfarm: ``import forkfarm.joblib`` registers it,
then

    with joblib.parallel_config(backend="forkfarm"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(f)(x) for x in xs)

runs ``joblib.Parallel``, and so scikit-learn's ``n_jobs``, on a
``forkfarm.Pool``. It is joblib's multiprocessing backend with forkfarm's
pool in place of multiprocessing's: joblib batches the calls, forkfarm
runs them. Large NumPy arguments need no memmapping here: they travel out
of band through forkfarm's shared arena, and shared arrays as handles.
"""

from __future__ import annotations

import gc
from typing import Any

from joblib import register_parallel_backend
from joblib._parallel_backends import FallbackToBackend, MultiprocessingBackend, SequentialBackend

from .pool import Pool

__all__ = ["ForkfarmBackend"]


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
        gc.collect()  # as joblib does: less to copy into the workers
        self._pool = Pool(n_jobs, **options)
        self.parallel = parallel
        return n_jobs


register_parallel_backend("forkfarm", ForkfarmBackend)
