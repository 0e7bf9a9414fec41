#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (clang, AddressSanitizer + UBSan) and
# runs each for FUZZ_SECONDS (default 30) from seed files (fuzz/make-seeds.js).
# Exits non-zero when a target crashes, leaks or trips a sanitizer; the input
# that did it is left in out/fuzz/<target>/ (crash-*, leak-*, ...).
#   scripts/fuzz.sh [TARGET ...]        (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
TIME=${FUZZ_SECONDS:-30}
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(fuzz_gguf fuzz_safetensors fuzz_state fuzz_config fuzz_tokenizer_json fuzz_token_cache
  fuzz_gguf_tokenizer)

[[ -f $BUILD/build.ninja ]] ||
  cmake -S fuzz -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j "${JOBS:-$(nproc)}"

node fuzz/make-seeds.js out/fuzz/seeds > /dev/null
for target in "${TARGETS[@]}"; do
  kind=${target#fuzz_}
  work=out/fuzz/$target
  mkdir -p "$work/corpus"
  echo "fuzz: $target for ${TIME}s"
  # libtorch is not built with the sanitizers and defines some globals twice
  # across its libraries: ASan's ODR check would stop at start-up.
  ASAN_OPTIONS=detect_odr_violation=0 "$BUILD/$target" "$work/corpus" "out/fuzz/seeds/$kind" \
    -max_total_time="$TIME" -max_len=65536 -artifact_prefix="$work/" -print_final_stats=1 2> "$work/log" ||
    { tail -40 "$work/log"; echo "fuzz: $target FAILED (log: $work/log)" >&2; exit 1; }
  grep -E "^stat::number_of_executed_units|^Done" "$work/log" | tr '\n' ' ' | sed "s/^/fuzz: $target: /"
  echo
done
