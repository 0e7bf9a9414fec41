#!/usr/bin/env bash
# Data-parallel compressor training on this machine: tokens/s with 1 rank vs 2
# ranks (lococo launch) at the same global batch, and the all-reduce time per
# step (comm_seconds in the metrics). Writes out/bench/dist_throughput.json.
#   bench/dist_throughput.sh [STEPS]
# On 2 cores two ranks share the same cores, so little gain is expected.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20}
OUT=out/bench/dist
source bench/tiny_setup.sh
ARGS=(train-compressor -m "$OUT/model" --data "$DATA" --budget 128 --chunk 128 --segments 4 --sequences 2
  --steps "$STEPS" -q)
field() { node -e "const l=require('fs').readFileSync('$1','utf8').trim().split('\n').map(JSON.parse).filter(x=>x.loss!==undefined);
  const a=l[0], z=l[l.length-1]; console.log(JSON.stringify({tps:z.tokens_per_second, comm:(z.comm_seconds-a.comm_seconds)/Math.max(1,l.length-1)}))"; }

rm -rf "$OUT"/one.safetensors*  # the file and its .ckpt directory
$LOCOCO "${ARGS[@]}" --out "$OUT/one.safetensors" > /dev/null
one=$(field "$OUT/one.safetensors.metrics.jsonl")
rm -rf "$OUT"/two.safetensors*
$LOCOCO launch -n 2 -- "${ARGS[@]}" --out "$OUT/two.safetensors" > /dev/null
two=$(field "$OUT/two.safetensors.metrics.jsonl")

node -e "
const one=$one, two=$two;
const r={steps:$STEPS, global_sequences:2, one_rank:{tokens_per_second:one.tps},
  two_ranks:{tokens_per_second:two.tps, allreduce_seconds_per_step:two.comm}, speedup:two.tps/one.tps};
console.log('| ranks | tokens/s | all-reduce s/step |\n|---|---|---|');
console.log('| 1 | '+one.tps.toFixed(0)+' | - |');
console.log('| 2 | '+two.tps.toFixed(0)+' | '+two.comm.toFixed(4)+' |');
console.log('2 ranks / 1 rank: '+r.speedup.toFixed(2)+'x');
const fs=require('fs'); fs.writeFileSync('$OUT/../dist_throughput.json.tmp', JSON.stringify(r,null,2));
fs.renameSync('$OUT/../dist_throughput.json.tmp', '$OUT/../dist_throughput.json');"
