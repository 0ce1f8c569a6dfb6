#!/usr/bin/env bash
# Installs clang and its libFuzzer runtime (libclang-rt-N-dev, N being the
# version the distribution's clang is), only if missing:
#   ensure-fuzz-deps.sh PYTHON
set -euo pipefail
here=$(dirname "$0")
bash "$here/ensure-system-deps.sh" "$1" clang
major=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)
bash "$here/ensure-system-deps.sh" "$1" "libclang-rt-$major-dev"
