#!/usr/bin/env bash
# Read once, ask many: the whole of Moby Dick read once into a bounded cache
# and saved; then questions answered from the saved state (CLI and server),
# against the time of re-reading; and the peak RSS of `lococo perplexity`
# under a bounded cache as the input grows from 2k to 1M tokens.
#   bench/read_once.sh [OUT_DIR]      (default out/bench/read-once; needs data/: scripts/fetch-corpus.sh)
# Environment: LOCOCO (default build/lococo), BUDGET (256), RSS_SIZES (tokens, default "2000 100000 1000000").
# Writes OUT_DIR/read_once.json and OUT_DIR/read_once.md. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/bench/read-once}
LOCOCO=${LOCOCO:-build/lococo}
BUDGET=${BUDGET:-256}
RSS_SIZES=${RSS_SIZES:-"2000 100000 1000000"}
mkdir -p "$OUT"
[[ -d data/train ]] || { echo "read_once: data/ is missing: run scripts/fetch-corpus.sh" >&2; exit 1; }

# The whole book in order: etymology, extracts, chapters 1-135, epilogue (every split).
BOOK=$OUT/moby-dick.txt
cat data/train/moby-dick-etymology.txt data/train/moby-dick-extracts.txt \
  $(ls data/{train,validation,test}/moby-dick-ch[0-9]*.txt | awk -F/ '{print $NF, $0}' | sort | cut -d' ' -f2) \
  data/test/moby-dick-epilogue.txt > "$BOOK"
CACHE=(--cache lococo --budget "$BUDGET" --chunk "$BUDGET")
QUESTIONS=("Who is the captain of the Pequod?" "What does Ahab hunt?" "Who tells the story?"
           "What is the name of the ship?" "Who is Queequeg?")
ask() { printf '\n\nQuestion: %s\nAnswer:' "$1"; }

echo "read_once: reading the book once ($(wc -c < "$BOOK") bytes)" >&2
"$LOCOCO" generate -f "$BOOK" "${CACHE[@]}" -n 0 -q --json --save-state "$OUT/moby.state" > "$OUT/read.json"
: > "$OUT/questions.jsonl"
for q in "${QUESTIONS[@]}"; do
  "$LOCOCO" generate --load-state "$OUT/moby.state" -p "$(ask "$q")" -n 16 --temp 0 -q --json >> "$OUT/questions.jsonl"
done

echo "read_once: the same through the server (a named state, cache_prompt)" >&2
STATES=$OUT/states
rm -rf "$STATES"
"$LOCOCO" serve --port 0 "${CACHE[@]}" --slot-save-path "$STATES" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "http://" "$OUT/serve.log" && break; sleep 0.2; done
URL=$(grep -o "http://[0-9.:]*" "$OUT/serve.log" | head -1)
python3 - "$URL" "$BOOK" "$OUT/server.json" "${QUESTIONS[@]}" <<'PY'
import json, sys, time, urllib.request
url, book, out, questions = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3], sys.argv[4:]
def first_token(prompt, cont=False):
    """Seconds to the first streamed text, the reply's usage."""
    body = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "cache": {"state": "moby", "continue": cont}}
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0, ttft, usage = time.time(), None, None
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            if not line.startswith(b"data: {"): continue
            ev = json.loads(line[6:])
            if ttft is None and ev["choices"] and ev["choices"][0].get("text"): ttft = time.time() - t0
            if ev.get("usage"): usage = ev["usage"]
    return {"seconds_to_first_token": ttft, "seconds": time.time() - t0, "usage": usage}
read = first_token(book)  # no state yet: reads the book and keeps it as "moby"
ask = lambda q: "\n\nQuestion: %s\nAnswer:" % q
# the question alone, continuing the named state; then the whole book and the question (prefix reuse)
cont = [dict(question=q, **first_token(ask(q), cont=True)) for q in questions]
prefix = [dict(question=q, **first_token(book + ask(q))) for q in questions]
json.dump({"read": read, "continue": cont, "prefix": prefix}, open(out, "w"), indent=1)
PY
kill $SERVER; trap - EXIT

echo "read_once: peak RSS of lococo perplexity as the input grows" >&2
: > "$OUT/rss.jsonl"
for n in $RSS_SIZES; do
  text=$OUT/repeat-$n.txt
  : > "$text"
  # the book repeated until it holds about n tokens (~4.3 bytes a token on this tokenizer), then cut
  while (( $(stat -c %s "$text") < n * 43 / 10 )); do cat "$BOOK" >> "$text"; done
  "$LOCOCO" perplexity -f "$text" --cache lococo --budget 128 --chunk 128 --max-tokens "$n" -q --json >> "$OUT/rss.jsonl"
  rm -f "$text"
done

node - "$OUT" "$BUDGET" <<'JS'
const fs = require('fs'), [out, budget] = process.argv.slice(2);
const lines = f => fs.readFileSync(`${out}/${f}`, 'utf8').trim().split('\n').map(l => JSON.parse(l.slice(l.indexOf('{'))));
const read = lines('read.json')[0], qs = lines('questions.jsonl'), server = JSON.parse(fs.readFileSync(`${out}/server.json`));
const rss = lines('rss.jsonl'), stateBytes = fs.statSync(`${out}/moby.state`).size;
const report = {
  budget: +budget, book_tokens: read.prompt_tokens, read_seconds: read.prefill_seconds, read_peak_rss_bytes: read.peak_rss_bytes,
  state_file_bytes: stateBytes,
  cli_questions: qs.map(q => ({time_to_first_token_seconds: q.time_to_first_token_seconds, prompt_tokens: q.prompt_tokens, text: q.text})),
  server_read_seconds: server.read.seconds,
  server_continue: server.continue.map(q => ({question: q.question, time_to_first_token_seconds: q.seconds_to_first_token,
                                               cached_tokens: q.usage && q.usage.prompt_tokens_details.cached_tokens})),
  server_prefix: server.prefix.map(q => ({question: q.question, time_to_first_token_seconds: q.seconds_to_first_token,
                                           cached_tokens: q.usage && q.usage.prompt_tokens_details.cached_tokens})),
  perplexity_rss: rss.map(r => ({tokens: r.tokens, peak_rss_bytes: r.peak_rss_bytes, perplexity: r.perplexity})),
};
const base = rss[0].peak_rss_bytes;
report.perplexity_rss.forEach(r => r.vs_smallest = r.peak_rss_bytes / base);
fs.writeFileSync(`${out}/read_once.json`, JSON.stringify(report, null, 1) + '\n');
const ms = s => s == null ? '-' : (s * 1000).toFixed(0) + ' ms', mb = b => (b / 2 ** 20).toFixed(1) + ' MiB';
let md = `# Read once, ask many (lococo M = ${budget})\n\n`;
md += `Moby Dick, ${read.prompt_tokens} tokens: read in ${read.prefill_seconds.toFixed(1)} s, peak RSS ${mb(read.peak_rss_bytes)}, `;
md += `state file ${(stateBytes / 2 ** 20).toFixed(2)} MiB; through the server ${server.read.seconds.toFixed(1)} s.\n\n`;
md += `Time to first token of each question (16 tokens generated, greedy): CLI \`generate --load-state\`; server with `;
md += `\`"cache": {"state": "moby", "continue": true}\` and the question alone; server with the whole book and the question `;
md += `(prefix reuse: the book is sent again, its ${report.server_prefix[0].cached_tokens} tokens are neither re-read nor re-tokenised).\n\n`;
md += `| question | CLI | server, continue | server, prefix |\n|---|---|---|---|\n`;
server.continue.forEach((q, i) => md += `| ${q.question} | ${ms(qs[i].time_to_first_token_seconds)} | ${ms(q.seconds_to_first_token)} | ${ms(server.prefix[i].seconds_to_first_token)} |\n`);
md += `\nPeak RSS of \`lococo perplexity --cache lococo --budget 128\`:\n\n| tokens | peak RSS | vs the smallest |\n|---|---|---|\n`;
report.perplexity_rss.forEach(r => md += `| ${r.tokens} | ${mb(r.peak_rss_bytes)} | ${r.vs_smallest.toFixed(4)} |\n`);
fs.writeFileSync(`${out}/read_once.md`, md);
console.log(md);
JS
