#!/usr/bin/env bash
# Installs corral from this archive on a host without network access (scripts/wheelhouse made it).
#
#   ./install.sh [--prefix DIR] [--python PYTHON]
#
# Creates a virtual environment in DIR (default /opt/corral) and installs every wheel of wheels/
# into it with the package index disabled, each checked against its sha256 in requirements.txt.
# manifest.json says what the host needs: the Python version the wheels were built for, glibc at
# least as new as the build machine's, and for a CUDA build the NVIDIA driver and CUDA runtime.
# Running it again with a newer archive upgrades the same environment.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PREFIX=/opt/corral
PYTHON=""

while [ "$#" -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --python=*) PYTHON="${1#--python=}"; shift ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "install: $*" >&2; exit 1; }

# The manifest is read with whichever python3 is at hand; the interpreter used is then the one of
# the version the wheels were built for.
reader="${PYTHON:-$(command -v python3 || true)}"
[ -n "$reader" ] || fail "no python3 on this host; install Python $(sed -n 's/.*"python": "\(.*\)".*/\1/p' "$HERE/manifest.json") first"
manifest() { "$reader" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$HERE/manifest.json" "$1"; }
want="$(manifest python)"
glibc="$(manifest glibc)"
machine="$(manifest machine)"
target="$(manifest target)"

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
if [ -z "$PYTHON" ]; then
  for candidate in "python$want" python3; do
    if command -v "$candidate" >/dev/null && [ "$(version_of "$candidate")" = "$want" ]; then
      PYTHON="$(command -v "$candidate")"; break
    fi
  done
  [ -n "$PYTHON" ] || fail "these wheels are for Python $want and no python$want is on PATH (python3 is $(version_of python3)); install Python $want, or build the archive on a connected machine with scripts/wheelhouse --python python$(version_of python3)"
fi
have="$(version_of "$PYTHON")"
[ "$have" = "$want" ] || fail "$PYTHON is Python ${have:-?}, these wheels are for Python $want"

host_machine="$("$PYTHON" -c 'import platform; print(platform.machine())')"
[ "$host_machine" = "$machine" ] || fail "these wheels are for $machine, this host is $host_machine"
host_glibc="$("$PYTHON" -c 'import platform; print(platform.libc_ver()[1])')"
if [ -n "$glibc" ] && ! "$PYTHON" -c 'import sys; a, b = (tuple(map(int, v.split("."))) for v in sys.argv[1:]); sys.exit(a < b)' "${host_glibc:-0}" "$glibc"; then
  fail "llama.cpp was compiled against glibc $glibc; this host has ${host_glibc:-no glibc}: build the archive on a machine no newer than this host"
fi

if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/pyvenv.cfg" ] && [ -n "$(ls -A "$PREFIX")" ]; then
  fail "$PREFIX exists and is not a virtual environment; choose another --prefix"
fi
if [ ! -f "$PREFIX/pyvenv.cfg" ]; then
  # Without pip: Debian's python3 lacks ensurepip unless python3-venv is installed, and pip comes
  # from the archive anyway.
  "$PYTHON" -m venv --without-pip "$PREFIX" || fail "could not create a virtual environment in $PREFIX"
fi

pip_wheel="$(ls "$HERE"/wheels/pip-*.whl 2>/dev/null | head -n 1)"
[ -n "$pip_wheel" ] || fail "no pip wheel in $HERE/wheels: the archive is incomplete"
echo "install: corral $(manifest corral) ($target) into $PREFIX with $PYTHON"
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$PREFIX/bin/python" "$pip_wheel/pip" install --quiet \
  --no-index --find-links "$HERE/wheels" --require-hashes --only-binary=:all: \
  --requirement "$HERE/requirements.txt" \
  || fail "pip could not install the wheels (above); nothing was downloaded"

# llama.cpp's shared libraries need the host's libstdc++ and libgomp (and CUDA's for a CUDA build):
# loading them now says what is missing instead of the first model load.
if ! err="$("$PREFIX/bin/python" -c 'import llama_cpp' 2>&1)"; then
  echo "$err" >&2
  fail "llama.cpp does not load on this host; install the libraries named above (libgomp1, libstdc++6; for CUDA the driver and CUDA runtime)"
fi
echo "install: done: $PREFIX/bin/corral serve   (systemd unit and settings file in $HERE/config/)"
