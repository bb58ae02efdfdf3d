"""Turns bench_fake_quant's JSON (--benchmark_format=json) into the ratio table of
BENCHMARKS.md: python3 bench/fake_quant_ratios.py RESULT.json"""
import json
import sys


def main():
    runs = {b["name"].split("/")[0]: b["real_time"] for b in json.load(open(sys.argv[1]))["benchmarks"]
            if b.get("run_type", "iteration") == "iteration"}
    copy, clone = runs["BM_Copy"], runs["BM_Clone"]
    rows = [
        ("per-tensor forward", "BM_AtenPerTensor", "BM_AnybitPerTensor", clone),
        ("per-tensor forward, into a preallocated output", "BM_AtenPerTensor", "BM_AnybitPerTensorOut", copy),
        ("per-channel forward", "BM_AtenPerChannel", "BM_AnybitPerChannel", clone),
        ("per-channel forward, into a preallocated output", "BM_AtenPerChannel", "BM_AnybitPerChannelOut", copy),
        ("per-tensor forward+backward (STE)", "BM_AtenPerTensorFwdBwd", "BM_AnybitPerTensorFwdBwd", None),
        ("per-channel forward+backward (STE)", "BM_AtenPerChannelFwdBwd", "BM_AnybitPerChannelFwdBwd", None),
        ("per-tensor forward+backward, LSQ step gradient", "BM_AtenLsqPerTensorFwdBwd", "BM_AnybitLsqPerTensorFwdBwd", None),
    ]
    print("| kernel (16M floats) | ATen ms | anybit ms | speed-up vs ATen | anybit bandwidth vs copy |")
    print("|---|---:|---:|---:|---:|")
    for name, aten, ours, peer in rows:
        a, o = runs[aten], runs[ours]
        bw = f"{peer / o:.2f} of {'clone' if peer == clone else 'copy_'}" if peer else "-"
        print(f"| {name} | {a:.1f} | {o:.1f} | {a / o:.1f}x | {bw} |")
    print(f"\ncopy_ into a preallocated tensor: {copy:.2f} ms; clone (allocating copy): {clone:.2f} ms")
    formats = [("fp8:e4m3, per tensor", "BM_MinifloatE4m3"), ("fp4:e2m1, per channel", "BM_MinifloatE2m1PerChannel"),
               ("mxfp8:e4m3 (blocks of 32)", "BM_Mxfp8"), ("mxfp4", "BM_Mxfp4"), ("mxint8", "BM_Mxint8"),
               ("nvfp4 (blocks of 16)", "BM_Nvfp4"), ("nf4, per channel", "BM_Nf4PerChannel")]
    present = [(n, k) for n, k in formats if k in runs]
    if present:
        print("\n| format kernel, forward (16M floats) | ms | bandwidth vs clone |")
        print("|---|---:|---:|")
        for name, key in present:
            print(f"| {name} | {runs[key]:.1f} | {clone / runs[key]:.2f} |")


if __name__ == "__main__":
    main()
