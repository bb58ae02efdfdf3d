#!/bin/bash
# The peer table (BENCHMARKS.md "Peers"): anybit's sweep and the same configs through
# Brevitas, NNCF and AIMET (each installed from PyPI into its own venv here, never by the README's
# commands) and through torch.ao's FakeQuantize recipe (bench/pytorch_lowbit.py), 2 threads.
#
#   bash bench/peers/run.sh [OUT]        (default /tmp/anybit-peers)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/anybit-peers}
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT"
cd "$ROOT"

# Brevitas' venv uses the project venv's torch (a .pth to its site-packages): one torch, the
# same kernels for every peer.
BV="$OUT/brevitas-venv"
if [ ! -x "$BV/bin/python" ] || ! "$BV/bin/python" -c "import brevitas" 2>/dev/null; then
  rm -rf "$BV"
  "$PY" -m venv "$BV"
  "$PY" -c "import site; print(site.getsitepackages()[0])" >"$("$BV/bin/python" -c "import site; print(site.getsitepackages()[0])")/anybit-project.pth"
  "$BV/bin/pip" install -q --no-deps brevitas==0.13.4
  "$BV/bin/pip" install -q "dependencies==2.0.1" "setuptools<81" unfoldNd sympy packaging
fi

# NNCF the same way
NV="$OUT/nncf-venv"
if [ ! -x "$NV/bin/python" ] || ! "$NV/bin/python" -c "import nncf" 2>/dev/null; then
  rm -rf "$NV"
  "$PY" -m venv "$NV"
  "$PY" -c "import site; print(site.getsitepackages()[0])" >"$("$NV/bin/python" -c "import site; print(site.getsitepackages()[0])")/anybit-project.pth"
  "$NV/bin/pip" install -q nncf==3.4.0
fi

# AIMET the same way (a pure-Python wheel; its other dependencies from PyPI)
AV="$OUT/aimet-venv"
if [ ! -x "$AV/bin/python" ] || ! "$AV/bin/python" -c "import aimet_torch" 2>/dev/null; then
  rm -rf "$AV"
  "$PY" -m venv "$AV"
  "$PY" -c "import site; print(site.getsitepackages()[0])" >"$("$AV/bin/python" -c "import site; print(site.getsitepackages()[0])")/anybit-project.pth"
  "$AV/bin/pip" install -q aimet-torch==2.42.0
fi

PAIRS=W8A8,W4A4,W3A3,W2A4,W2A2
OMP_NUM_THREADS=2 "$NV/bin/python" bench/peers/nncf_ptq.py --pairs W8A8 --threads 2 >/dev/null 2>&1 || true  # builds its extension
OMP_NUM_THREADS=2 "$NV/bin/python" bench/peers/nncf_ptq.py --pairs "$PAIRS" --threads 2 2>/dev/null | grep '^{' >"$OUT/nncf.jsonl"
OMP_NUM_THREADS=2 "$AV/bin/python" bench/peers/aimet_ptq.py --pairs "$PAIRS" --threads 2 2>/dev/null | grep '^{' >"$OUT/aimet.jsonl"
OMP_NUM_THREADS=2 "$BV/bin/python" bench/peers/brevitas_ptq.py --pairs "$PAIRS" --threads 2 2>/dev/null >"$OUT/brevitas.jsonl"
OMP_NUM_THREADS=2 "$PY" bench/pytorch_lowbit.py --threads 2 >"$OUT/torch_ao.txt" 2>/dev/null
rm -rf "$OUT/anybit"
build/anybit --threads 2 sweep models/fmnist_resnet.pt --pairs "$PAIRS" --method mse,gptq --first-last-8bit \
  -d fmnist::train --eval fmnist::test -o "$OUT/anybit" --no-progress >"$OUT/anybit.txt"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/brevitas.jsonl") if l.strip()]
sweep = json.load(open(f"{out}/anybit/results.json"))
print("| tool, method | " + " | ".join(p for p in "W8A8,W4A4,W3A3,W2A4,W2A2".split(",")) + " |")
print("|---|" + "---:|" * 5)
for m in ("mse", "gptq"):
    cells = []
    for p in "W8A8,W4A4,W3A3,W2A4,W2A2".split(","):
        w, a = int(p[1:p.index("A")]), int(p[p.index("A") + 1:])
        r = [x for x in sweep if x.get("method") == m and x.get("wbits") == w and x.get("abits") == a]
        cells.append(f"{r[0]['top1']:.2f} ({r[0]['seconds']:.0f} s)" if r else "")
    print(f"| anybit, {m} | " + " | ".join(cells) + " |")
for m in ("calibrate", "bias_correction", "gptq", "mse", "mse_gptq"):
    cells = []
    for p in "W8A8,W4A4,W3A3,W2A4,W2A2".split(","):
        r = [x for x in rows if x["method"] == m and x["pair"] == p]
        cells.append(f"{r[0]['top1']:.2f} ({r[0]['seconds']:.0f} s)" if r else "")
    print(f"| Brevitas 0.13.4, {m} | " + " | ".join(cells) + " |")
nncf = [json.loads(l) for l in open(f"{out}/nncf.jsonl") if l.strip()]
cells = []
for p in "W8A8,W4A4,W3A3,W2A4,W2A2".split(","):
    r = [x for x in nncf if x["pair"] == p]
    cells.append("refused" if r and "error" in r[0] else f"{r[0]['top1']:.2f} ({r[0]['seconds']:.0f} s)" if r else "")
print("| NNCF 3.4.0, quantize | " + " | ".join(cells) + " |")
for x in nncf:
    if "error" in x:
        print(f"NNCF {x['pair']}: {x['error']}")
        break
aimet = [json.loads(l) for l in open(f"{out}/aimet.jsonl") if l.strip()]
for m in ("ptq", "adaround"):
    cells = []
    for p in "W8A8,W4A4,W3A3,W2A4,W2A2".split(","):
        r = [x for x in aimet if x["method"] == m and x["pair"] == p]
        cells.append("refused" if r and "error" in r[0] else f"{r[0]['top1']:.2f} ({r[0]['seconds']:.0f} s)" if r else "")
    print(f"| AIMET 2.42.0, {m} | " + " | ".join(cells) + " |")
for x in aimet:
    if "error" in x:
        print(f"AIMET {x['pair']} {x['method']}: {x['error']}")
print()
print(open(f"{out}/torch_ao.txt").read())
PYEOF
