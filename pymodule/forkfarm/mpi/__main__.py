"""``mpiexec -n N python -m forkfarm.mpi script.py [args]``, or ``-m module
[args]``, or ``-c command [args]``: rank 0 runs the program, the other
ranks run the tasks of its pools, as ``python -m mpi4py.futures`` does. An
exception that escapes the program aborts the job (MPI_Abort), so that no
rank waits forever."""

from __future__ import annotations

import os
import runpy
import sys
import traceback
import types

USAGE = (
    "usage: mpiexec -n N python -m forkfarm.mpi [--hybrid [--workers W]] "
    "(script.py | -m module | -c command) [args]"
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else 2
    import forkfarm.mpi
    from forkfarm.mpi import server

    hybrid: int | None = None
    while argv and argv[0] in ("--hybrid", "--workers"):
        if argv[0] == "--hybrid":
            hybrid = hybrid or 0
            argv = argv[1:]
        elif len(argv) > 1 and argv[1].isdigit() and int(argv[1]) > 0:
            hybrid = int(argv[1])
            argv = argv[2:]
        else:
            print(f"--workers needs a positive number\n{USAGE}", file=sys.stderr)
            return 2
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    from mpi4py import MPI

    comm = forkfarm.mpi.world()
    # Every rank, before anything else: a collective call.
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    node_ranks = node.Get_size()
    node.Free()
    root = comm.Get_rank() == 0
    forkfarm.mpi.launch(node_ranks, hybrid, root)
    if not root:
        try:
            server.serve_until_exit(comm, node_ranks)
        except BaseException:  # noqa: BLE001 - rank 0 would wait for it forever
            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
        return 0
    try:
        if argv[0] == "-m" and len(argv) > 1:
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c" and len(argv) > 1:
            sys.argv = ["-c", *argv[2:]]
            module = types.ModuleType("__main__")
            sys.modules["__main__"] = module
            exec(compile(argv[1], "<string>", "exec"), vars(module))  # noqa: S102
        else:
            sys.argv = argv
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr, flush=True)
        if code:
            comm.Abort(code)
        forkfarm.mpi.shutdown()
        server.release_all(comm)
        return 0
    except BaseException:  # noqa: BLE001 - reported, then the whole job ends
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    forkfarm.mpi.shutdown()
    server.release_all(comm)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
