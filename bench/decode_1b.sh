#!/usr/bin/env bash
# Inference speed on a random 1B-shaped Llama (configs/llama-1b-shape.json:
# hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocab 32000) with
# `lococo bench`: prompt tokens/s for a 512-token prompt and generation
# tokens/s at depths 0 (1 token: the CLI wants a positive depth), 4k and 16k, full cache vs lococo M = 512, each as a
# fraction of the machine's measured bandwidth and GEMM limits; for fp32 and
# bf16 weights. (build/bench_gemv compares the kernels with OpenBLAS / oneDNN.)
#
#   bash bench/decode_1b.sh            # reports in out/bench/1b-{f32,bf16}/
# Environment: LOCOCO (default build/lococo), MODEL (default out/m1b, created
# if missing: about 4.4 GB), OUT (default out/bench/1b), GEN (default 32).
# Run it on an otherwise idle machine: it measures memory bandwidth.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCOCO=${LOCOCO:-build/lococo}
MODEL=${MODEL:-out/m1b}
OUT=${OUT:-out/bench/1b}
GEN=${GEN:-32}
[[ -f $MODEL/model.safetensors ]] || "$LOCOCO" init-model --config configs/llama-1b-shape.json --out "$MODEL" --seed 1
common=(-m "$MODEL" --policies full,lococo --budget 512 --allow-untrained --prompt 512 --chunk 512 --gen "$GEN"
  --fill random-kv -q)
for dtype in f32 bf16; do
  "$LOCOCO" bench "${common[@]}" --dtype "$dtype" --context 1,4k,16k --out "$OUT-$dtype"
  cat "$OUT-$dtype/report.md"
done
