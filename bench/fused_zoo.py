"""Where every zoo model evaluates (issue: fast evaluation for modern networks): tests/zoo.py's
models, scripted and traced, float and W8A8 (the zoo's recipe, calibrated on 8 random
images), evaluated by `anybit.evaluate` on the fused path and with fused=False on 32 random
images labelled with the float model's predictions. Prints the runtime and its note, and
flags a fused result whose top-1 differs from the interpreter's.

    OMP_NUM_THREADS=2 PYTHONPATH=python:tests ANYBIT_EXE=build/anybit .venv/bin/python bench/fused_zoo.py [names]
"""
import sys
import warnings

import torch

import anybit
import zoo

warnings.filterwarnings("ignore")
names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(zoo.ZOO)
print("| model | form | weights | runtime | top-1 fused / interpreter | note |")
print("|---|---|---|---|---|---|")
for name in names:
    torch.manual_seed(0)
    ctor, shape, _ = zoo.ZOO[name]
    m = ctor().eval()
    forms, _ = zoo._forms(m, shape)
    x = zoo._inputs(shape, 32, 7)
    with torch.no_grad():
        y = zoo._logits(m(x)).argmax(1)
    for form, sm in forms.items():
        models = {"float": sm}
        try:
            models["w8a8"] = anybit.quantize(sm, zoo._config(anybit.points(sm)), calib_data=[zoo._inputs(shape, 8, 3)],
                                             fold_bn=True)
        except Exception as e:  # noqa: BLE001 - a row
            print(f"| {name} | {form} | w8a8 | - | - | quantize: {str(e).splitlines()[0][:100]} |")
        for label, mod in models.items():
            try:
                a = anybit.evaluate(mod, [(x, y)], batch_size=32)
                b = anybit.evaluate(mod, [(x, y)], batch_size=32, fused=False)
            except Exception as e:  # noqa: BLE001 - a row
                print(f"| {name} | {form} | {label} | error | - | {str(e).splitlines()[0][:120]} |", flush=True)
                continue
            flag = " **differs**" if a["runtime"] == "onednn" and a["top1"] != b["top1"] else ""
            note = a["runtime_note"].split("; through ATen")[0]
            print(f"| {name} | {form} | {label} | {a['runtime']} | {a['top1']:.1f}% / {b['top1']:.1f}%{flag} | {note} |",
                  flush=True)
