#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs lococo on the
# default model. Until the bundled tiny model ships, it makes a small model
# with RANDOM weights, so the text it generates is noise; the point is to show
# the pipeline (chunked prefill, KV-cache policies, perplexity) end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LOCOCO=./build/lococo
mkdir -p out
MODEL=out/random-model
if [[ ! -f $MODEL/config.json ]]; then
  $LOCOCO init-model --out "$MODEL" --seed 1
fi
echo "== NOTE: $MODEL has RANDOM weights: expect gibberish text and a perplexity near the vocabulary size =="
$LOCOCO info "$MODEL"
echo "== generate (full cache) =="
$LOCOCO generate -m "$MODEL" --prompt "Call me Ishmael." --max-tokens 32 --temperature 0.8 --seed 1
echo "== perplexity of README.md (full cache, chunk 64) =="
$LOCOCO perplexity -m "$MODEL" --file README.md --chunk 64
echo "== the same text in fixed memory: h2o and streaming caches of 128 slots =="
$LOCOCO perplexity -m "$MODEL" --file README.md --chunk 64 --cache h2o --budget 128 -q
$LOCOCO perplexity -m "$MODEL" --file README.md --chunk 64 --cache streaming --budget 128 -q
