"""Put on PYTHONPATH by run_concurrent_futures.py when the suite it runs is
Debian's copy (libpython3.X-testsuite) rather than the interpreter's own:
every interpreter the run starts (forkfarm's fork server, whose workers
import the suite's functions by name, and the suite's own child scripts)
then finds ``test.test_concurrent_futures`` where the runner found it."""

import os

_SUITE_DIR = os.environ.get("FORKFARM_CPYTHON_SUITE_DIR")
if _SUITE_DIR:
    try:
        import test
    except ImportError:
        pass
    else:
        if _SUITE_DIR not in test.__path__:
            test.__path__.append(_SUITE_DIR)
