#!/usr/bin/env bash
# Development build: compiles upper_fast._core in place (python/upper_fast/_core*.so) so that
# `PYTHONPATH=python:training pytest` runs against the working tree without reinstalling.
#   scripts/dev_build.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build/dev}
shift || true
PY=${PYTHON:-python}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DUPPER_FAST_INPLACE=ON \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
  ${HNSWLIB_SDIST:+-DHNSWLIB_SDIST=$HNSWLIB_SDIST} "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
