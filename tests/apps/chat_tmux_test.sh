#!/usr/bin/env bash
# `lococo chat` driven through tmux as a person would: two turns, /save, quit,
# a new process that /loads the conversation, a third turn. The conversation
# then saved equals the one of an uninterrupted session of the same three
# turns (sampled with one seed), so the third turn was answered with the first two in the
# cache. Also: the reply shows on screen, and the Up arrow recalls a line.
#   tests/apps/chat_tmux_test.sh LOCOCO_BINARY        (exit 77: tmux missing, skipped)
set -euo pipefail
LOCOCO=$1
command -v tmux > /dev/null || { echo "tmux is not installed: skipped"; exit 77; }
dir=$(mktemp -d)
export HOME=$dir  # the line history file goes here
T=(tmux -S "$dir/tmux.sock")
trap '"${T[@]}" kill-server 2> /dev/null || true; sleep 0.2; rm -rf "$dir" 2> /dev/null || true' EXIT
# Sampled (seeded): a reply depends on every logit, so a context lost in /load shows.
CHAT="$LOCOCO chat --temp 1 --seed 7 -n 16 --cache streaming --budget 64 --chunk 32"

screen() { "${T[@]}" capture-pane -p -J -t "$1" -S -2000; }
count() { screen "$1" | grep -c -F -- "$2" || true; }
wait_for() {  # SESSION TEXT N: until TEXT shows N times (90 s at most)
  for _ in $(seq 900); do
    (($(count "$1" "$2") >= $3)) && return 0
    sleep 0.1
  done
  echo "FAIL: timed out waiting for '$2' x$3 in session $1; the screen:"
  screen "$1"
  exit 1
}
start() { "${T[@]}" new-session -d -s "$1" -x 200 -y 50 "$CHAT; sleep 600"; wait_for "$1" "lococo chat:" 1; }
say() { "${T[@]}" send-keys -t "$1" -l "$2"; "${T[@]}" send-keys -t "$1" Enter; }
turn() {  # SESSION TEXT: a line, then wait for the reply's status line
  local n=$(($(count "$1" "tokens read;") + 1))
  say "$1" "$2"
  wait_for "$1" "tokens read;" "$n"
}
messages() {  # STATE_FILE: the conversation /save wrote (safetensors metadata "extra")
  python3 - "$1" << 'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
print(json.dumps(json.loads(meta["extra"])["messages"]))
PY
}

start a
turn a "Tell me about the sea."
turn a "And the whale?"
turn a "What did I ask first?"
say a "/save $dir/a.state"
wait_for a "saved 6 messages" 1

start b
turn b "Tell me about the sea."
turn b "And the whale?"
say b "/save $dir/b.state"
wait_for b "saved 4 messages" 1
say b "/quit"
"${T[@]}" kill-session -t b

start c
say c "/load $dir/b.state"
wait_for c "loaded 4 messages" 1
turn c "What did I ask first?"
say c "/save $dir/c.state"
wait_for c "saved 6 messages" 1
say c "/help"
wait_for c "commands: /save" 2
"${T[@]}" send-keys -t c Up Enter  # the history recalls /help
wait_for c "commands: /save" 3

# The cache read as much in both: "[.. tokens, .. tok/s; N tokens read; ...]" of the third reply.
read_a=$(screen a | grep -o -- "[0-9]* tokens read;" | tail -1)
read_c=$(screen c | grep -o -- "[0-9]* tokens read;" | tail -1)
[[ "$read_a" == "$read_c" ]] || { echo "FAIL: uninterrupted '$read_a', after /load '$read_c'"; exit 1; }
expected=$(messages "$dir/a.state")
got=$(messages "$dir/c.state")
if [[ "$got" != "$expected" ]]; then
  echo "FAIL: the conversation continued after /load differs from the uninterrupted one"
  echo "uninterrupted: $expected"
  echo "after /load:   $got"
  exit 1
fi
reply=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); print(m[5]["content"].strip().splitlines()[0] if m[5]["content"].strip() else "")' "$got")
[[ -n "$reply" ]] || { echo "FAIL: the third reply is empty"; exit 1; }
screen c | grep -q -F -- "$reply" || { echo "FAIL: the third reply '$reply' is not on the screen"; screen c; exit 1; }
echo "chat through tmux: 3 turns across /save, a restart and /load equal the uninterrupted session ('$reply')"
exit 0
