"""docs/api.md documents every name of ``forkfarm.__all__``, and the
signatures it writes are the real ones.

An entry of docs/api.md is a list item whose first thing is a code span:
``name(params)``, or the bare ``name`` when ``inspect.signature`` finds none.
``Class.method(params)`` entries (indented under their class) document
methods, without ``self``. The parameters are written as Python would
write them, without annotations, so that ``ast`` parses them; their names,
kinds and defaults must be those of ``inspect.signature``."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import forkfarm

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"

# A list item (at any depth) that starts with a code span: the name, dotted
# for a method, and the parenthesized parameters if any.
ENTRY = re.compile(r"^\s*- `(?P<name>[A-Za-z_][\w.]*)(?:\((?P<params>[^`]*)\))?`")
# Further code spans on the first line of a method's item that document
# more methods of the same class at once (``Pool.close()``,
# ``Pool.join()``): only empty-parameter calls.
MORE = re.compile(r"`(?P<name>[A-Za-z_]\w*\.[A-Za-z_]\w*)\(\)`")


@dataclass
class Entry:
    name: str
    params: str | None  # None: the bare name
    line: int


def _entries() -> list[Entry]:
    entries = []
    for number, line in enumerate(API_MD.read_text().splitlines(), 1):
        match = ENTRY.match(line)
        if match is None:
            continue
        entries.append(Entry(match["name"], match["params"], number))
        if match["params"] == "" and "." in match["name"]:
            # `Pool.close()`, `Pool.terminate()`, `Pool.join()`: as multiprocessing's.
            head = match["name"].split(".")[0] + "."
            for more in MORE.finditer(line, match.end()):
                if more["name"].startswith(head):
                    entries.append(Entry(more["name"], "", number))
    return entries


ENTRIES = _entries()


def _resolve(name: str) -> Any:
    head, *rest = name.split(".")
    obj = getattr(forkfarm, head)
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _signature(name: str) -> inspect.Signature | None:
    obj = _resolve(name)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if "." in name:
        # A method read from its class: its first parameter is self.
        parameters = list(signature.parameters.values())
        if parameters and parameters[0].name == "self":
            signature = signature.replace(parameters=parameters[1:])
    return signature


_NO_DEFAULT = object()


def _default(node: ast.expr | None) -> Any:
    """The value a documented default stands for: a literal, or a builtin
    name (``dtype=float``)."""
    if node is None:
        return _NO_DEFAULT
    if isinstance(node, ast.Name) and hasattr(builtins, node.id):
        return getattr(builtins, node.id)
    return ast.literal_eval(node)


def _documented(params: str) -> list[tuple[str, inspect._ParameterKind, Any]]:
    """(name, kind, default) of each parameter written in the doc."""
    tree = ast.parse(f"def f({params}): pass")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    result: list[tuple[str, inspect._ParameterKind, Any]] = []
    positional = [
        *((a, inspect.Parameter.POSITIONAL_ONLY) for a in args.posonlyargs),
        *((a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in args.args),
    ]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    for (arg, kind), default in zip(positional, defaults):
        result.append((arg.arg, kind, _default(default)))
    if args.vararg is not None:
        result.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, _NO_DEFAULT))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        result.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, _default(default)))
    if args.kwarg is not None:
        result.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, _NO_DEFAULT))
    return result


def _actual(signature: inspect.Signature) -> list[tuple[str, inspect._ParameterKind, Any]]:
    return [
        (
            p.name,
            p.kind,
            _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default,
        )
        for p in signature.parameters.values()
    ]


def _show(params: list[tuple[str, inspect._ParameterKind, Any]]) -> list[str]:
    return [
        f"{name} ({kind.description})" + ("" if default is _NO_DEFAULT else f" = {default!r}")
        for name, kind, default in params
    ]


def test_every_public_name_is_documented() -> None:
    documented = {entry.name for entry in ENTRIES if "." not in entry.name}
    missing = sorted(set(forkfarm.__all__) - documented)
    assert not missing, f"docs/api.md has no entry for {missing}"


def test_every_entry_is_a_public_name() -> None:
    stale = sorted(
        {entry.name for entry in ENTRIES if entry.name.split(".")[0] not in forkfarm.__all__}
    )
    assert not stale, f"docs/api.md documents names that are not in forkfarm.__all__: {stale}"


def test_no_name_is_documented_twice() -> None:
    names = [entry.name for entry in ENTRIES]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"docs/api.md documents these more than once: {twice}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_the_documented_signature_is_the_real_one(entry: Entry) -> None:
    if entry.name.split(".")[0] in ("SharedArray", "as_shared", "empty", "full", "shared_array", "zeros"):
        pytest.importorskip("numpy")
    signature = _signature(entry.name)
    where = f"docs/api.md:{entry.line}: {entry.name}"
    if signature is None:
        assert entry.params is None, (
            f"{where}: Python gives no signature to check the documented one against;"
            " write the bare name"
        )
        return
    assert entry.params is not None, f"{where}: write its signature, {entry.name}{signature}"
    assert _show(_documented(entry.params)) == _show(_actual(signature)), (
        f"{where}: documented ({entry.params}), real {signature}"
    )


def test_the_parser_reads_every_kind_of_parameter() -> None:
    """The doc's signatures parse into what inspect says of the same
    function, so that a mismatch above is the doc's, not the parser's."""

    def f(a, /, b, c=1, *args, d, e="x", **kwargs):  # type: ignore[no-untyped-def]
        pass

    assert _documented('a, /, b, c=1, *args, d, e="x", **kwargs') == _actual(inspect.signature(f))
    assert _documented("dtype=float") == [
        ("dtype", inspect.Parameter.POSITIONAL_OR_KEYWORD, float)
    ]
