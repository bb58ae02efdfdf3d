#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md on this machine, one after another (each compares
# anybit with its peer inside one run). `make bench` builds first. About 15 minutes on 2
# cores, and 4 more for the two evaluation benchmarks at the end; THREADS (default 2) sets
# the thread count where a benchmark takes one.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
# the project venv (scripts/install-deps.sh) where it exists: its torch is the one anybit was built for
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo /usr/bin/python3)}
OUT=${OUT:-build/bench}
mkdir -p "$OUT"
echo "== fake-quant kernels against ATen ($THREADS threads)"
ANYBIT_BENCH_THREADS=$THREADS build/bench_fake_quant --benchmark_min_time=1 --benchmark_format=console \
  --benchmark_out="$OUT/fq.json" --benchmark_out_format=json >/dev/null
$PY bench/fake_quant_ratios.py "$OUT/fq.json"
echo "== W4A4 calibrate + evaluate against the stock PyTorch recipe"
$PY bench/w4a4_vs_pytorch.py --threads "$THREADS"
echo "== low-bit table of the stock PyTorch recipe"
$PY bench/pytorch_lowbit.py --threads "$THREADS"
echo "== QAT epoch against a float training epoch"
$PY bench/qat_vs_float.py --threads "$THREADS"
echo "== integer engine against LibTorch float inference"
$PY bench/intsim_vs_float.py --threads "1,$THREADS"
echo "== modern networks: fused evaluation against the interpreter and PyTorch eager"
PYTHONPATH=python:tests ANYBIT_EXE=build/anybit OMP_NUM_THREADS=$THREADS $PY bench/modern_eval.py --threads "$THREADS"
echo "== where every zoo model evaluates, fused or in the interpreter"
PYTHONPATH=python:tests ANYBIT_EXE=build/anybit OMP_NUM_THREADS=$THREADS $PY bench/fused_zoo.py
