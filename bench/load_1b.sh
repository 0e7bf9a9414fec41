#!/usr/bin/env bash
# Load time and peak RSS of a random 1B-shaped Llama (configs/llama-1b-shape.json)
# per weight file: the safetensors directory (fp32) and GGUF exports in F32,
# F16, BF16, Q8_0 and Q4_0 (each dequantised/converted to fp32 on load), measured
# by `lococo info --json` (one fresh process per file, the page cache warmed by
# a first untimed load). Prints a table with each load time as a ratio to the
# safetensors load and writes OUT/report.json.
#
#   bash bench/load_1b.sh
# Environment: LOCOCO (default build/lococo), MODEL (default out/m1b, created if
# missing, 4.4 GB), OUT (default out/bench/load-1b; the GGUF files go there, ~6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCOCO=${LOCOCO:-build/lococo}
MODEL=${MODEL:-out/m1b}
OUT=${OUT:-out/bench/load-1b}
mkdir -p "$OUT"
[[ -f $MODEL/model.safetensors ]] || "$LOCOCO" init-model --config configs/llama-1b-shape.json --out "$MODEL" --seed 1

sources=("$MODEL")
for type in f32 f16 bf16 q8_0 q4_0; do
  file=$OUT/m1b-$type.gguf
  [[ -f $file ]] || "$LOCOCO" export-gguf "$MODEL" "$file" --type "$type"
  sources+=("$file")
done
results=()
for src in "${sources[@]}"; do
  "$LOCOCO" info "$src" --json > /dev/null  # warm the page cache: measure parsing and conversion, not the disk
  results+=("$("$LOCOCO" info "$src" --json)")
done
printf '%s\n' "${results[@]}" | node -e '
  const fs = require("fs");
  const runs = require("fs").readFileSync(0, "utf8").trim().split(/\n(?=\{)/).map(JSON.parse);
  const base = runs[0].load_seconds;
  const rows = runs.map((r) => ({file: r.dir, format: r.format, load_seconds: r.load_seconds,
    ratio_to_safetensors: r.load_seconds / base, peak_rss_mib: r.peak_rss_bytes / 1048576,
    file_mib: fs.statSync(r.dir).isDirectory() ? fs.statSync(r.dir + "/model.safetensors").size / 1048576
                                               : fs.statSync(r.dir).size / 1048576}));
  console.log("| file | format | size MiB | load s | x safetensors | peak RSS MiB |\n|---|---|---|---|---|---|");
  for (const r of rows)
    console.log(`| ${r.file} | ${r.format} | ${r.file_mib.toFixed(0)} | ${r.load_seconds.toFixed(2)} | ` +
                `${r.ratio_to_safetensors.toFixed(2)} | ${r.peak_rss_mib.toFixed(0)} |`);
  fs.writeFileSync(process.argv[1] + "/report.json.tmp", JSON.stringify({runs: rows}, null, 2));
  fs.renameSync(process.argv[1] + "/report.json.tmp", process.argv[1] + "/report.json");
' "$OUT"
echo "wrote $OUT/report.json"
