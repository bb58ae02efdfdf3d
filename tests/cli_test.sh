#!/usr/bin/env bash
# End-to-end checks of the anybit CLI: bad input ends with one clear message naming the
# file/rule, a non-zero exit and no output file; good input round-trips.
# usage: tests/cli_test.sh ANYBIT_EXE SOURCE_DIR
set -u
EXE=$1
SRC=$2
MODEL=$SRC/models/fmnist_resnet.pt
DATA=/usr/share/datasets/fashion-mnist
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0

# expect_error NAME FRAGMENT -- command...
expect_error() {
  local name=$1 fragment=$2
  shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$T/err")
  if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -q -- "$fragment" "$T/err" && [ ! -e "$T/q.pt" ] &&
     [ -z "$(ls "$T" | grep '\.tmp')" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $name (rc=$rc, stderr lines=$lines)"; cat "$T/err"
  fi
}

printf 'rules:\n  - {kind: conv, role: weight, spec: int8}\n  - {kind: conv, spc: int8}\n' >"$T/unknown_key.yaml"
printf 'rules:\n  - {kind: conv, role: weight, spec: int0}\n' >"$T/bad_spec.yaml"
printf 'rules:\n  - {kind: conv, role: weight, spec: int8}\n  - {match: "layer9.*", spec: int4}\n' >"$T/nomatch.yaml"
printf 'rules:\n  - {kind: relu, spec: uint8}\n' >"$T/acts.yaml"
echo "not a model" >"$T/corrupt.pt"
mkdir -p "$T/trunc"
head -c 5000 $DATA/t10k-images-idx3-ubyte.gz >"$T/trunc/t10k-images-idx3-ubyte.gz"
cp $DATA/t10k-labels-idx1-ubyte.gz "$T/trunc/"
/usr/bin/python3 -c "import numpy as np; np.save('$T/wrong.npy', np.zeros((4,3,32,32), np.float32)); np.save('$T/wrong_y.npy', np.zeros(4, np.int64))"

expect_error missing-model "/nonexistent.pt" -- "$EXE" quantize /nonexistent.pt --rule kind=conv,spec=int8 -o "$T/q.pt"
expect_error corrupt-model "corrupt.pt" -- "$EXE" quantize "$T/corrupt.pt" --rule kind=conv,spec=int8 -o "$T/q.pt"
expect_error unknown-key "unknown_key.yaml:3: rules\[1\]: unknown key 'spc'" -- "$EXE" quantize "$MODEL" --config "$T/unknown_key.yaml" -o "$T/q.pt"
expect_error bad-spec "int0" -- "$EXE" quantize "$MODEL" --config "$T/bad_spec.yaml" -o "$T/q.pt"
expect_error no-match "nomatch.yaml:3: rules\[1\]" -- "$EXE" quantize "$MODEL" --config "$T/nomatch.yaml" -o "$T/q.pt"
expect_error missing-config "nope.yaml" -- "$EXE" quantize "$MODEL" --config "$T/nope.yaml" -o "$T/q.pt"
expect_error missing-data "/nonexistent/dir" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data fmnist:/nonexistent/dir -o "$T/q.pt"
expect_error truncated-data "t10k-images-idx3-ubyte.gz" -- "$EXE" eval "$MODEL" --data "fmnist:$T/trunc:test"
expect_error wrong-shape "shape" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "npy:$T/wrong.npy:$T/wrong_y.npy" -o "$T/q.pt"
printf 'rules:\n  - {kind: relu, spec: binary}\n' >"$T/binary_relu.yaml"
expect_error binary-relu "use uint1" -- "$EXE" quantize "$MODEL" --config "$T/binary_relu.yaml" --data "fmnist:$DATA:train" --calib-batches 1 -o "$T/q.pt"
expect_error finetune-optimizer "unknown optimizer 'adagrad'" -- "$EXE" finetune "$MODEL" --data "fmnist:$DATA:train:limit=64" --optimizer adagrad -o "$T/q.pt"
expect_error finetune-resume "epoch.txt" -- "$EXE" finetune "$MODEL" --data "fmnist:$DATA:train:limit=64" --resume --checkpoint-dir "$T/none" -o "$T/q.pt"
expect_error sweep-pairs "W4X4" -- "$EXE" sweep "$MODEL" --pairs W4X4 -o "$T/sweep"
expect_error sweep-method "unknown method 'adaroundd'" -- "$EXE" sweep "$MODEL" --method adaroundd -o "$T/sweep"
# data specs with a normalization (issue 14): bad values fail before anything runs
NORM="fmnist:$DATA:train:mean=0.2860:std=0.3530"
expect_error bad-mean "data spec 'fmnist::test:mean=0.1,0.2'" -- "$EXE" eval "$MODEL" --data "fmnist::test:mean=0.1,0.2"
expect_error bad-std "std must be positive" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "fmnist::train:std=0" -o "$T/q.pt"
expect_error bad-mean-number "got 'x'" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "fmnist::train:mean=x" -o "$T/q.pt"
printf 'rules:\n  - {role: input, spec: uint8}\n' >"$T/uint_input.yaml"
expect_error strict-clipping "input.0: uint8 clips the" -- "$EXE" quantize "$MODEL" --config "$T/uint_input.yaml" --data "$NORM" --calib-batches 1 --strict -o "$T/q.pt"
# without --strict the same clipping is a warning naming the point and a spec that fits, and the model is written
if "$EXE" quantize "$MODEL" --config "$T/uint_input.yaml" --data "$NORM" --calib-batches 1 --no-progress --json \
     -o "$T/clip.pt" >"$T/clip.json" 2>"$T/clip.err" &&
   grep -q "warning: input.0: uint8 clips the .* below 0 .*use auto8" "$T/clip.err" &&
   /usr/bin/python3 -c "
import json, sys
j = json.load(open('$T/clip.json'))
p = [p for p in j['points'] if p['name'] == 'input.0'][0]
assert len(j['clipping']) == 1 and p['clipped_low'] > 0.3, j
" && [ -f "$T/clip.pt" ]; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: clipping warning"; cat "$T/clip.err" "$T/clip.json"
fi
rm -f "$T/clip.pt"
# auto8 on the same data: signed asymmetric, no warning; --dry-run shows that calibration decides
if "$EXE" quantize "$MODEL" --rule role=input,spec=auto8 --dry-run | grep -q "input.0 .*auto8 (sign: calib.)" &&
   "$EXE" quantize "$MODEL" --rule role=input,spec=auto8 --data "$NORM" --calib-batches 1 --no-progress \
     -o "$T/auto.pt" >"$T/auto.out" 2>"$T/auto.err" && grep -q "input.0 .*int8:asym (auto8)" "$T/auto.out" &&
   [ ! -s "$T/auto.err" ]; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: auto8 input"; cat "$T/auto.out" "$T/auto.err"
fi
rm -f "$T/auto.pt"
expect_error no-calib-data "calibration data" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" -o "$T/q.pt"

# good input: quantize, save, evaluate
if "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --rule kind=conv,role=weight,spec=int8:per_channel \
     --data "fmnist:$DATA:train" --calib-batches 2 -o "$T/good.pt" --no-progress >/dev/null &&
   "$EXE" eval "$T/good.pt" --data "fmnist:$DATA:test" --json --no-progress | grep -q '"top1"'; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: good quantize+eval"
fi
# dry run names the spec each point gets
if "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --dry-run | grep -q "layer1.relu1:out.*uint8"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: dry-run"
fi
# integer export and the integer engine
if "$EXE" quantize "$MODEL" --fold-bn --int32-bias --config "$SRC/examples/export_w8a8.yaml" --data "fmnist:$DATA:train" \
     --calib-batches 2 -o "$T/w8.pt" --no-progress >/dev/null &&
   "$EXE" export "$T/w8.pt" -o "$T/w8_int" >"$T/export.txt" && grep -q "15 ops" "$T/export.txt" &&
   [ -f "$T/w8_int/manifest.json" ] && [ -z "$(ls "$T" | grep '\.tmp')" ] &&
   "$EXE" --threads 2 intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=200" --reference "$T/w8.pt" --json --no-progress >"$T/intsim.json" &&
   /usr/bin/python3 -c "
import json, sys
r = json.load(open('$T/intsim.json'))
a = {l['point']: l for l in r['layer_agreement']}
assert r['samples'] == 200 and r['top1'] > 80 and r['agreement'] > 95, r
assert a['input.0']['equal'] == 100 and a['stem.2:out']['max_steps'] <= 1, a
assert all(l['overflows'] == 0 for l in r['layers'])
"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: export + intsim"; cat "$T/export.txt"
fi
# a narrow accumulator overflows and says where
if "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=20" --acc-bits 12 --overflow saturate --no-progress >"$T/narrow.txt" &&
   grep -q "12-bit saturate accumulator" "$T/narrow.txt" && grep -E "^layer3.conv2 +conv2d +no +[0-9]+ +[1-9]" -q "$T/narrow.txt"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: narrow accumulator"; cat "$T/narrow.txt"
fi
# a noise sweep: a line per level with mean +- std, the files, and --resume reading the runs back
if "$EXE" --threads 2 intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=100" --mac gauss:rel=0.1,0.5 --seeds 2 \
     -o "$T/noise" --no-progress >"$T/noise.txt" &&
   grep -Eq "^gauss:rel=0.5 +2 +[0-9.]+ ± [0-9.]+" "$T/noise.txt" &&
   [ -s "$T/noise/noise.csv" ] && [ -s "$T/noise/noise.svg" ] && [ "$(wc -l <"$T/noise/results.jsonl")" -eq 5 ] &&
   "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=100" --mac gauss:rel=0.1,0.5 --seeds 2 \
     -o "$T/noise" --resume --no-progress >"$T/noise2.txt" && diff -q "$T/noise.txt" "$T/noise2.txt" >/dev/null &&
   [ "$(wc -l <"$T/noise/results.jsonl")" -eq 5 ]; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: noise sweep"; cat "$T/noise.txt" "$T/noise2.txt"
fi
# the per-dot-product path (a model that needs every product) gives the fast path's numbers
if "$EXE" --threads 2 intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=20" --mac gauss:rel=0.2,seed=3 --json \
     --no-progress >"$T/fast.json" &&
   "$EXE" --threads 1 intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=20" --mac gauss:rel=0.2,seed=3 --json \
     --per-dot-product --no-progress >"$T/slow.json" &&
   /usr/bin/python3 -c "
import json
a, b = json.load(open('$T/fast.json')), json.load(open('$T/slow.json'))
assert a['top1'] == b['top1'], (a['top1'], b['top1'])
assert [l['mean_abs_error'] for l in a['layers']] == [l['mean_abs_error'] for l in b['layers']]
assert any(l['mean_abs_error'] > 0 for l in a['layers'])
assert [l['fast_path'] for l in b['layers'] if l['op'] == 'conv2d'] == [False] * 9
"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: per-dot-product path"
fi
expect_error noise-negative "outside" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --mac gauss:rel=0.1,-0.2
expect_error noise-two-keys "only one parameter" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --mac gauss:rel=0.1,0.2,sigma=1,2
expect_error noise-unknown-key "unknown parameter 'rate' for gauss" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --mac gauss:rate=0.1
expect_error noise-auto-no-calib "needs calibration data" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --mac adc:bits=8,range=auto
expect_error noise-resume-other "written with other options" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test:limit=50" --mac gauss:rel=0.1,0.5 --seeds 2 -o "$T/noise" --resume
mkdir -p "$T/notexport" && echo keep >"$T/notexport/file.txt"
expect_error export-float "quantize it first" -- "$EXE" export "$MODEL" -o "$T/q.pt"
expect_error export-unquantized-input "add a rule for role input" -- "$EXE" export "$T/good.pt" -o "$T/q.pt"
expect_error export-overwrite "not an anybit integer export" -- "$EXE" export "$T/w8.pt" -o "$T/notexport"
[ "$(cat "$T/notexport/file.txt")" = keep ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: export overwrote a directory"; }
expect_error export-shape "input-shape" -- "$EXE" export "$T/w8.pt" --input-shape 1,x,28 -o "$T/q.pt"
expect_error intsim-missing "manifest.json" -- "$EXE" intsim "$T/nope_int" --data "fmnist:$DATA:test"
expect_error intsim-mac "gauss" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --mac gauss:x
expect_error intsim-acc "accumulator" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --acc-bits 40
expect_error intsim-overflow "wrap or saturate" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --overflow clip
expect_error intsim-two-paths "two kernel paths" -- "$EXE" intsim "$T/w8_int" --data "fmnist:$DATA:test" --reference-kernels --per-dot-product
expect_error device "expected cpu, cuda or cuda:N" -- "$EXE" eval "$MODEL" --data "fmnist:$DATA:test" --device tpu
cp -r "$T/w8_int" "$T/broken_int"
w=$(ls "$T/broken_int" | grep weight | head -1)
head -c 100 "$T/w8_int/$w" >"$T/broken_int/$w"
expect_error intsim-truncated "$w" -- "$EXE" intsim "$T/broken_int" --data "fmnist:$DATA:test"
expect_error resume-no-dir "--resume needs --checkpoint-dir" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "fmnist:$DATA:train:limit=64" --brecq 5 --resume -o "$T/q.pt"
expect_error gptq-target-no-gptq "it needs --gptq" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "fmnist:$DATA:train:limit=64" --gptq-quantized-target -o "$T/q.pt"
expect_error ckpt-no-brecq "it needs --brecq N" -- "$EXE" quantize "$MODEL" --config "$T/acts.yaml" --data "fmnist:$DATA:train:limit=64" --checkpoint-dir "$T/ck" -o "$T/q.pt"
# mixed precision (issue 18): bad budgets are one clear error; the written config, given to
# quantize unchanged, reproduces the accuracy the search reported
expect_error search-kind "unknown budget kind 'watts'" -- "$EXE" search "$MODEL" --budget watts=3 -o "$T/search"
expect_error search-impossible "below the least the candidates allow (avg-wbits=2" -- "$EXE" search "$MODEL" --budget avg-wbits=1.5 -o "$T/search"
expect_error search-metric "unknown --metric 'fisher'" -- "$EXE" search "$MODEL" --budget avg-wbits=3 --metric fisher -o "$T/search"
expect_error search-weights "--weights: '1' is not a bit width" -- "$EXE" search "$MODEL" --budget avg-wbits=3 --weights 1,8 -o "$T/search"
SD="fmnist:$DATA:train:limit=256"
SE="fmnist:$DATA:test:limit=500"
if "$EXE" search "$MODEL" --budget avg-wbits=3 --weights 2,4,8 --uniform 4 -d "$SD" --eval "$SE" --calib-batches 2 \
     --sensitivity-samples 128 --no-progress -o "$T/search" >"$T/search.txt" &&
   "$EXE" quantize "$MODEL" -c "$T/search/config.yaml" -d "$SD" --calib-batches 2 -b 128 --fold-bn --eval "$SE" \
     --no-progress -o "$T/search.pt" >"$T/search_q.txt" &&
   /usr/bin/python3 -c "
import json, re
j = json.load(open('$T/search/pareto.json'))
row = [r for r in j['rows'] if r['config'] == 'config.yaml'][0]
assert row['avg_wbits'] <= 3.0, row
got = float(re.search(r'top-1 ([0-9.]+)%', open('$T/search_q.txt').read()).group(1))
assert abs(got - row['top1']) < 0.005, (got, row['top1'])
for f in ('pareto.csv', 'pareto.svg', 'sensitivity.json', 'configs/uniform-w4a8.yaml'):
    assert open('$T/search/' + f).read()
"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1)); echo "FAIL: search + quantize -c config.yaml"; cat "$T/search.txt" "$T/search_q.txt"
fi
expect_error search-overwrite "pass --resume" -- "$EXE" search "$MODEL" --budget avg-wbits=3 -o "$T/search"
echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
