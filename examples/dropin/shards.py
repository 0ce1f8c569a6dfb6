"""A process per shard, driven through Pipes: a multiprocessing program
that runs unchanged on forkfarm. Replace the import below with
``import forkfarm as multiprocessing`` and run it again: same output.

The main process splits a text into shards, starts one process per shard
with its end of a Pipe, and sends it commands: count the words of the
shard, then find the lines that contain a word. Each shard answers on its
pipe; the main process merges the answers, waiting on all pipes at once
with ``multiprocessing.connection.wait``.
"""

import multiprocessing
from collections import Counter
from typing import Any

TEXT = """the quick brown fox jumps over the lazy dog
a stitch in time saves nine
the early bird catches the worm
all that glitters is not gold
actions speak louder than words
the pen is mightier than the sword
when in rome do as the romans do
the squeaky wheel gets the grease
no man is an island
fortune favours the bold""".splitlines()


def shard_worker(conn: Any, lines: list[str], parent_end: Any) -> None:
    parent_end.close()  # inherited: only the main process keeps it open
    while True:
        try:
            command, argument = conn.recv()
        except EOFError:
            return
        if command == "count":
            conn.send(Counter(word for line in lines for word in line.split()))
        elif command == "grep":
            conn.send([line for line in lines if argument in line.split()])
        elif command == "stop":
            conn.send("stopped")
            return


def ask_all(connections: list[Any], command: str, argument: str | None = None) -> list[Any]:
    for conn in connections:
        conn.send((command, argument))
    answers: dict[int, Any] = {}
    pending = list(connections)
    while pending:
        ready: list[Any] = multiprocessing.connection.wait(pending, timeout=30)
        for conn in ready:
            answers[connections.index(conn)] = conn.recv()
            pending.remove(conn)
    return [answers[i] for i in range(len(connections))]


def main() -> None:
    shards = [TEXT[i::3] for i in range(3)]
    connections: list[Any] = []
    processes: list[Any] = []
    for lines in shards:
        mine, theirs = multiprocessing.Pipe()
        process = multiprocessing.Process(target=shard_worker, args=(theirs, lines, mine))
        process.start()
        theirs.close()
        connections.append(mine)
        processes.append(process)
    counts: Counter[str] = sum(ask_all(connections, "count"), Counter())
    print("most common:", counts.most_common(3))
    print("lines with 'is':", sorted(line for found in ask_all(connections, "grep", "is") for line in found))
    print("replies:", ask_all(connections, "stop"))
    for process in processes:
        process.join()
    print("exit codes:", [p.exitcode for p in processes])


if __name__ == "__main__":
    main()
