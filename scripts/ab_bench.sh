#!/usr/bin/env bash
# Side-by-side generation speed of two lococo binaries on a noisy machine:
# runs `lococo bench` with each in turn, ROUNDS times (A B A B ...), and prints
# every round's gen tok/s and % bandwidth, then the median and best of each.
# Alternating puts both under the same minute-to-minute bandwidth.
#
#   scripts/ab_bench.sh OLD_BINARY NEW_BINARY [lococo bench flags...]
# Environment: ROUNDS (default 5). Default flags: the random 1B model out/m1b,
# bf16, full cache, depth 1, 16-token prompt, 32 generated tokens.
set -euo pipefail
if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
A=$1 B=$2
shift 2
ROUNDS=${ROUNDS:-5}
flags=("$@")
[[ ${#flags[@]} -gt 0 ]] || flags=(-m out/m1b --dtype bf16 --policies full --allow-untrained --prompt 16 --chunk 512
  --gen 32 --fill random-kv --context 1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
  for side in A B; do
    bin=$A
    [[ $side == B ]] && bin=$B
    "$bin" bench "${flags[@]}" -q --out "$tmp/$side" >/dev/null 2>&1
    python3 - "$tmp/$side/report.json" "$side" "$r" >>"$tmp/rows" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
for p in rep["points"]:
    print(sys.argv[2], sys.argv[3], p["policy"], p["depth"], f'{p["gen_tokens_per_second"]:.2f}',
          f'{100 * p["gen_bandwidth_fraction"]:.1f}', f'{rep["machine"]["bandwidth_gb_s"]:.1f}')
PY
  done
  tail -n 2 "$tmp/rows"  # side round policy depth gen-tok/s %-bandwidth GB/s
done
python3 - "$tmp/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for side in "AB":
    v = [float(r[4]) for r in rows if r[0] == side]
    f = [float(r[5]) for r in rows if r[0] == side]
    print(f"{side}: gen tok/s median {statistics.median(v):.2f} best {max(v):.2f}; "
          f"% bandwidth median {statistics.median(f):.0f} best {max(f):.0f}")
PY
