#!/usr/bin/env bash
# Binary wheels for every CPython 3.11 or later of this machine (one per
# minor version: tools/wheel-common.sh), each built by `python -m build
# --wheel` with that interpreter (an isolated build, the build requirements
# of pyproject.toml from PyPI), then repaired by auditwheel into dist/:
#   build-wheels.sh
# auditwheel gives each wheel the manylinux tag its symbol versions allow on
# this glibc, and copies libuv into it (forkfarm.libs/libuv-<hash>.so...,
# found through the extension's RPATH), so the wheel needs no system libuv.
# libuv is not linked statically: Debian's libuv_a.a is compiled as PIE code,
# not PIC, and cannot be linked into a shared object (see meson.build).
# dist/ keeps only the repaired wheels of this run (and any sdist); the
# unrepaired ones stay in build/wheel/raw.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/wheel-common.sh

find_cpythons
if [ ${#CPYTHONS[@]} -eq 0 ]; then
  echo "build-wheels: no CPython 3.11 or later with venv and headers here" >&2
  exit 1
fi
tools_venv

raw=build/wheel/raw
rm -rf "$raw"
mkdir -p "$raw" dist
rm -f dist/forkfarm-*.whl

for minor in $(printf '%s\n' "${!CPYTHONS[@]}" | sort -V); do
  python=${CPYTHONS[$minor]}
  venv=build/wheel/venv-$minor
  echo "build-wheels: Python $minor ($python)"
  if [ ! -x "$venv/bin/pyproject-build" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "build>=1"
  fi
  "$venv/bin/python" -m build --wheel --outdir "$raw/$minor" . >"$raw/build-$minor.log" 2>&1 || {
    cat "$raw/build-$minor.log"
    echo "build-wheels: the build failed on Python $minor" >&2
    exit 1
  }
  wheel=$(echo "$raw/$minor"/forkfarm-*.whl)
  PATH=$TOOLS_BIN:$PATH auditwheel repair --wheel-dir dist "$wheel" >"$raw/repair-$minor.log" 2>&1 || {
    cat "$raw/repair-$minor.log"
    echo "build-wheels: auditwheel repair failed on $wheel" >&2
    exit 1
  }
done

# The platform tag is in each name: the one auditwheel gave.
for wheel in dist/forkfarm-*.whl; do
  echo "build-wheels: $wheel"
done
