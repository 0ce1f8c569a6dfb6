#!/usr/bin/env bash
# Installs the Debian packages forkfarm builds with, only those missing:
#   ensure-system-deps.sh PYTHON PACKAGE...
# PYTHON must be 3.11 or newer; its venv module and headers are checked too.
set -euo pipefail
python=$1
shift
packages=("$@")

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "forkfarm needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
  exit 1
fi
# A Debian python3 needs python3-venv for venv and python3-dev for Python.h.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  packages+=("python3-venv")
fi
if ! "$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  packages+=("python3-dev")
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
