"""``multiprocessing.shared_memory``, as it is: ``SharedMemory`` and
``ShareableList`` are named POSIX shared memory (under /dev/shm), which
processes find by name, and the standard library's implementation is the
honest one for that API. For memory that never has a name and cannot leak,
use forkfarm's shared arrays (:func:`forkfarm.zeros` and friends) or
``RawArray``."""

from multiprocessing.shared_memory import ShareableList, SharedMemory

__all__ = ["ShareableList", "SharedMemory"]
