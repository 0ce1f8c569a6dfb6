"""NumPy is a build requirement of the extension, not a run-time one: with
NumPy impossible to import, forkfarm imports, pools and queues run, and
asking for an array says NumPy is what is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

WITHOUT_NUMPY = textwrap.dedent(
    """
    import sys
    sys.modules["numpy"] = None  # import numpy now raises ImportError
    import forkfarm
    from forkfarm import _core

    with forkfarm.Pool(2) as pool:
        assert pool.map(abs, range(-50, 50)) == [abs(x) for x in range(-50, 50)]
        assert pool.apply(divmod, (7, 2)) == (3, 1)
    with forkfarm.Executor(2) as executor:
        assert executor.submit(pow, 2, 10).result() == 1024
    queue = forkfarm.Queue()
    queue.put(b"x" * 100_000)
    assert queue.get(timeout=10) == b"x" * 100_000
    queue.close()
    try:
        _core.array_on_segment(_core.Segment(64), 0, (8,), None, "f8", True, object)
    except ImportError as error:
        assert "NumPy" in str(error), error
    else:
        raise AssertionError("an array was made without NumPy")
    assert "numpy" not in {name.split(".")[0] for name in sys.modules if sys.modules[name] is not None}
    print("ok")
    """
)


def test_forkfarm_runs_without_numpy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMPY], capture_output=True, text=True, timeout=100, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_array_handle_is_checked_against_its_segment() -> None:
    np = pytest.importorskip("numpy")
    from forkfarm import _core
    from forkfarm.shared import SharedArray

    segment = _core.Segment(800)
    whole = _core.array_on_segment(segment, 0, (100,), None, np.float64, True, SharedArray)
    assert isinstance(whole, SharedArray) and whole.base is segment and whole.flags.writeable
    fortran = _core.array_on_segment(segment, 0, (10, 10), None, np.float64, False, SharedArray, True)
    assert fortran.flags.f_contiguous and not fortran.flags.writeable
    reversed_view = _core.array_on_segment(segment, 792, (100,), (-8,), np.float64, True, np.ndarray)
    assert reversed_view.__array_interface__["data"][0] == whole.__array_interface__["data"][0] + 792
    for offset, shape, strides in [(8, (100,), None), (-8, (1,), None), (0, (2,), (800,)), (0, (2,), (-8,))]:
        with pytest.raises(ValueError, match="does not lie within its segment"):
            _core.array_on_segment(segment, offset, shape, strides, np.float64, True, np.ndarray)
    with pytest.raises(TypeError, match="Python objects"):
        _core.array_on_segment(segment, 0, (2,), None, object, True, np.ndarray)
    with pytest.raises(TypeError, match="ndarray subclass"):
        _core.array_on_segment(segment, 0, (2,), None, np.float64, True, list)
    empty = _core.array_on_segment(segment, 10_000, (0, 3), None, np.float64, True, SharedArray)
    assert empty.shape == (0, 3)
