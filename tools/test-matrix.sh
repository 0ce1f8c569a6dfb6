#!/usr/bin/env bash
# The pytest suite on every CPython 3.11 or later that this machine offers
# (pyenv's versions and python3.X on PATH), apart from the one `make test`
# already ran it on, each in its own venv .venv-3.X built in build/py-3.X:
#   test-matrix.sh DEFAULT_PYTHON [PYTEST_ARGS...]
# Idempotent: a venv that exists is reused and only rebuilt incrementally.
# Every Python is run even when one fails; the exit status says if any did.
set -uo pipefail
default=$1
shift
cd "$(dirname "$0")/.."

minor_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
default_minor=$(minor_of "$default")

candidates=()
root=""
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
elif [ -d "${PYENV_ROOT:-$HOME/.pyenv}/versions" ]; then
  root=${PYENV_ROOT:-$HOME/.pyenv}
fi
if [ -n "$root" ]; then
  for python in "$root"/versions/3.*/bin/python3; do
    [ -x "$python" ] && candidates+=("$python")
  done
fi
for minor in 11 12 13 14 15 16; do
  found=$(command -v "python3.$minor" 2>/dev/null) && candidates+=("$found")
done

declare -A chosen=()
for python in "${candidates[@]}"; do
  minor=$(minor_of "$python") || continue
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11) or sys.implementation.name != "cpython")' || continue
  [ "$minor" = "$default_minor" ] && continue
  [ -n "${chosen[$minor]:-}" ] && continue
  # A Python without venv, or without its headers, cannot build forkfarm.
  "$python" -c 'import ensurepip, venv, os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || {
    echo "test-matrix: skipping Python $minor ($python): no venv module or no headers"
    continue
  }
  chosen[$minor]=$python
done

if [ ${#chosen[@]} -eq 0 ]; then
  echo "test-matrix: no CPython 3.11+ here besides $default_minor; nothing more to run"
  exit 0
fi

failed=()
for minor in $(printf '%s\n' "${!chosen[@]}" | sort -V); do
  python=${chosen[$minor]}
  venv=.venv-$minor
  echo "test-matrix: Python $minor ($("$python" --version 2>&1)) in $venv"
  if ! {
    { [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"; } &&
      "$venv/bin/python" -m pip install --quiet --upgrade pip &&
      "$venv/bin/python" -m pip install --quiet "meson-python>=0.18" "meson>=1.1" ninja "numpy>=2.0" &&
      "$venv/bin/python" -m pip install --quiet --no-build-isolation \
        -Cbuild-dir="build/py-$minor" ".[test]"
  }; then
    echo "test-matrix: Python $minor: the install failed"
    failed+=("$minor")
    continue
  fi
  bash tools/ensure-cpython-suites.sh "$venv/bin/python"
  if ! "$venv/bin/python" -m pytest -q "$@"; then
    failed+=("$minor")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "test-matrix: failed on Python ${failed[*]}"
  exit 1
fi
echo "test-matrix: passed on Python $(printf '%s\n' "${!chosen[@]}" | sort -V | tr '\n' ' ')"
