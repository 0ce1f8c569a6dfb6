"""``multiprocessing.shared_memory``, as it is: ``SharedMemory`` and
``ShareableList`` are named POSIX shared memory (under /dev/shm), which
processes find by name, and the standard library's implementation is the
honest one for that API. For memory that never has a name and cannot leak,
use forkfarm's shared arrays (:func:`forkfarm.zeros` and friends) or
``RawArray``."""

import multiprocessing.shared_memory as _standard
from multiprocessing.shared_memory import ShareableList, SharedMemory

__all__ = ["ShareableList", "SharedMemory"]

# The module's private names too (_USE_POSIX, _SHM_NAME_PREFIX,
# _make_filename, ...), which programs and CPython's own tests read.
globals().update(
    {name: value for name, value in vars(_standard).items() if not name.startswith("__")}
)
