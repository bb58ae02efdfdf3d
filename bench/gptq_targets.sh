#!/usr/bin/env bash
# GPTQ's two objectives on the shipped model (BENCHMARKS.md "GPTQ"): the float model's layer
# outputs (default) against the paper's (--gptq-quantized-target), at the sweep's configs
# with the first conv, the last linear and the input at 8 bits; 2 threads.
#   bash bench/gptq_targets.sh [build/anybit]
set -euo pipefail
A=${1:-build/anybit}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo "| pair | float target (default) | quantized target (paper) |"
echo "|---|---:|---:|"
for pair in 4,4 3,3 2,4 2,2; do
  w=${pair%,*}; a=${pair#*,}
  cat >"$T/c.yaml" <<YAML
weight_calibrator: mse
calibrator: mse
rules:
  - {kind: [conv, linear], role: weight, spec: 'int$w:per_channel'}
  - {role: input, spec: 'auto$a', optional: true}
  - {kind: [relu, pool], spec: 'auto$a', optional: true}
  - {kind: add, spec: 'int$a', optional: true}
  - {kind: conv, role: weight, position: first, spec: 'int8:per_channel'}
  - {kind: linear, role: weight, position: last, spec: 'int8:per_channel', optional: true}
  - {role: input, spec: auto8, optional: true}
YAML
  row="| W${w}A${a} |"
  for flag in "" --gptq-quantized-target; do
    acc=$("$A" --threads 2 quantize models/fmnist_resnet.pt -c "$T/c.yaml" -d fmnist::train --calib-batches 8 -b 128 \
          --fold-bn --gptq $flag --eval fmnist::test --no-progress -o "$T/q.pt" 2>/dev/null | grep -o 'top-1 [0-9.]*%')
    row="$row ${acc#top-1 } |"
  done
  echo "$row"
done
