# Sourced by the training benchmarks: sets DATA (the corpus when fetched, else
# the repository's own docs and sources) and makes a random model with the tiny
# shapes (configs/tiny-6.5m.json) in $OUT/model. Needs OUT; LOCOCO defaults to
# build/lococo.
LOCOCO=${LOCOCO:-build/lococo}
mkdir -p "$OUT"
if [[ -d data/train ]]; then DATA=data/train; else
  DATA=$OUT/text
  mkdir -p "$DATA"
  cat README.md include/lococo/*.h src/*.cpp > "$DATA/all.txt"
fi
[[ -f $OUT/model/config.json ]] || $LOCOCO init-model --config configs/tiny-6.5m.json --out "$OUT/model" \
  --tokenizer-text "$(ls "$DATA"/*.txt | head -1)" > /dev/null
