#!/usr/bin/env bash
# The installable C library, as a user of it sees it: configures a build
# with -Dlibrary=true into a temporary prefix, installs it, then, through
# pkg-config alone,
#   - builds examples/c/square_pool.c against libforkfarm.so and runs it,
#     checking the sum of squares it prints;
#   - builds it again against libforkfarm.a (pkg-config --static) and runs it;
#   - checks that ff_version() and FF_VERSION_STRING are the version
#     forkfarm.pc gives (the project version of meson.build);
#   - checks that libforkfarm.so exports the ff_ functions of forkfarm.h and
#     nothing else (no ff__ internals, no libuv).
# The temporary directory goes when the script ends.
#   test-installed-c.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkfarm-installed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

fail() {
  echo "test-installed-c: FAIL: $*" >&2
  exit 1
}

meson setup "$tmp/build" "$root" -Dpython=false -Dtests=disabled \
  -Dlibrary=true -Dwerror=true --prefix="$prefix" --libdir=lib \
  </dev/null >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; fail "meson setup"; }
meson install -C "$tmp/build" --quiet </dev/null >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "meson install"; }

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
version=$(pkg-config --modversion forkfarm) || fail "pkg-config finds no forkfarm.pc"
expected_version=$(sed -n "s/^ *version: *'\([^']*\)',.*/\1/p" "$root/meson.build" | head -n 1)
[ "$version" = "$expected_version" ] ||
  fail "forkfarm.pc says version $version, meson.build $expected_version"

# square_pool WORKERS COUNT prints the sum of the squares of 0 .. COUNT-1.
workers=3
count=500
sum=$(( (count - 1) * count * (2 * count - 1) / 6 ))
want="$count squares on $workers workers: sum $sum (expected $sum), 0 failed"
check_square_pool() { # BINARY WHAT
  local out
  out=$("$1" "$workers" "$count" </dev/null) || fail "$2: square_pool exited with $?"
  [ "$out" = "$want" ] || fail "$2: square_pool printed '$out', not '$want'"
  echo "test-installed-c: $2: $out"
}

# Against the shared library.
# shellcheck disable=SC2046  # pkg-config's flags are words
"$cc" -Wall -Wextra -Werror -o "$tmp/square_pool" "$root/examples/c/square_pool.c" \
  $(pkg-config --cflags --libs forkfarm) -Wl,-rpath,"$prefix/lib"
ldd "$tmp/square_pool" | grep -q "$prefix/lib/libforkfarm.so" ||
  fail "square_pool is not linked with the installed libforkfarm.so"
check_square_pool "$tmp/square_pool" "libforkfarm.so"

# Against the static library: -lforkfarm resolves to libforkfarm.a when it
# is the only one in the search path.
mkdir "$tmp/static"
cp "$prefix/lib/libforkfarm.a" "$tmp/static/"
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -o "$tmp/square_pool_static" \
  "$root/examples/c/square_pool.c" $(pkg-config --cflags forkfarm) \
  -L"$tmp/static" $(pkg-config --static --libs-only-l forkfarm)
if ldd "$tmp/square_pool_static" | grep -q libforkfarm; then
  fail "square_pool_static is linked with a shared libforkfarm"
fi
check_square_pool "$tmp/square_pool_static" "libforkfarm.a"

# The version, from the library and from the installed headers.
cat >"$tmp/version.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include "forkfarm.h"
int main(void) {
  printf("%s %s %d.%d.%d\n", ff_version(), FF_VERSION_STRING,
         FF_VERSION_MAJOR, FF_VERSION_MINOR, FF_VERSION_PATCH);
  return 0;
}
EOF
# shellcheck disable=SC2046
"$cc" -Wall -Wextra -Werror -o "$tmp/version" "$tmp/version.c" \
  $(pkg-config --cflags --libs forkfarm) -Wl,-rpath,"$prefix/lib"
out=$("$tmp/version")
[ "$out" = "$version $version $version" ] ||
  fail "ff_version, FF_VERSION_STRING, FF_VERSION_MAJOR.MINOR.PATCH: '$out', not $version"
echo "test-installed-c: ff_version() = $version"

# What libforkfarm.so exports: the functions forkfarm.h declares, exactly.
nm -D --defined-only "$prefix/lib/libforkfarm.so" | awk '{print $NF}' | sort >"$tmp/exported"
# Every function forkfarm.h declares (a line that starts a declaration,
# with FF_API or without), not only those marked FF_API.
grep -vE '^(typedef|#| |/\*)' "$prefix/include/forkfarm.h" |
  sed -n 's/^[^(]*[ *]\(ff_[a-z0-9_]*\)(.*/\1/p' | sort >"$tmp/declared"
if grep -v '^ff_' "$tmp/exported" | grep -q .; then
  fail "libforkfarm.so exports symbols that are not ff_: $(grep -v '^ff_' "$tmp/exported" | tr '\n' ' ')"
fi
if grep -q '^ff__' "$tmp/exported"; then
  fail "libforkfarm.so exports internals: $(grep '^ff__' "$tmp/exported" | tr '\n' ' ')"
fi
diff -u "$tmp/declared" "$tmp/exported" >"$tmp/symbols.diff" ||
  { cat "$tmp/symbols.diff"; fail "libforkfarm.so's exports differ from forkfarm.h's functions (each needs FF_API) (-declared +exported)"; }
echo "test-installed-c: libforkfarm.so exports the $(wc -l <"$tmp/exported") ff_ functions of forkfarm.h, nothing else"
echo "test-installed-c: OK"
