#!/usr/bin/env bash
# The integer engine's tests (and base/'s .npy reader's) under AddressSanitizer + UndefinedBehaviorSanitizer, then the
# libFuzzer target over the .npy parser, the manifest loader and the engine for a bounded
# time, seeded with a real export. Built with Clang in its own tree (plain C++17, no
# LibTorch: about a minute on 2 cores).
# usage: tests/intsim_sanitize.sh BUILD_DIR SOURCE_DIR [FUZZ_SECONDS]
set -euo pipefail
BUILD=$1
SRC=$2
SECONDS_FUZZ=${3:-45}
CXX=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$CXX" ]; then
  echo "intsim_sanitize: clang++ not found (scripts/install-deps.sh installs clang-14)" >&2
  exit 1
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
cmake -S "$SRC/src/anybit/intsim" -B "$BUILD" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >"$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j2 --target anybit_intsim_test anybit_base_test fuzz_npy_manifest >>"$BUILD.log" 2>&1 || { tail -40 "$BUILD.log"; exit 1; }
"$BUILD/anybit_intsim_test" --gtest_brief=1
"$BUILD/base/anybit_base_test" --gtest_brief=1  # the .npy reader the engine loads its arrays with

# Seed corpus: small valid models in the fuzzer's input format (manifest, "\n--\n", the
# one .npy every array of the manifest resolves to), one per kind of op.
CORPUS="$BUILD/corpus"
rm -rf "$CORPUS" && mkdir -p "$CORPUS"
/usr/bin/python3 - "$CORPUS" <<'PY'
import io, json, sys
import numpy as np
q = {"scale": 0.05, "zero_point": 0, "qmin": -128, "qmax": 127}
def seed(name, in_shape, ops, out, w):
    m = {"format": "anybit-int", "version": 1, "inputs": [dict(name="x", shape=in_shape, **q)],
         "ops": ops, "outputs": [{"name": out}]}
    b = io.BytesIO(); np.save(b, w)
    open(f"{sys.argv[1]}/{name}", "wb").write(json.dumps(m).encode() + b"\n--\n" + b.getvalue())
mq = dict(m0=1276054934, shift=3, **q)
w = np.arange(-4, 4, dtype=np.int8).reshape(2, 2, 2, 1)
seed("conv", [2, 4, 4], [dict(op="conv2d", name="c", inputs=["x"], output="c:out", out_channels=2, weight="w.npy",
     weight_scale=0.1, weight_zero_point=0, kernel=[2, 1], stride=1, padding=[1, 0], groups=1, **mq)], "c:out", w)
seed("linear", [2], [dict(op="linear", name="l", inputs=["x"], output="l:out", out_features=2, weight="w.npy",
     weight_scale=[0.1, 0.2], weight_zero_point=0, **mq)], "l:out", np.ones((2, 2), np.int8))
seed("add_pool", [2, 4, 4], [
    dict(op="add", name="a", inputs=["x", "x"], output="a:out", input_m0=[1 << 30, 1 << 30], input_shift=[0, 0],
         left_shift=20, **mq),
    dict(op="relu", name="r", inputs=["a:out"], output="r:out"),
    dict(op="maxpool2d", name="p", inputs=["r:out"], output="p:out", kernel=2),
    dict(op="avgpool2d", name="v", inputs=["p:out"], output="v:out", kernel=2, **mq),
    dict(op="global_avgpool", name="g", inputs=["v:out"], output="g:out", **mq),
    dict(op="flatten", name="f", inputs=["g:out"], output="f:out"),
    dict(op="concat", name="k", inputs=["f:out", "f:out"], output="k:out", axis=1, input_m0=[1 << 30, 1 << 30],
         input_shift=[0, 0], **q)], "k:out", np.zeros(1, np.int8))
seed("adaptive_pool", [2, 5, 4], [
    dict(op="adaptive_avgpool2d", name="a", inputs=["x"], output="a:out", output_size=[3, 6], **mq),
    dict(op="adaptive_avgpool2d", name="b", inputs=["a:out"], output="b:out", output_size=[2, 2],
         m0=[1276054934, 1276054934, 1073741824, 1073741824], shift=[3, 3, 2, 2], **q)], "b:out", np.zeros(1, np.int8))
PY
"$BUILD/fuzz_npy_manifest" -max_total_time="$SECONDS_FUZZ" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$CORPUS" 2>"$BUILD/fuzz.log" || { tail -60 "$BUILD/fuzz.log"; exit 1; }
grep -E "stat::number_of_executed_units|Done" "$BUILD/fuzz.log" | tail -2
echo "intsim_sanitize: tests clean under ASan/UBSan, fuzzed ${SECONDS_FUZZ} s clean"
