#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest), then
# the parser fuzzers (scripts/fuzz.sh; FUZZ_SECONDS=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
(cd "$BUILD_DIR" && ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@")
if [[ ${FUZZ_SECONDS:-60} != 0 ]]; then bash scripts/fuzz.sh; fi
