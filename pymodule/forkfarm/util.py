"""``multiprocessing.util``, as it is: forkfarm's ``Process`` is
multiprocessing's ``BaseProcess``, whose children run this module's
after-fork hooks and finalizers, and forkfarm logs to its logger, so the
two modules must share one state. Every name of ``multiprocessing.util`` is here,
private ones too (read from it at each access); ``_cleanup_tests`` also
stops forkfarm's fork server."""

from __future__ import annotations

import multiprocessing.util as _stdlib
from multiprocessing.util import (
    SUBDEBUG,
    SUBWARNING,
    Finalize,
    ForkAwareLocal,
    ForkAwareThreadLock,
    close_all_fds_except,
    debug,
    get_logger,
    get_temp_dir,
    info,
    is_exiting,
    log_to_stderr,
    register_after_fork,
    sub_debug,
    sub_warning,
)
from typing import Any

from . import _forkserver, _reexport

__all__ = [
    "Finalize",
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "SUBDEBUG",
    "SUBWARNING",
    "close_all_fds_except",
    "debug",
    "get_logger",
    "get_temp_dir",
    "info",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
]

def _cleanup_tests() -> None:
    """What ``multiprocessing.util._cleanup_tests`` does when a test suite
    ends (children reaped, multiprocessing's fork server and resource
    tracker stopped, finalizers run), and forkfarm's fork server stopped."""
    _forkserver._server.stop()
    _stdlib._cleanup_tests()  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    return _reexport.attribute(__name__, _stdlib, name)


def __dir__() -> list[str]:
    return _reexport.names(globals(), _stdlib)
