# Sourced by the ablation scripts: inference_flags FLAGS... sets the array
# `infer` to the training flags that also shape inference (the evaluations of
# the trained compressor must run with them too).
inference_flags() {
  infer=()
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[$i]} in
      --score-decay | --local-window | --keep-rate | --positions) infer+=("${args[$i]}" "${args[$((i + 1))]}") ;;
      --window-last) infer+=(--window-last) ;;
    esac
  done
}
