#!/usr/bin/env bash
# One row of the learned-retention ablation (docs/DESIGN.md sections 4 and 9):
# trains a compressor with learned retention for a model with the given
# train-retention flags, then measures lococo with it beside the heuristics at
# the same budget: passkey retrieval (filler from the test split and from
# outside the corpus), long-range recall, and perplexity on the model card's
# test documents.
#
#   scripts/ablate-retention.sh NAME [train-retention flags...]
#
# Writes out/ablation/NAME/{m<M>.safetensors, train.log, passkey-*/, recall/, ppl/}
# and prints a summary. Resumable: a trained compressor is not retrained.
# Environment: M (budget, default 128), CHUNK (default M), STEPS (default 400),
# MODEL (default the bundled model), LOCOCO (default build/lococo),
# LENGTHS (passkey, default 1k,2k,4k,8k), GAPS (recall, default 512,1k,4k,8k),
# POLICIES (the heuristics beside it, default streaming,h2o,tova,snapkv).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
NAME=$1
shift
M=${M:-128}
CHUNK=${CHUNK:-$M}
LOCOCO=${LOCOCO:-build/lococo}
MODEL=${MODEL:-models/lococo-tiny}
POLICIES=${POLICIES:-streaming,h2o,tova,snapkv}
DIR=out/ablation/$NAME
mkdir -p "$DIR"
[[ -d data/test ]] || bash scripts/fetch-corpus.sh
source scripts/lib/inference-flags.sh
inference_flags "$@"
if [[ ! -f $DIR/m$M.safetensors ]]; then
  nice "$LOCOCO" train-retention -m "$MODEL" --data data/train --val data/validation --budget "$M" \
    --steps "${STEPS:-400}" -q "$@" --out "$DIR/m$M.safetensors" > "$DIR/train.log" 2>&1
fi
common=(-m "$MODEL" --chunk "$CHUNK" "${infer[@]}" --compressor "$DIR/m$M.safetensors" -q)
outside=/usr/share/common-licenses/GPL-3  # English the corpus does not contain
for filler in data/test "$outside"; do
  name=passkey-$(basename "$filler")
  [[ -f $DIR/$name/report.json ]] || nice "$LOCOCO" eval passkey "${common[@]}" --policies "full,$POLICIES,lococo" \
    --budget "$M" --lengths "${LENGTHS:-1k,2k,4k,8k}" --trials 2 --filler "$filler" --out "$DIR/$name" > /dev/null
done
[[ -f $DIR/recall/report.json ]] || nice "$LOCOCO" eval recall "${common[@]}" --data data/test \
  --gaps "${GAPS:-512,1k,4k,8k}" --passage 64 --trials 8 --policies "full,$POLICIES,lococo" --budget "$M" --out "$DIR/recall" > /dev/null
[[ -f $DIR/ppl/report.json ]] || nice "$LOCOCO" eval ppl "${common[@]}" --data data/test/sotu-*.txt \
  data/test/moby-dick-test.txt --min-tokens 2048 --max-tokens 2048 --policies "$POLICIES,lococo" --budgets "$M" \
  --out "$DIR/ppl" > /dev/null
for report in "$DIR"/passkey-*/report.md "$DIR"/recall/report.md; do
  echo "== $report"
  grep -E '^\|' "$report" | head -12
done
echo "== $DIR/ppl"
node -e 'for (const r of require(process.argv[1]).runs) console.log(`${r.policy}: ${r.perplexity.toFixed(2)}`)' \
  "$PWD/$DIR/ppl/report.json"
