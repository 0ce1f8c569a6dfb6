"""Checks the core metadata of forkfarm's wheels and sdist against
pyproject.toml and meson.build (run by tools/test-wheels.sh):

    python check-dist-metadata.py DIST...

Each DIST (a .whl or an sdist .tar.gz) must carry the name, meson.build's
project version, Requires-Python, the dependencies and the extras of
pyproject.toml, the license (License-Expression, with the LICENSE file in
the archive) and the README as a Markdown description."""

from __future__ import annotations

import email.parser
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _expected():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "meson.build").read_text()
    version = re.search(r"project\([^)]*?\bversion:\s*'([^']+)'", text, re.S).group(1)
    return project, version


def _read(dist: Path, readme: str) -> tuple[str, set[str], str]:
    """The METADATA (PKG-INFO) text of dist, its member names, and the
    README it was made from: the sdist's own (meson dist takes the committed
    files, which may differ from the work tree's), the checkout's for a
    wheel."""
    if dist.name.endswith(".whl"):
        with zipfile.ZipFile(dist) as archive:
            names = set(archive.namelist())
            [metadata] = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            return archive.read(metadata).decode(), names, (ROOT / readme).read_text()
    with tarfile.open(dist) as archive:
        names = set(archive.getnames())
        [metadata] = [n for n in names if re.fullmatch(r"[^/]+/PKG-INFO", n)]
        top = metadata.split("/")[0]
        return (
            archive.extractfile(metadata).read().decode(),
            names,
            archive.extractfile(f"{top}/{readme}").read().decode(),
        )


def _normalize(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).replace('"', "'")


def check(dist: Path, project: dict, version: str) -> list[str]:
    text, names, readme = _read(dist, project["readme"])
    metadata = email.parser.Parser().parsestr(text)
    problems = []

    def want(field: str, expected: str | None = None) -> None:
        value = metadata.get(field)
        if not value:
            problems.append(f"no {field}")
        elif expected is not None and value != expected:
            problems.append(f"{field} is {value!r}, not {expected!r}")

    want("Name", project["name"])
    want("Version", version)
    want("Summary", project["description"])
    want("Requires-Python", project["requires-python"])
    want("License-Expression", project["license"])
    want("Description-Content-Type", "text/markdown")

    requires = [_normalize(r) for r in metadata.get_all("Requires-Dist") or []]
    plain = sorted(r for r in requires if "extra==" not in r)
    if plain != sorted(_normalize(r) for r in project["dependencies"]):
        problems.append(f"Requires-Dist {plain}, not pyproject's {project['dependencies']}")
    extras = sorted(metadata.get_all("Provides-Extra") or [])
    if extras != sorted(project["optional-dependencies"]):
        problems.append(f"Provides-Extra {extras}, not pyproject's {sorted(project['optional-dependencies'])}")
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            marked = _normalize(f"{requirement}; extra == '{extra}'")
            if marked not in requires:
                problems.append(f"no Requires-Dist {marked}")

    body = metadata.get_payload()
    if not body or body.strip() != readme.strip():
        problems.append("the description is not README.md")

    license_files = metadata.get_all("License-File") or []
    if license_files != project["license-files"]:
        problems.append(f"License-File {license_files}, not {project['license-files']}")
    for license_file in project["license-files"]:
        if not any(name.endswith(f"/{license_file}") for name in names):
            problems.append(f"{license_file} is not in the archive")
    return problems


def main() -> int:
    project, version = _expected()
    failed = False
    for arg in sys.argv[1:]:
        dist = Path(arg)
        problems = check(dist, project, version)
        if problems:
            failed = True
            for problem in problems:
                print(f"check-dist-metadata: {dist.name}: {problem}", file=sys.stderr)
        else:
            print(f"check-dist-metadata: {dist.name}: name, version, requires-python, "
                  "dependencies, extras, license and readme as pyproject.toml says")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
