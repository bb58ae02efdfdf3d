#!/usr/bin/env bash
# Issue 14 end to end: the second shipped model (models/fmnist_resnet_norm.pt, trained on
# torchvision-normalized inputs, (x - 0.2860) / 0.3530) goes through eval, sweep, demo,
# quantize, export, intsim and finetune with only a data spec that names its normalization.
# usage: tests/normalized_model_test.sh ANYBIT_EXE SOURCE_DIR
set -u
EXE=$1
SRC=$2
M=$SRC/models/fmnist_resnet_norm.pt
MT=$SRC/models/fmnist_resnet_norm_traced.pt
NORM=":mean=0.2860:std=0.3530"
TRAIN="fmnist::train$NORM"
TEST="fmnist::test$NORM"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export ANYBIT_NO_PROGRESS=1
pass=0
fail=0
PY=/usr/bin/python3

# check NAME PYTHON-ASSERTIONS: runs the assertions with j1..j9 bound to $T/1.json..$T/9.json
check() {
  local name=$1 code=$2
  if $PY - "$T" <<PYEOF
import json, os, sys
T = sys.argv[1]
J = {int(f[0]): json.load(open(os.path.join(T, f))) for f in os.listdir(T) if f[0].isdigit() and f.endswith(".json")}
meta = json.load(open("$SRC/models/fmnist_resnet_norm.json"))
float_top1 = 100.0 * meta["test_accuracy"]
$code
PYEOF
  then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $name"
  fi
}

# float accuracy, scripted and traced, with the normalization in the spec; without it the model reads garbage
"$EXE" eval "$M" --data "$TEST" --json >"$T/1.json" || echo "eval failed"
"$EXE" eval "$MT" --data "$TEST" --json >"$T/2.json" || echo "eval traced failed"
"$EXE" eval "$M" --data "fmnist::test:limit=2000" --json >"$T/3.json" || echo "eval raw failed"
check "float accuracy with :mean/:std" "
assert abs(J[1]['top1'] - float_top1) < 0.005 and abs(J[2]['top1'] - float_top1) < 0.005, (J[1], J[2], float_top1)
assert J[3]['top1'] < float_top1 - 20, J[3]"

# the sweep with default flags (minmax) at W8A8, and the demo (mse, W8A8..W2A2) with the model's data
"$EXE" sweep "$M" --pairs W8A8 --data "$TRAIN" --eval "$TEST" -o "$T/sweep" >"$T/sweep.out" 2>&1 || { echo "sweep failed"; cat "$T/sweep.out"; }
cp "$T/sweep/results.json" "$T/4.json" 2>/dev/null
"$EXE" demo --model "$M" --data "$TRAIN" --eval "$TEST" -o "$T/demo" >"$T/demo.out" 2>&1 || { echo "demo failed"; cat "$T/demo.out"; }
cp "$T/demo/results.json" "$T/5.json" 2>/dev/null
check "sweep W8A8 within 0.3 and demo W4A4 (mse) within 3 of float" "
w8 = [r for r in J[4] if r['wbits'] == 8 and r['abits'] == 8][0]
assert w8['top1'] >= float_top1 - 0.3, w8
rows = {(r['method'], r['wbits']): r['top1'] for r in J[5]}
assert rows[('mse', 8)] >= float_top1 - 0.3 and rows[('mse', 4)] >= float_top1 - 3.0, rows
assert rows[('mse', 2)] > 10.5, rows  # W2A2 well above chance: the input is no longer clipped to 0"

# export at W8A8 and the integer engine against the fake-quant model
"$EXE" quantize "$M" --fold-bn --int32-bias --config "$SRC/examples/export_w8a8.yaml" --data "$TRAIN" \
  --json -o "$T/w8a8.pt" >"$T/6.json" 2>"$T/q.err" || { echo "quantize failed"; cat "$T/q.err"; }
"$EXE" export "$T/w8a8.pt" -o "$T/w8a8_int" --json >"$T/7.json" || echo "export failed"
"$EXE" intsim "$T/w8a8_int" --data "$TEST" --reference "$T/w8a8.pt" --json >"$T/8.json" || echo "intsim failed"
check "W8A8 export: signed input, engine agrees with the fake-quant model on >= 99.5%" "
inp = [p for p in J[6]['points'] if p['name'] == 'input.0'][0]
assert inp['spec'] == 'int8:asym' and inp['auto_spec'] == 'auto8' and inp['clipped_low'] == 0, inp
assert J[6]['clipping'] == [], J[6]['clipping']
assert J[8]['agreement'] >= 99.5 and J[8]['top1'] >= float_top1 - 0.5, {k: J[8][k] for k in ('agreement', 'top1')}"
[ -s "$T/q.err" ] && { echo "unexpected stderr from quantize:"; cat "$T/q.err"; fail=$((fail + 1)); }

# fine-tuning takes the normalized data too: 100 steps of W2A2 LSQ lift the calibrated model
"$EXE" quantize "$M" --fold-bn --config "$SRC/examples/w2a2_lsq_add8.yaml" --data "$TRAIN" -o "$T/w2.pt" \
  --eval "$TEST" --json >"$T/9.json" 2>/dev/null || echo "quantize w2a2 failed"
"$EXE" finetune "$T/w2.pt" --data "fmnist::train:limit=6400$NORM" --eval "$TEST" --epochs 1 -b 64 \
  -o "$T/w2_ft.pt" >"$T/ft.out" 2>&1 || { echo "finetune failed"; cat "$T/ft.out"; }
"$EXE" eval "$T/w2_ft.pt" --data "$TEST" --json >"$T/0.json" || echo "eval finetuned failed"
check "finetune W2A2 on normalized data improves on calibration" "
assert J[0]['top1'] > J[9]['eval']['top1'] + 10, (J[9]['eval']['top1'], J[0]['top1'])"

echo "normalized model: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -eq 4 ]
