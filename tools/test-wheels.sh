#!/usr/bin/env bash
# The distributions of dist/ (`make wheel`, `make sdist`) as a user gets them:
#   test-wheels.sh
#   - each wheel, in a fresh venv of the Python it was built for, with NumPy
#     from PyPI: tools/wheel-smoke.py, run from a temporary directory outside
#     the checkout; then its installed _core*.so: no NEEDED libuv.so.1 (the
#     system's), its libuv the copy auditwheel put in the wheel
#     (forkfarm.libs/libuv-<hash>.so...), resolved there by the loader, and
#     no exported symbol but PyInit__core;
#   - twine check, and the metadata (tools/check-dist-metadata.py), of every
#     wheel and the sdist;
#   - the sdist: installed by pip in a fresh venv (built from source against
#     the system's libuv) and smoke-tested the same way; and built once more
#     with pkg-config unable to find libuv, which must fail with meson.build's
#     message naming the packages to install.
# Every step runs under a timeout; the temporary directory goes at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source tools/wheel-common.sh

fail() {
  echo "test-wheels: FAIL: $*" >&2
  exit 1
}

shopt -s nullglob
wheels=(dist/forkfarm-*.whl)
sdists=(dist/forkfarm-*.tar.gz)
shopt -u nullglob
[ ${#wheels[@]} -gt 0 ] || fail "no wheel in dist/: run make wheel"
[ ${#sdists[@]} -eq 1 ] || fail "not exactly one sdist in dist/: run make sdist"
sdist=${sdists[0]}

find_cpythons
tools_venv
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkfarm-wheels.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/run"
cp tools/wheel-smoke.py "$tmp/run/"

# smoke VENV [ARGS...]: the smoke test with VENV's Python, from $tmp/run.
smoke() {
  local venv=$1
  shift
  (cd "$tmp/run" && timeout --kill-after=10 300 "$venv/bin/python" wheel-smoke.py \
    --checkout "$root" "$@") || fail "wheel-smoke.py failed with $venv/bin/python"
}

# The installed extension of VENV.
core_of() {
  (cd "$tmp/run" && "$1/bin/python" -c 'import forkfarm._core as c; print(c.__file__)')
}

for wheel in "${wheels[@]}"; do
  name=$(basename "$wheel")
  tag=$(echo "$name" | sed -n 's/^forkfarm-[^-]*-cp\([0-9]\)\([0-9]*\)-.*/\1.\2/p')
  [ -n "$tag" ] || fail "$name: no cp3X tag"
  python=${CPYTHONS[$tag]:-}
  [ -n "$python" ] || fail "$name: no Python $tag here"
  echo "test-wheels: $name with $("$python" --version 2>&1)"
  venv=$tmp/venv-$tag
  "$python" -m venv "$venv"
  timeout 600 "$venv/bin/python" -m pip install --quiet "$wheel" numpy ||
    fail "$name: pip install failed"
  smoke "$venv"

  core=$(core_of "$venv")
  site=$(cd "$tmp/run" && "$venv/bin/python" -c 'import forkfarm, os; print(os.path.dirname(os.path.dirname(forkfarm.__file__)))')
  needed=$(readelf -d "$core" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  if echo "$needed" | grep -qx 'libuv\.so.*'; then
    fail "$name: $core needs the system's libuv: $(echo "$needed" | tr '\n' ' ')"
  fi
  vendored=$(echo "$needed" | grep '^libuv-' || true)
  [ -n "$vendored" ] || fail "$name: $core links no libuv copy: $(echo "$needed" | tr '\n' ' ')"
  resolved=$(ldd "$core" | sed -n "s/^[[:space:]]*$vendored => \([^ ]*\).*/\1/p")
  [ -n "$resolved" ] && resolved=$(realpath "$resolved")
  site=$(realpath "$site")
  case "$resolved" in
  "$site"/forkfarm.libs/*) ;;
  *) fail "$name: $vendored resolves to '$resolved', not into $site/forkfarm.libs" ;;
  esac
  if ldd "$core" | grep -q '/libuv\.so'; then
    fail "$name: $core loads the system's libuv: $(ldd "$core" | grep libuv)"
  fi
  exported=$(nm -D --defined-only "$core" | awk '{print $3}')
  [ "$exported" = "PyInit__core" ] ||
    fail "$name: $core exports more than PyInit__core: $(echo "$exported" | tr '\n' ' ')"
  echo "test-wheels: $name: NEEDED $(echo "$needed" | tr '\n' ' ')(libuv from the wheel), exports only PyInit__core"
done

echo "test-wheels: twine check"
"$TOOLS_BIN/twine" check --strict "${wheels[@]}" "$sdist" || fail "twine check"
"$TOOLS_BIN/python" tools/check-dist-metadata.py "${wheels[@]}" "$sdist" || fail "metadata"

# The sdist, built from source by pip (isolated, with the build requirements
# from PyPI; no cache, so that it really builds) against the system's libuv.
echo "test-wheels: $(basename "$sdist"), built by pip"
venv=$tmp/venv-sdist
"${PYTHON:-python3}" -m venv "$venv"
timeout 900 "$venv/bin/python" -m pip install --quiet --no-cache-dir "$sdist" ||
  fail "pip install $sdist failed"
smoke "$venv" --no-numpy

# Without libuv: pkg-config searches only an empty directory (and no CMake
# package of libuv is installed on Debian), so meson finds none.
echo "test-wheels: $(basename "$sdist") where libuv cannot be found"
mkdir "$tmp/no-pkgconfig"
venv=$tmp/venv-nolibuv
"${PYTHON:-python3}" -m venv "$venv"
if PKG_CONFIG_LIBDIR=$tmp/no-pkgconfig PKG_CONFIG_PATH='' timeout 900 \
  "$venv/bin/python" -m pip install --no-cache-dir "$sdist" >"$tmp/nolibuv.log" 2>&1; then
  fail "pip install $sdist succeeded without libuv"
fi
want='forkfarm needs libuv (1.40 or later) and pkg-config: apt install libuv1-dev pkg-config (Debian/Ubuntu), dnf install libuv-devel, or conda install libuv'
grep -qF "$want" "$tmp/nolibuv.log" || {
  cat "$tmp/nolibuv.log"
  fail "pip's output without libuv does not say: $want"
}
grep -F "ERROR" "$tmp/nolibuv.log" | head -n 3 | sed 's/^/test-wheels:   /'
echo "test-wheels: passed (${#wheels[@]} wheels and the sdist)"
