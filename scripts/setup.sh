#!/usr/bin/env bash
# Installs what is missing (Debian packages), then configures and builds lococo.
# Idempotent: a second run installs nothing and only rebuilds what changed.
#   scripts/setup.sh [--no-build] [TARGET...]   (targets: default all; the demo builds only `lococo`)
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libsentencepiece-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libbenchmark-dev libcpp-httplib-dev gnuplot-nox
  libgloo-dev  # headers of the c10d Gloo process group (distributed training)
  # libtorch's BLAS: without OpenBLAS Debian falls back to the slow reference BLAS; the OpenMP build
  # shares libtorch's OpenMP threads (the pthreads build's own threads spin beside them: 2x slower decoding)
  libopenblas0-openmp
  clang libclang-rt-14-dev  # libFuzzer + sanitizers for the parser fuzzers (scripts/fuzz.sh)
  libpcre2-dev  # Unicode regular expressions of Hugging Face tokenizer.json pre-tokenizers
  libicu-dev  # Unicode normalization (NFC) of tokenizer.json normalizers
  libxxhash-dev  # fingerprints of saved cache states
  libedit-dev tmux  # line editing of `lococo chat`; tmux drives it in its test as a person would
  # The Python package lococo (python/), built against Debian's torch (the same libtorch),
  # its pytest suite, and the plot of examples/compare_policies.py
  pybind11-dev python3-dev python3-torch python3-pytest python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm (for the corpus packages) may come with a nodejs that is not Debian's: check the command.
command -v npm > /dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to apt-get install the packages above (run as root or install them first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian picks among installed BLAS builds by priority, which prefers the
# pthreads build when both are there: select the OpenMP one explicitly.
multiarch=$(gcc -print-multiarch)
for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  target=/usr/lib/$multiarch/openblas-openmp/$lib
  current=$(update-alternatives --query "$lib-$multiarch" 2>/dev/null | awk '/^Value:/ {print $2}')
  [[ -e $target && $current != "$target" ]] || continue
  if [[ $(id -u) -eq 0 ]]; then
    update-alternatives --quiet --set "$lib-$multiarch" "$target"
  else
    echo "setup: $lib points at $current; as root: update-alternatives --set $lib-$multiarch $target" >&2
  fi
done

[[ "${1:-}" == "--no-build" ]] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}"
