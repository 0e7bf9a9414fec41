#!/usr/bin/env bash
# Training throughput on the tiny shapes (configs/tiny-6.5m.json): tokens/s of
# pretraining, compressor training and LoRA tuning, measured one after the other
# in one run. Writes out/bench/train_throughput.json.
#   bench/train_throughput.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-6}
OUT=out/bench/train
source bench/tiny_setup.sh
rate() { grep -o '"tokens_per_second":[0-9.e+]*' "$1" | tail -1 | cut -d: -f2; }

rm -rf "$OUT/pretrain"
$LOCOCO pretrain --config configs/tiny-6.5m.json --tokenizer "$OUT/model/tokenizer.model" --data "$DATA" \
  --out "$OUT/pretrain" --steps "$STEPS" --batch 1 --seq-len 1024 --passkey-rate 0 --eval-every 0 --save-every 0 -q
pre=$(rate "$OUT/pretrain/metrics.jsonl")

rm -rf "$OUT/compressor"*
$LOCOCO train-compressor -m "$OUT/model" --data "$DATA" --budget 128 --chunk 128 --segments 8 --steps "$STEPS" \
  --out "$OUT/compressor.safetensors" -q > /dev/null
comp=$(rate "$OUT/compressor.safetensors.metrics.jsonl")

rm -rf "$OUT/tune"
$LOCOCO tune -m "$OUT/model" --data "$DATA" --budget 128 --chunk 128 --segments 8 --steps "$STEPS" \
  --out "$OUT/tune" -q > /dev/null
tune=$(rate "$OUT/tune/compressor.safetensors.metrics.jsonl")

printf '{"config":"configs/tiny-6.5m.json","steps":%s,"pretrain_T1024_tokens_per_second":%s,"train_compressor_M128_B128_tokens_per_second":%s,"tune_lora_M128_B128_tokens_per_second":%s}\n' \
  "$STEPS" "$pre" "$comp" "$tune" | tee out/bench/train_throughput.json
