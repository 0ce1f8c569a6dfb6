#!/usr/bin/env bash
# CPython's own multiprocessing and concurrent.futures suites, which
# tests/python/cpython runs with forkfarm, for each Python given:
#   ensure-cpython-suites.sh PYTHON...
# A Python whose test package lacks them (Debian's python3, some pyenv
# builds) gets Debian's libpython3.X-testsuite: for its own version if
# Debian has it, else the nearest older one Debian has. Installs nothing
# when every Python has its suites or one is installed already; never fails
# the build (the drivers skip, saying why, when no suite can be found).
set -uo pipefail

needed=()
for python in "$@"; do
  "$python" - <<'PY' && continue
import importlib.util, sys
from pathlib import Path
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
major, minor = sys.version_info[:2]
debian = any(
    (Path("/usr/lib") / f"python{major}.{m}" / "test" / name).exists()
    for m in range(minor, 10, -1)
    for name in ("test_concurrent_futures", "test_concurrent_futures.py")
)
sys.exit(0 if found("test._test_multiprocessing") and (found("test.test_concurrent_futures") or debian) else 1)
PY
  minor=$("$python" -c 'import sys; print(sys.version_info[1])')
  for older in $(seq "$minor" -1 11); do
    package="libpython3.$older-testsuite"
    if apt-cache policy "$package" 2>/dev/null | grep -q "Candidate: [0-9]"; then
      needed+=("$package")
      break
    fi
  done
done
[ ${#needed[@]} -eq 0 ] && exit 0

missing=()
for package in $(printf '%s\n' "${needed[@]}" | sort -u); do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing CPython's test suites: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
       { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; }; then
  echo "ensure-cpython-suites: could not install ${missing[*]}; the drivers of CPython's suites will skip"
fi
exit 0
