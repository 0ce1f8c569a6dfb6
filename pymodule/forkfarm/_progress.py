"""Progress bars for maps: ``progress=True`` shows a ``tqdm.auto`` bar (a
widget in Jupyter, text in a terminal); any object with ``update(n)`` (and
optionally ``close()``) can stand in for it. Bars count items, not chunks.
With ``progress=False``, the default, none of this runs."""

from __future__ import annotations

from typing import Any

# What `progress=` accepts: False/None, True, or a tqdm-compatible object.
Progress = Any


_quiet: dict[type, type] = {}


def _quiet_class(tqdm: type) -> type:
    """tqdm's class without its monitor thread, which would only nudge the
    refresh of a stalled bar: a bar must not leave a thread behind, since a
    process with threads makes its next pools take the fork server."""
    if not isinstance(tqdm, type):
        return tqdm
    quiet = _quiet.get(tqdm)
    if quiet is None:
        quiet = _quiet[tqdm] = type(tqdm.__name__, (tqdm,), {"monitor_interval": 0})
    return quiet


def make_bar(progress: Progress, total: int | None) -> Any:
    """The bar for a map of `total` items (None: unknown), or None."""
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress=True shows a tqdm bar: install tqdm (pip install tqdm)"
            ) from None
        return _quiet_class(tqdm)(total=total)
    if not callable(getattr(progress, "update", None)):
        raise TypeError(
            f"progress must be True, False or an object with update(n) (a tqdm bar), "
            f"not {type(progress).__name__}"
        )
    if total is not None and getattr(progress, "total", 0) is None:
        progress.total = total
    return progress


def finish(bar: Any, owned: bool) -> None:
    """Closes a bar this map made (a bar the caller gave stays theirs)."""
    if bar is not None and owned:
        close = getattr(bar, "close", None)
        if close is not None:
            close()
