#!/usr/bin/env bash
# Installs what is missing (Debian packages, the npm test clients), builds, and
# runs the whole test suite (ctest), then the parser fuzzers (scripts/fuzz.sh;
# FUZZ_SECONDS=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
# The npm clients the server's conformance test drives, pinned by
# tests/server/clients/package-lock.json; reinstalled when the lock changes.
clients="$BUILD_DIR/test-clients"
if ! cmp -s tests/server/clients/package-lock.json "$clients/package-lock.json" || [[ ! -d $clients/node_modules/openai ]]; then
  echo "test: installing the test clients (npm ci into $clients)"
  mkdir -p "$clients"
  cp tests/server/clients/package.json tests/server/clients/package-lock.json "$clients/"
  npm ci --prefix "$clients" --cache "$clients/npm-cache" --no-fund --no-audit --no-update-notifier --loglevel=error
fi
(cd "$BUILD_DIR" && ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@")
if [[ ${FUZZ_SECONDS:-30} != 0 ]]; then bash scripts/fuzz.sh; fi
