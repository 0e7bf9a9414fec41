#!/usr/bin/env bash
# Reproduces the bundled model models/lococo-tiny from scratch (docs/DESIGN.md
# section 7): corpus -> tokenizer -> pretraining -> compressors -> evaluation
# -> model card. About four and a half hours on 2 cores, most of it pretraining (stage times in the card).
#
#   scripts/make-tiny-model.sh [--help]
#
# Resumable: every stage whose output exists is skipped, and pretraining
# continues from its checkpoint (WORK/pretrain/checkpoint), so running the
# script again after an interruption picks up where it stopped.
# Environment: WORK (default out/make-tiny), DEST (default models/lococo-tiny),
# LOCOCO (default build/lococo), THREADS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi

WORK=${WORK:-out/make-tiny}
DEST=${DEST:-models/lococo-tiny}
# Whitespace as written (an exported GGUF tokenises as in llama.cpp), and
# retrieval learnt on more than one filler (trained on corpus filler alone, the
# model found the key in 13-33% of prompts whose filler was other text).
TOKENIZER_FLAGS=(--keep-whitespace)
FILLER_FLAGS=(--passkey-text-filler 0.3 --passkey-shuffled-filler 0.2)
LOCOCO=${LOCOCO:-build/lococo}
THREADS=${THREADS:-$(nproc)}
export OMP_WAIT_POLICY=PASSIVE  # libgomp's busy-waiting costs a lot when cores are shared
mkdir -p "$WORK"
TIMES=$WORK/times.tsv
touch "$TIMES"

# stage NAME DONE-FILE COMMAND...: runs COMMAND unless DONE-FILE exists; logs its wall time.
stage() {
  local name=$1 done_file=$2
  shift 2
  if [[ -e $done_file ]]; then
    echo "== $name: done already ($done_file)"
    return
  fi
  echo "== $name"
  local t0=$SECONDS
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - t0)) >> "$TIMES"
}

# ---- The recipe (recorded in the model card) ---------------------------------
VOCAB=4096
PRETRAIN_FLAGS=(--config configs/tiny-6.5m.json --steps 700 --batch 4 --seq-len 2048
  --short-seq-len 512 --short-steps 350 --passkey-rate 0.35 --short-passkey-rate 0.5
  --lr 1.5e-3 --warmup 50 --eval-every 50 --save-every 50 --seed 1 "${FILLER_FLAGS[@]}")
# From this step on, copy rows join the mix (--copy-rate): by step 300 passkey
# retrieval was still at 0%, the model had not learnt to copy from far back.
COPY_FROM_STEP=301
COPY_FLAGS=(--copy-rate 0.15)
# Copy legs: continuations of the base model (--init-from the previous leg,
# fresh optimiser) with many copy rows (--copy-style tiled) and passkey rows at
# growing lengths. The base recipe alone never learnt to copy from its context
# (passkey 0%); at 256 tokens copying appears after a few million tokens, and a
# direct jump to T = 2048 erased it again, so the length grows in steps.
# A tiled copy row repeats a window of at most SEQ-LEN/2 tokens, so it never asks
# to look further back than that, and passkey rows are SEQ-LEN/4..SEQ-LEN long:
# after the 1024 legs keys 900+ tokens back were still missed (depth 0 at 1k),
# so the last legs trade copy rows for passkey rows and go on at 2048.
# Each entry: NAME FROM SEQ-LEN BATCH STEPS LR SEED COPY-RATE PASSKEY-RATE.
COPY_LEGS=(
  "copy256 pretrain 256 2 1150 1.5e-3 3 0.6 0.3"
  "copy256b copy256 256 16 700 1.5e-3 5 0.6 0.3"
  "copy256c copy256b 256 16 600 1.5e-3 7 0.6 0.3"
  "copy512 copy256c 512 8 150 1e-3 8 0.6 0.3"
  "copy1024 copy512 1024 4 150 1e-3 9 0.6 0.3"
  "copy1024b copy1024 1024 4 200 1e-3 10 0.6 0.3"
  "copy1024c copy1024b 1024 4 300 1e-3 11 0.6 0.3"
  "copy1024d copy1024c 1024 4 300 1e-3 12 0.3 0.6"
  "copy2048 copy1024d 2048 2 300 1e-3 13 0.3 0.6"
)
LEG_FLAGS=(--config configs/tiny-6.5m.json --copy-style tiled --warmup 10 --eval-every 50 --save-every 50
  "${FILLER_FLAGS[@]}")
# The compressors are learned retention alone (keep rate 1, no fusion): an MLP per layer
# scores which tokens stay beside the last 3M/4, always kept (docs/DESIGN.md section 9).
RETENTION_FLAGS=(--keep-rate 1 --target loss-gradient --far 64 --horizon 256 --lr 3e-3 --steps 400 --seed 0)
BUDGETS=(128 256)

stage "setup (build)" /nonexistent-always-run bash scripts/setup.sh lococo
stage "corpus" data/.corpus-ok bash scripts/fetch-corpus.sh

stage "tokenizer" "$WORK/tokenizer.model" \
  "$LOCOCO" train-tokenizer --data data/train --out "$WORK/tokenizer.model" --vocab-size $VOCAB "${TOKENIZER_FLAGS[@]}"

pretrain() {  # two legs: without copy rows up to COPY_FROM_STEP, then with them (resumed exactly)
  local common=("${PRETRAIN_FLAGS[@]}" --tokenizer "$WORK/tokenizer.model" --data data/train
    --val data/validation --out "$WORK/pretrain" --threads "$THREADS" --resume)
  local done_steps=0
  [[ -f $WORK/pretrain/checkpoint/state.json ]] &&
    done_steps=$(node -e "console.log(require('./$WORK/pretrain/checkpoint/state.json').step)")
  if ((done_steps < COPY_FROM_STEP)); then
    "$LOCOCO" pretrain "${common[@]}" --stop-after $((COPY_FROM_STEP - done_steps)) || [[ $? == 130 ]]
  fi
  "$LOCOCO" pretrain "${common[@]}" "${COPY_FLAGS[@]}"
}
stage "pretrain" "$WORK/pretrain/model.safetensors" pretrain
printf 'pretrain\t%s (from step %s: %s)\n' "${PRETRAIN_FLAGS[*]}" $COPY_FROM_STEP "${COPY_FLAGS[*]}" > "$WORK/legs.tsv"

leg_flags() {  # SEQ-LEN BATCH STEPS LR SEED COPY-RATE PASSKEY-RATE -> the leg's own flags (words without spaces)
  echo "--seq-len $1 --batch $2 --steps $3 --lr $4 --seed $5 --copy-rate $6 --passkey-rate $7"
}
copy_leg() {  # NAME FROM then leg_flags' fields
  local name=$1 from=$2
  shift 2
  # shellcheck disable=SC2046
  "$LOCOCO" pretrain "${LEG_FLAGS[@]}" --init-from "$WORK/$from" $(leg_flags "$@") \
    --tokenizer "$WORK/tokenizer.model" --data data/train --val data/validation --out "$WORK/$name" \
    --threads "$THREADS" --resume
}
MODEL=$WORK/pretrain  # the last leg's model: what the compressors are trained on and what ships
for leg in "${COPY_LEGS[@]}"; do
  read -r -a fields <<< "$leg"
  name=${fields[0]}
  stage "pretrain $name" "$WORK/$name/model.safetensors" copy_leg "${fields[@]}"
  printf '%s\t%s --init-from %s %s\n' "$name" "${LEG_FLAGS[*]}" "${fields[1]}" "$(leg_flags "${fields[@]:2}")" >> "$WORK/legs.tsv"
  MODEL=$WORK/$name
done

train_compressor() {  # M: budget = chunk = M
  "$LOCOCO" train-retention -m "$MODEL" --data data/train --val data/validation --budget "$1" \
    --local-window $((3 * $1 / 4)) "${RETENTION_FLAGS[@]}" --out "$WORK/compressors/m$1.safetensors" \
    --threads "$THREADS" --resume
}
mkdir -p "$WORK/compressors"
for M in "${BUDGETS[@]}"; do
  stage "compressor M=$M" "$WORK/compressors/m$M.safetensors" train_compressor "$M"
done

# ---- Assemble the model directory ----------------------------------------------
mkdir -p "$DEST/compressors"
cp "$MODEL/config.json" "$MODEL/model.safetensors" "$DEST/"
cp "$WORK/tokenizer.model" "$DEST/tokenizer.model"
cp "$WORK"/compressors/m*.safetensors "$DEST/compressors/"

# ---- Evaluation (numbers for the card) -------------------------------------------
EVAL=$WORK/eval
T=$(node -e "console.log(require('./$DEST/config.json').max_position_embeddings)")
# Documents of the test split used for the card (kept small enough for 2 cores):
# every State of the Union test address and the Moby Dick test chapters joined,
# each at least T tokens long and cut to T; the long-document runs use the
# three longest of them (16k+ tokens).
EVAL_DOCS=(data/test/sotu-*.txt data/test/moby-dick-test.txt)
LONG_DOCS=($(ls -S data/test/sotu-*.txt data/test/moby-dick-test.txt | head -3))
eval_at_budget() {  # M: the T-cut test documents and passkey at 1k, T, 2T
  local policies=streaming,h2o,lococo-hh,lococo
  [[ $1 == "${BUDGETS[0]}" ]] && policies=full,$policies  # the full cache does not depend on M
  "$LOCOCO" eval ppl -m "$DEST" --data "${EVAL_DOCS[@]}" --min-tokens "$T" --max-tokens "$T" --policies "$policies" \
    --budgets "$1" --chunk "$1" --out "$EVAL/ppl-T-m$1" -q
  "$LOCOCO" eval passkey -m "$DEST" --lengths "1024,$T,$((2 * T))" --depths 0,0.25,0.5,0.75,1 --trials 2 \
    --policies "$policies" --budget "$1" --chunk "$1" --out "$EVAL/passkey-m$1" -q
}
for M in "${BUDGETS[@]}"; do
  stage "eval M=$M" "$EVAL/passkey-m$M/report.json" eval_at_budget "$M"
done
eval_long() {
  for M in "${BUDGETS[@]}"; do
    "$LOCOCO" eval ppl -m "$DEST" --data "${LONG_DOCS[@]}" --min-tokens 16384 --policies streaming,h2o,lococo-hh,lococo \
      --budgets "$M" --chunk "$M" --bucket 2048 --out "$EVAL/ppl-long-m$M" -q
  done
}
stage "eval 16k+" "$EVAL/ppl-long-m${BUDGETS[-1]}/report.json" eval_long
SLICE=tests/data/moby-dick-test-slice.txt
SLICE_PPL=$("$LOCOCO" perplexity -m "$DEST" --file "$SLICE" --chunk 512 --json -q |
  node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).perplexity.toFixed(4)))")

# ---- The model card --------------------------------------------------------------
COMPRESSOR_RECIPE="train-retention --budget M --local-window 3M/4 ${RETENTION_FLAGS[*]}" \
  node scripts/write-model-card.js "$DEST" "$WORK" "$SLICE" "$SLICE_PPL"
echo "== done: $DEST (card: $DEST/MODEL_CARD.md)"
