#!/usr/bin/env bash
# The main job: installs what is missing, builds, fetches the corpus, and shows
# LoCoCo on the bundled tiny model (models/lococo-tiny): a held-out long
# document (the Moby Dick test chapters) cut to the model's trained context,
# read in fixed memory with a 128-slot cache under every policy, then passkey
# retrieval at two lengths and long-range recall (a passage repeated after a
# gap of 1k to 8k tokens). Reports and plots go to out/demo/. A few minutes on
# 2 cores once built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh lococo  # the main job runs only the CLI; scripts/test.sh builds the rest
bash scripts/fetch-corpus.sh
LOCOCO=./build/lococo
MODEL=models/lococo-tiny
OUT=out/demo
export OMP_WAIT_POLICY=PASSIVE
T=$(node -e "console.log(require('./$MODEL/config.json').max_position_embeddings)")
POLICIES=full,streaming,h2o,tova,snapkv,lococo-hh,lococo

echo "== the bundled model"
$LOCOCO info "$MODEL"
echo
echo "== generate (lococo cache, 128 slots)"
$LOCOCO generate -m "$MODEL" --cache lococo --budget 128 --chunk 128 --prompt "Call me Ishmael." \
  --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 1
echo
echo "== streaming perplexity of the Moby Dick test chapters, first $T tokens, budget 128"
$LOCOCO eval ppl -m "$MODEL" --data data/test/moby-dick-test.txt --max-tokens "$T" \
  --policies "$POLICIES" --budgets 128 --chunk 128 --out "$OUT/ppl"
echo
echo "== passkey retrieval at 1024 and $T tokens, budget 128"
$LOCOCO eval passkey -m "$MODEL" --lengths "1024,$T" --depths 0,0.5,1 --trials 2 \
  --policies "$POLICIES" --budget 128 --chunk 128 --out "$OUT/passkey"
echo
echo "== long-range recall: 64 shuffled tokens, a gap, the same tokens again (share of the full cache's gain kept)"
$LOCOCO eval recall -m "$MODEL" --data data/test --gaps 1k,4k,8k --passage 64 --trials 4 \
  --policies "$POLICIES" --budget 128 --chunk 128 --out "$OUT/recall"
