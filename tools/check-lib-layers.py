#!/usr/bin/env python3
"""Keeps lib/ layered: no dependency cycle between its files, and no source
file of lib/ or pymodule/ (its C files and headers) longer than MAX_LINES.

The file-level dependency graph comes from the object files of the static
library: lib/a.c depends on lib/b.c when a.o has an undefined symbol that
b.o defines (a function it calls, or data it reads). Static functions and
the inline helpers of lib/internal.h make no edges, which is as it should
be: they are each file's own. Any cycle in that graph (a.c uses b.c, and
b.c, directly or through others, uses a.c) fails the check, named.

Usage:
  check-lib-layers.py --archive build/c/libforkfarm.a --source-root .
  check-lib-layers.py --objects lib_a.c.o lib_b.c.o ... --source-root .
  check-lib-layers.py --graph ...   (prints the layers, lowest first)

Python 3 standard library only; needs nm (binutils) for the objects.
"""
import argparse
import os
import re
import subprocess
import sys

MAX_LINES = 800

# Files allowed past MAX_LINES, each with the reason (the same list as
# tests/python/test_structure.py's). Keep this short: a file that grows
# past the limit is split, not added here; one that no longer needs its
# place fails the check until it is taken off.
LONG_FILES = {}

# The C sources whose length is checked (relative to the source root).
LENGTH_GLOBS = [("lib", (".c", ".h")), ("pymodule", (".c", ".h"))]


def run_nm(args, path):
    nm = os.environ.get("NM", "nm")
    try:
        return subprocess.run(
            [nm] + args + [path],
            check=True,
            stdout=subprocess.PIPE,
            universal_newlines=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit("check-lib-layers: %s could not read %s: %s" % (nm, path, e))


def parse_nm(text, default_member):
    """{member: (defined, undefined)} from `nm -g` output; an archive lists
    its members as "name:" lines."""
    members = {}
    current = default_member
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.endswith(":") and " " not in line:
            current = line[:-1]
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            kind, name = "U", parts[1]
        elif len(parts) == 3:
            kind, name = parts[1], parts[2]
        else:
            continue
        defined, undefined = members.setdefault(current, (set(), set()))
        if kind in "Uwv":
            # A weak undefined reference counts as a use too.
            if kind == "U" or kind == "w":
                undefined.add(name)
        else:
            defined.add(name)
    return members


def source_name(member):
    """lib_pool.c.o -> lib/pool.c (meson's object names)."""
    base = os.path.basename(member)
    if base.endswith(".o"):
        base = base[:-2]
    m = re.match(r"^lib_(.+\.c)$", base)
    if m:
        return "lib/" + m.group(1)
    return base


def build_graph(members):
    owner = {}
    for member, (defined, _) in members.items():
        for sym in defined:
            owner.setdefault(sym, source_name(member))
    graph = {source_name(m): {} for m in members}
    for member, (_, undefined) in members.items():
        src = source_name(member)
        for sym in undefined:
            dst = owner.get(sym)
            if dst is not None and dst != src:
                graph[src].setdefault(dst, []).append(sym)
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm, iterative: the components with more than one
    file (a file that calls itself is no cycle between files)."""
    index = {}
    low = {}
    on_stack = set()
    stack = []
    components = []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def cycle_in(graph, component, start):
    """The shortest cycle through start inside the component, as a list of
    files (start again at the end), to name it."""
    members = set(component)
    # Breadth-first from start's successors back to start.
    previous = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    path.reverse()
                    return path + [start]
                if child not in seen:
                    seen.add(child)
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    return component + [start]


def layers(graph):
    """Files by depth: 0 uses no other file, n uses only files below n."""
    depth = {}

    def visit(node, trail):
        if node in depth:
            return depth[node]
        if node in trail:
            return 0
        trail.add(node)
        d = 0
        for child in graph[node]:
            d = max(d, visit(child, trail) + 1)
        trail.discard(node)
        depth[node] = d
        return d

    for node in graph:
        visit(node, set())
    return depth


def check_lengths(root):
    failures = []
    for folder, suffixes in LENGTH_GLOBS:
        directory = os.path.join(root, folder)
        if not os.path.isdir(directory):
            failures.append("%s: no such folder under %s" % (folder, root))
            continue
        for name in sorted(os.listdir(directory)):
            if not name.endswith(suffixes):
                continue
            rel = folder + "/" + name
            with open(os.path.join(directory, name), "rb") as f:
                count = sum(1 for _ in f)
            if count > MAX_LINES and rel not in LONG_FILES:
                failures.append(
                    "%s has %d lines, more than %d: split it (or name it in "
                    "LONG_FILES of %s with the reason)"
                    % (rel, count, MAX_LINES, os.path.basename(__file__))
                )
    for rel in sorted(LONG_FILES):
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            failures.append("%s is named in LONG_FILES but does not exist" % rel)
            continue
        with open(path, "rb") as f:
            count = sum(1 for _ in f)
        if count <= MAX_LINES:
            failures.append("%s has %d lines now: take it off LONG_FILES"
                            % (rel, count))
    return failures


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", help="the static library (libforkfarm.a)")
    parser.add_argument("--objects", nargs="*", default=[], help="object files")
    parser.add_argument("--source-root", help="checks the files' lengths too")
    parser.add_argument("--graph", action="store_true", help="print the layers")
    args = parser.parse_args(argv)

    failures = []
    members = {}
    if args.archive:
        members.update(parse_nm(run_nm(["-g"], args.archive), args.archive))
    for path in args.objects:
        members.update(parse_nm(run_nm(["-g"], path), path))
    if not members and not args.source_root:
        parser.error("nothing to check: give --archive, --objects or --source-root")

    if members:
        lib_members = {m: v for m, v in members.items()
                       if source_name(m).startswith("lib/")}
        if len(lib_members) < 2:
            failures.append("found %d lib/ objects in %s: is it the runtime's "
                            "library?" % (len(lib_members), args.archive))
        graph = build_graph(lib_members)
        for component in strongly_connected(graph):
            # Every file of the component is on a cycle: name one through
            # each file not named yet, with the symbols of each step.
            lines = []
            named = set()
            for start in component:
                if start in named:
                    continue
                cycle = cycle_in(graph, component, start)
                named.update(cycle)
                lines.append("  cycle: " + " -> ".join(cycle))
                for a, b in zip(cycle, cycle[1:]):
                    syms = sorted(graph[a][b])
                    more = " and %d more" % (len(syms) - 2) if len(syms) > 2 else ""
                    lines.append("    %s calls %s (%s%s)"
                                 % (a, b, ", ".join(syms[:2]), more))
            failures.append(
                "dependency cycle among %d files of lib/ (%s):\n%s"
                % (len(component), ", ".join(component), "\n".join(lines))
            )
        if args.graph:
            depth = layers(graph)
            for d in sorted(set(depth.values())):
                names = sorted(n for n in depth if depth[n] == d)
                print("layer %d: %s" % (d, " ".join(names)))
            for node in sorted(graph):
                print("%s -> %s" % (node, " ".join(sorted(graph[node])) or "-"))

    if args.source_root:
        failures.extend(check_lengths(args.source_root))

    for failure in failures:
        print("check-lib-layers: " + failure, file=sys.stderr)
    if not failures:
        print("check-lib-layers: %d lib/ files, no cycle; no file over %d lines"
              % (len([m for m in members if source_name(m).startswith("lib/")]),
                 MAX_LINES))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
