#!/usr/bin/env bash
# One row of the compressor ablation (docs/DESIGN.md section 9): trains a
# lococo compressor for the bundled model with the given train-compressor
# flags, then measures it beside lococo-hh with the same inference flags:
# long-range recall (eval recall) and perplexity on the model card's test documents.
#
#   scripts/ablate-compressor.sh NAME [train-compressor flags...]
#
# Writes out/ablation/NAME/{m<M>.safetensors, train.log, recall/, ppl/} and
# prints one summary line. Resumable: a trained compressor is not retrained.
# Environment: M (budget = chunk, default 128), STEPS (default 400), SEED (default 1), GAPS (default 512,1k,4k,8k),
# LOCOCO (default build/lococo), MODEL (default models/lococo-tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
NAME=$1
shift
M=${M:-128}
STEPS=${STEPS:-400}
LOCOCO=${LOCOCO:-build/lococo}
MODEL=${MODEL:-models/lococo-tiny}
DIR=out/ablation/$NAME
mkdir -p "$DIR"
[[ -d data/test ]] || bash scripts/fetch-corpus.sh
source scripts/lib/inference-flags.sh
inference_flags "$@"
if [[ ! -f $DIR/m$M.safetensors ]]; then
  nice "$LOCOCO" train-compressor -m "$MODEL" --data data/train --val data/validation --budget "$M" --chunk "$M" \
    --segments $((2048 / M)) --positions cache --kernel 21 --steps "$STEPS" --warmup 20 --eval-every 100 \
    --val-tokens 4096 --seed "${SEED:-1}" -q "$@" --out "$DIR/m$M.safetensors" > "$DIR/train.log" 2>&1
fi
nice "$LOCOCO" eval recall -m "$MODEL" --data data/test --gaps "${GAPS:-512,1k,4k,8k}" --passage 64 --trials 8 \
  --policies full,lococo-hh,lococo --budget "$M" --chunk "$M" "${infer[@]}" --compressor "$DIR/m$M.safetensors" \
  --out "$DIR/recall" -q > /dev/null
# Perplexity on the model card's documents (every State of the Union test address
# and the Moby Dick test chapters, each cut to the trained context), streaming beside.
nice "$LOCOCO" eval ppl -m "$MODEL" --data data/test/sotu-*.txt data/test/moby-dick-test.txt --min-tokens 2048 \
  --max-tokens 2048 --policies streaming,lococo-hh,lococo --budgets "$M" --chunk "$M" "${infer[@]}" \
  --compressor "$DIR/m$M.safetensors" --out "$DIR/ppl" -q > /dev/null
node -e '
const [recall, ppl, name] = [require(process.argv[1]), require(process.argv[2]), process.argv[3]];
for (const run of recall.runs.filter((r) => r.budget > 0)) {
  const kept = run.cells.map((c) => (c.recall_kept === null ? "-" : c.recall_kept.toFixed(2))).join(" / ");
  const p = ppl.runs.find((r) => r.policy === run.policy);
  const s = ppl.runs.find((r) => r.policy === "streaming");
  console.log(`${name}: ${run.cache}: recall kept ${kept} (gaps ${recall.gaps.join(", ")}); ` +
              `PPL ${p.perplexity.toFixed(2)} (streaming ${s.perplexity.toFixed(2)})`);
}' "$PWD/$DIR/recall/report.json" "$PWD/$DIR/ppl/report.json" "$NAME"
