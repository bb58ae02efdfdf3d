"""anybit: quantize any PyTorch model to any bit width, from outside the model.

A thin layer over anybit's C++ core (the same library the `anybit` CLI calls). Models
cross into C++ as TorchScript: an ``nn.Module`` is scripted (or traced, given
``example_inputs``) here; everything else happens in C++.

    import anybit
    qm = anybit.quantize(model, {"rules": [{"kind": "conv", "role": "weight", "spec": "int4"}]},
                         example_inputs=x, calib_data=loader)
    anybit.export(qm, "model_int")                   # the integer model (docs/integer-format.md)
    logits_q = anybit.intsim_run("model_int", [x])   # integer-only inference on it

Without the C++ extension (not built yet) the package still imports, so that
``python3 -m anybit.onnx_export`` (numpy and onnx only) works; the rest raises ImportError.
"""
import json
import math
import os
import tempfile
import warnings

import torch


class _MissingExtension:
    """Stands in for the C++ extension when it cannot be loaded (not built yet, or built
    against another LibTorch), so that the pure-Python parts of the package
    (``anybit.onnx_export``: numpy and onnx only) still import; every use of the core
    raises the original ImportError."""

    def __init__(self, error):
        self._error = error

    def __getattr__(self, name):
        raise ImportError(f"anybit's C++ extension could not be loaded ({self._error}); build it "
                          "(make build, or cmake --build BUILD --target _anybit) or pip install ./python") from None


try:
    from . import _anybit  # loads libanybit_torch, which registers the anybit:: ops
except ImportError as _e:
    import importlib.util

    _anybit = _MissingExtension(_e if importlib.util.find_spec(__name__ + "._anybit") else
                                f"no _anybit extension in {os.path.dirname(os.path.abspath(__file__))}")

    class Error(ValueError):
        """anybit's error (the C++ extension is not loaded: only anybit.onnx_export works)."""
else:
    Error = _anybit.Error
    # the CUDA kernels of the quantizer ops (libanybit_cuda, next to the extension where anybit
    # was built with CUDA), registered for tensors on CUDA devices; without them such tensors
    # take the ATen-op compositions
    _cuda_kernels_note = _anybit.load_cuda_kernels() if torch.version.cuda else "torch has no CUDA"


def cuda_kernels():
    """Whether anybit's own CUDA kernels are registered, and if not, why: ``(True, "")`` or
    ``(False, reason)``. The quantizer ops run on CUDA tensors either way (without the kernels,
    as compositions of ATen ops)."""
    note = _cuda_kernels_note if not isinstance(_anybit, _MissingExtension) else "the extension is not loaded"
    return (note == "", note)


class ClippingWarning(UserWarning):
    """A quantizer's spec clips a share of its calibration data (see quantize)."""


class CoverageWarning(UserWarning):
    """An op that computes linear algebra has no points and stays float (see coverage)."""


__all__ = ["Error", "ClippingWarning", "CoverageWarning", "coverage", "points", "plan", "quantize", "evaluate", "sweep", "search", "finetune", "load",
           "quantizer_outputs", "canonical_spec", "export", "intsim_run", "intsim_evaluate", "noise_sweep"]


def canonical_spec(text):
    """The canonical form of a quantizer spec such as 'INT4:Per_Channel' (raises Error)."""
    return _anybit.canonical_spec(text)


def _first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _to_script(model, example_inputs):
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise Error(f"expected an nn.Module or a ScriptModule, got {type(model).__name__}")
    try:
        return torch.jit.script(model)
    except Exception as e:  # noqa: BLE001 - reported with the scripting error's first line
        if example_inputs is None:
            raise Error(f"torch.jit.script({type(model).__name__}) failed: {_first_line(e)}; "
                        "pass example_inputs=... to trace the model instead") from None
        script_error = _first_line(e)
    try:
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        return torch.jit.trace(model, args)
    except Exception as e:  # noqa: BLE001
        raise Error(f"{type(model).__name__} can be neither scripted ({script_error}) "
                    f"nor traced ({_first_line(e)})") from None


def _save(model, example_inputs, d, name="model.pt"):
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    path = os.path.join(d, name)
    was_training = model.training
    model.eval()
    try:
        _to_script(model, example_inputs).save(path)
    finally:
        model.train(was_training)
    return path


def _config(config):
    if isinstance(config, dict):
        return json.dumps(config), "<dict>"
    if isinstance(config, (str, os.PathLike)):
        s = os.fspath(config)
        if "\n" not in s and os.path.exists(s):
            with open(s) as f:
                return f.read(), s
        if "\n" not in s and (s.endswith(".yaml") or s.endswith(".yml") or s.endswith(".json")):
            raise Error(f"{s}: cannot open config file")
        return s, "<config>"
    raise Error(f"config must be a dict, a YAML/JSON string or a file path, got {type(config).__name__}")


def _options(cls, **fields):
    """One of the library's option structs (`_anybit.QuantizeOptions`, ...) with `fields` set."""
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _data(data, d, max_batches=None):
    """A data spec string for the C++ side: strings pass through; tensors, (x, y) pairs,
    DataLoaders and other iterables of batches are written to .npy files."""
    import numpy as np

    if data is None:
        return "", 0, 0
    if isinstance(data, str):
        return data, 0, 0
    if torch.is_tensor(data):
        batches = [(data, None)]
    elif isinstance(data, tuple) and len(data) == 2 and torch.is_tensor(data[0]):
        batches = [data]
    else:
        batches = []
        for b in data:
            if max_batches is not None and len(batches) >= max_batches:
                break
            if isinstance(b, (tuple, list)):
                batches.append((b[0], b[1] if len(b) > 1 else None))
            else:
                batches.append((b, None))
        if not batches:
            raise Error("the calibration/evaluation data yielded no batch")
    for x, y in batches:
        if y is not None and (not torch.is_tensor(y) or y.numel() != len(x)):
            shape = list(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise Error(f"data: a batch's second element is taken as its labels, one class index per sample; got "
                        f"{shape} for {len(x)} samples (a second model input, such as an attention mask, is not "
                        "fed: anybit gives the model one tensor per batch)")
    # integer inputs (token ids for an embedding) stay integers, as int64; the rest is float
    ints = all(not x.dtype.is_floating_point and not x.dtype.is_complex and x.dtype not in (torch.bool, torch.uint8)
               for x, _ in batches)
    xs = torch.cat([x.detach().cpu().long() if ints else x.detach().float().cpu() for x, _ in batches])
    xp = os.path.join(d, "x.npy")
    np.save(xp, xs.contiguous().numpy())
    if all(y is None for _, y in batches):  # calibration only: no labels file
        return f"npy:{xp}", len(xs), len(batches[0][0])
    ys = torch.cat([(y if y is not None else torch.zeros(len(x))).detach().long().cpu().reshape(-1)
                    for x, y in batches])
    yp = os.path.join(d, "y.npy")
    np.save(yp, ys.numpy().astype(np.int64))
    return f"npy:{xp}:{yp}", len(xs), len(batches[0][0])


def points(model, example_inputs=None):
    """The named quantization points of a model, in forward order (like `anybit inspect`)."""
    with tempfile.TemporaryDirectory() as d:
        return _anybit.points(_save(model, example_inputs, d))


def coverage(model, example_inputs=None):
    """Which conv/linear/matmul ops have points (like the last lines of `anybit inspect`):
    {"linear_algebra_ops": N, "with_points": K, "uncovered": [{"op", "module", "reason", "where"}]}.
    An uncovered op (a fused transformer kernel, an LSTM, an op inside data-dependent
    control flow) stays in float when the model is quantized."""
    with tempfile.TemporaryDirectory() as d:
        return _anybit.coverage(_save(model, example_inputs, d))


def plan(model, config, example_inputs=None, fold_bn=False):
    """Which spec each point gets under `config` (like `anybit quantize --dry-run`)."""
    text, source = _config(config)
    with tempfile.TemporaryDirectory() as d:
        report, _, _ = _anybit.quantize(_save(model, example_inputs, d), text, source, "", _options(_anybit.PrepareOptions,
                                     fold_bn=fold_bn), _anybit.QuantizeOptions(), True, "")
        return report


def quantize(model, config, example_inputs=None, calib_data=None, calib_batches=8, batch_size=None,
             portable=False, return_report=False, fold_bn=False, adaround=0, bias_correction=False,
             int32_bias=False, cle=False, brecq=0, strict=False, gptq=False, device="cpu"):
    """Quantize `model` by the rules of `config` (dict, YAML/JSON text or file) and calibrate
    it on `calib_data` (a DataLoader, an iterable of batches or (x, y) pairs, a tensor, or a
    data spec string such as 'fmnist::train'). fold_bn folds BatchNorm into the convs first;
    adaround=N learns the rounding of int weights for N iterations per layer (docs/ptq.md);
    brecq=N instead learns the rounding and the activation steps block by block (BRECQ
    with QDrop), N iterations per block; gptq=True instead chooses the integers of the int
    weights column by column from each layer's input Hessian (GPTQ, docs/ptq.md);
    bias_correction corrects the per-channel output mean shift of quantized weights;
    int32_bias quantizes conv/linear biases as integer hardware adds them (int32 at
    s_in * s_w), as an integer export (`export`) needs them to match the model.
    cle=True equalizes conv/linear pairs joined by ReLU or nothing (cross-layer
    equalization, needs fold_bn); cle="relu6" also across ReLU6, turning it into ReLU.
    A quantizer whose spec clips more than 1% of its calibration data (an unsigned spec on
    signed data) is reported with warnings.warn (anybit.ClippingWarning) and in the report
    (clip_warning, and clipped_low / clipped_high for every calibrated point); strict=True
    raises anybit.Error instead, as it does for an op that has no points (otherwise an
    anybit.CoverageWarning; see coverage). device="cuda" runs the calibration passes on the GPU
    (the statistics come to the host), and AdaRound, BRECQ, GPTQ and bias correction there too.
    Returns the quantized ScriptModule, on the CPU, and with return_report=True also
    the per-point report (a list of dicts)."""
    text, source = _config(config)
    with tempfile.TemporaryDirectory() as d:
        src = _save(model, example_inputs, d)
        spec, n, bs = _data(calib_data, d, max_batches=calib_batches if not isinstance(calib_data, str) else None)
        if n:  # everything collected from Python is used
            batch_size = batch_size or bs
            calib_batches = math.ceil(n / batch_size)
        out = os.path.join(d, "quantized.pt")
        # with strict, quantize refuses uncovered ops itself; otherwise they are warned about
        if cle not in (False, True, "relu6"):
            raise Error(f"cle: {cle!r} is not False, True or 'relu6'")
        prepare = _options(_anybit.PrepareOptions, fold_bn=fold_bn, cle=bool(cle) and cle != "relu6",
                           cle_relu6=cle == "relu6")
        options = _options(_anybit.QuantizeOptions, calib_batches=calib_batches, batch_size=batch_size or 128,
                           portable=portable, adaround_iterations=adaround, brecq_iterations=brecq, gptq=gptq,
                           bias_correction=bias_correction, int32_bias=int32_bias, strict=strict,
                           device=str(device))
        report, uncovered, float_inputs = _anybit.quantize(src, text, source, spec, prepare, options, False, out)
        qm = torch.jit.load(out)
    for u in uncovered:
        warnings.warn(f"{u['where']} has no points and stays float: {u['reason']}", CoverageWarning, stacklevel=2)
    for r in report:
        if "clip_warning" in r:
            warnings.warn(r["clip_warning"], ClippingWarning, stacklevel=2)
    # integer inputs left unquantized, layers GPTQ kept at nearest rounding, activations layers
    # read that the config leaves float: as `anybit quantize` notes them
    for note in filter(None, float_inputs.split("\n")):
        warnings.warn(note, CoverageWarning, stacklevel=2)
    return (qm, report) if return_report else qm


def evaluate(model, data, reference=None, batch_size=100, freeze=True, example_inputs=None, fused=True, device="cpu",
             scores=None):
    """Top-1/top-5 accuracy, loss and (with `reference`) argmax agreement, like `anybit eval`.
    The frozen model runs as fused oneDNN layers, the ops oneDNN has no layer for through
    ATen, unless it has a loop that computes tensors or its first batch disagrees with the
    interpreter (fused=False keeps the TorchScript interpreter); the result's "runtime" says
    which ran and "runtime_note" how much ran where. device="cuda" (or "cuda:N") runs a copy of
    the model on that GPU in the interpreter. `scores` picks the class scores from a model that
    returns a tuple, list or dict: an index or a field/key name (by default a named tuple's or
    dict's "logits", or a tuple's only tensor; the result's "scores" says which was taken)."""
    with tempfile.TemporaryDirectory() as d:
        mp = _save(model, example_inputs, d)
        rp = _save(reference, example_inputs, d, "reference.pt") if reference is not None else ""
        spec, _, _ = _data(data, d)
        return _anybit.evaluate(mp, spec, rp, _options(_anybit.EvalOptions, batch_size=batch_size, freeze=freeze,
                                                       fused=fused, device=str(device),
                                                       scores="" if scores is None else str(scores)))


def sweep_config(method, wbits, abits, first_last_8bit=False, format=None):
    """The config (YAML text) a sweep point stands for, as `anybit sweep` writes it: weights
    at `wbits` per channel, and at `abits` the input, the relu and pool outputs, every
    activation a conv, linear or matmul reads, and the residual adds; or, with `format`
    ("mxfp4", "nf4", ...), that format for weights and activations."""
    if format is not None:
        return _anybit.sweep_format_config(method, format, first_last_8bit)
    return _anybit.sweep_config(method, int(wbits), int(abits), first_last_8bit)


def sweep(models, out_dir, weights=(8, 6, 4, 3, 2), acts=(8, 6, 4, 3, 2), pairs=None, methods=("minmax", "mse"),
          calib_data="fmnist::train", eval_data="fmnist::test", calib_batches=8, fold_bn=True,
          first_last_8bit=False, resume=False, adaround_iterations=3000, brecq_iterations=2000, formats=None,
          device="cpu", scores=None):
    """Post-training quantization at every (weight, activation) bit pair and method
    (minmax, mse, percentile, entropy, adaround, brecq, gptq), like
    `anybit sweep`: returns the rows and writes out_dir/results.{csv,json,jsonl} and accuracy.svg.
    `formats` (e.g. ["int4", "fp4:e2m1", "mxfp4", "nvfp4", "nf4", "lut4"]) sweeps number formats,
    each for the weights and the activations, instead of bit pairs (`anybit sweep --formats`;
    the rows then have a "format").
    `models` are TorchScript files or modules (saved into out_dir). device="cuda" calibrates and
    evaluates on the GPU. `scores` as for evaluate."""
    if formats is not None and pairs is not None:
        raise Error("sweep: give formats or pairs, not both")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, m in enumerate(models if isinstance(models, (list, tuple)) else [models]):
        if isinstance(m, (str, os.PathLike)):
            paths.append(os.fspath(m))
        else:
            name = getattr(m, "original_name", type(m).__name__)
            paths.append(_save(m, None, out_dir, f"{name}_{i}.pt"))
    if formats is not None:
        pairs = []
    else:
        pairs = list(pairs) if pairs is not None else [(w, a) for w in weights for a in acts]
    return _anybit.sweep(_options(_anybit.SweepOptions, models=paths, pairs=[tuple(p) for p in pairs],
                                  formats=list(formats or []), methods=list(methods), calib_data=calib_data,
                                  eval_data=eval_data, calib_batches=calib_batches, fold_bn=fold_bn,
                                  first_last_8bit=first_last_8bit, out_dir=os.fspath(out_dir), resume=resume,
                                  adaround_iterations=adaround_iterations, brecq_iterations=brecq_iterations,
                                  device=str(device), scores="" if scores is None else str(scores)))


def search(model, out_dir, budget, weights=(2, 3, 4, 6, 8), acts=None, acts_fixed=8, uniform=None, metric="kl", method="mse",
           calib_data="fmnist::train", eval_data="fmnist::test", calib_batches=8, sensitivity_samples=512,
           hessian_iterations=16, fold_bn=True, resume=False, adaround_iterations=3000, brecq_iterations=2000,
           scores=None):
    """Mixed precision, like `anybit search` (docs/search.md): the weight width per conv/linear
    layer (and with `acts`, e.g. (4, 6, 8), the activation widths) that loses least within
    `budget` ("avg-wbits=2.5", "size=40KiB" or "bops=0.25"). Returns a dict with the chosen
    "layers", the evaluated "rows" (float, the search and the uniform configs at their budgets)
    and "config", the path of out_dir/config.yaml that `quantize` takes unchanged.
    `model` is a TorchScript file or module (saved into out_dir); `scores` as for evaluate."""
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
    else:
        path = _save(model, None, out_dir, getattr(model, "original_name", type(model).__name__) + ".pt")
    return _anybit.search(_options(_anybit.SearchOptions, model=path, out_dir=os.fspath(out_dir), budget=budget,
                                   weights=list(weights), acts=list(acts or []), acts_fixed=acts_fixed,
                                   uniform=list(uniform or []), metric=metric,
                                   method=method, calib_data=calib_data, eval_data=eval_data,
                                   calib_batches=calib_batches, sensitivity_samples=sensitivity_samples,
                                   hessian_iterations=hessian_iterations, fold_bn=fold_bn, resume=resume,
                                   adaround_iterations=adaround_iterations, brecq_iterations=brecq_iterations,
                                   progress=False, scores="" if scores is None else str(scores)))


def finetune(qmodel, data, epochs=1, lr=0.01, optimizer="sgd", weight_decay=5e-4, label_smoothing=0.0,
             batch_size=128, max_steps=-1, seed=0, checkpoint_dir="", resume=False, return_report=False,
             schedule="cosine", momentum=0.9, teacher=None, kd_weight=1.0, kd_temperature=1.0, freeze_bn=None,
             example_inputs=None, noise=None, device="cpu", scores=None):
    """Quantization-aware fine-tuning of a model anybit quantized, like `anybit finetune`
    (docs/qat.md). `data` is a data spec string or anything `quantize` accepts as
    calibration data (with labels). schedule: cosine, onecycle or constant. teacher: a
    model to distil from (a path, ScriptModule or nn.Module; nn.Module needs
    example_inputs if it cannot be scripted), with kd_weight and kd_temperature.
    freeze_bn=N: BatchNorm trains for N epochs, then freezes and is folded into the convs.
    noise="gauss:rel=R": noise-aware training against the integer engine's per-product
    noise (docs/noise.md). device="cuda" (or "cuda:N") trains on that GPU. `scores` picks the
    class scores the loss is on from a model (and teacher) returning a tuple, as for evaluate.
    Returns the trained ScriptModule, on the CPU, (and the per-epoch reports with return_report)."""
    with tempfile.TemporaryDirectory() as d:
        src = _save(qmodel, None, d, "in.pt")
        spec, _, _ = _data(data, d)
        out = os.path.join(d, "out.pt")
        teacher_path = _save(teacher, example_inputs, d, "teacher.pt") if teacher is not None else ""
        options = _options(_anybit.FinetuneOptions, epochs=epochs, lr=lr, optimizer=optimizer,
                           weight_decay=weight_decay, label_smoothing=label_smoothing, batch_size=batch_size,
                           max_steps=max_steps, seed=seed, checkpoint_dir=os.fspath(checkpoint_dir), resume=resume,
                           schedule=schedule, momentum=momentum, kd_weight=kd_weight, kd_temperature=kd_temperature,
                           freeze_bn_epoch=-1 if freeze_bn is None else int(freeze_bn), noise=noise or "",
                           device=str(device), scores="" if scores is None else str(scores))
        report = _anybit.finetune(src, spec, out, teacher_path, options)
        m = torch.jit.load(out)
    return (m, report) if return_report else m


def quantizer_outputs(qmodel, x):
    """Runs a quantized model on x and returns [(point, op, tensor)] for every quantizer."""
    with tempfile.TemporaryDirectory() as d:
        p = _save(qmodel, None, d)
        return [(name, op, torch.from_numpy(a)) for name, op, a in _anybit.probe(p, x.detach().float().cpu().numpy())]


def load(path):
    """torch.jit.load for anybit models (the anybit ops are registered on import)."""
    return torch.jit.load(os.fspath(path))


# --- integer export and the integer engine (docs/integer-format.md) --------------------


def export(qmodel, out_dir, input_shape=None):
    """Writes the integer model of a quantized model (a path or a ScriptModule from
    `quantize`/`finetune`) to `out_dir` (manifest.json + .npy), like `anybit export`.
    input_shape is the input shape without the batch ([1, 28, 28]; default: the shape
    recorded at calibration). The directory is replaced atomically if it holds an earlier
    export; any other non-empty directory is refused. Returns a dict: output, op_count,
    ops (count per op kind), notes (what the export could not keep exactly, e.g. an
    unquantized output written as int32), inputs and outputs (name, shape, scale,
    zero_point, qmin, qmax)."""
    if input_shape is not None:
        input_shape = [int(v) for v in input_shape]
        if not input_shape or any(v <= 0 for v in input_shape):
            raise Error(f"input_shape: {input_shape} is not a list of positive sizes such as [1, 28, 28]")
    source = os.fspath(qmodel) if isinstance(qmodel, (str, os.PathLike)) else \
        f"<{getattr(qmodel, 'original_name', type(qmodel).__name__)}>"
    with tempfile.TemporaryDirectory() as d:
        return _anybit.export_model(_save(qmodel, None, d), os.fspath(out_dir), input_shape or [], source)


def _engine_array(x):
    import numpy as np

    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def intsim_run(model_dir, inputs, acc_bits=32, overflow="wrap", mac=None, threads=0, reference_kernels=False,
               return_stats=False):
    """Runs an integer export (`export`, `anybit export`) on the integer-only engine.

    `inputs`: one array per model input (a list; a single array for a one-input model),
    each [N, ...shape] (NumPy arrays or tensors). Integer arrays are the input integers
    themselves and must lie in the input's [qmin, qmax]; floating-point arrays are real
    values, quantized with the model input's scale and zero point exactly as the
    fake-quantized model quantizes them (x * (1/s) in float32, round half to even, + z,
    clamp). acc_bits (8..32) and overflow ("wrap" or "saturate") declare the accumulator;
    mac is a multiply-accumulate model string ("gauss:sigma=2,seed=1", "adc:bits=8,range=F",
    "bitflip:rate=P"; None: exact); threads=0 uses one per hardware thread (results do not
    depend on it); reference_kernels runs the plain int64 reference loops.

    Returns the outputs as int32 arrays [N, ...] in the order of the manifest's outputs
    (dequantize with (q - zero_point) * scale); with return_stats, (outputs, layers) where
    layers has, per op, dot_products, overflows, mean_abs_error, max_abs_error and clipped
    (results a MAC model such as an ADC clipped)."""
    seq = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    engine = _options(_anybit.EngineSpec, acc_bits=int(acc_bits), overflow=overflow, mac=mac or "exact",
                      threads=int(threads), reference_kernels=bool(reference_kernels))
    outs, stats = _anybit.intsim_run(os.fspath(model_dir), [_engine_array(x) for x in seq], engine)
    return (outs, stats) if return_stats else outs


def intsim_evaluate(model_dir, data, reference=None, acc_bits=32, overflow="wrap", mac=None, threads=0,
                    batch_size=100, reference_kernels=False, progress=True, calib_data=None, calib_samples=256):
    """Top-1/top-5 accuracy of an integer export on the integer engine over labelled data
    (a data spec string such as 'fmnist::test', tensors (x, y), or a DataLoader), like
    `anybit intsim --json`, with the same fields: model, data, accumulator, mac, samples,
    top1, top5, seconds, layers, and with `reference` (the quantized model, a path or a
    ScriptModule) the argmax agreement with it and the share of output integers equal /
    one step apart / further (outputs_equal, outputs_one_step, outputs_more, max_steps) and,
    per quantized tensor on the first batch, the same against the reference's tensors
    (layer_agreement: point, equal, one_step, max_steps).
    Inputs are quantized with the model input's parameters, as in intsim_run. A MAC model
    that calibrates (adc:range=auto) needs calib_data (a spec or data as above; its first
    calib_samples images)."""
    with tempfile.TemporaryDirectory() as d:
        rp = _save(reference, None, d, "reference.pt") if reference is not None else ""
        spec, _, _ = _data(data, d)
        cspec = _calib_spec(calib_data, d)
        engine = _options(_anybit.EngineSpec, acc_bits=int(acc_bits), overflow=overflow, mac=mac or "exact",
                          threads=int(threads), reference_kernels=bool(reference_kernels))
        options = _options(_anybit.IntegerEvalOptions, batch_size=int(batch_size), progress=bool(progress),
                           calib_samples=int(calib_samples), engine=engine)
        r = _anybit.intsim_evaluate(os.fspath(model_dir), spec, rp, cspec, options)
    out = {"model": os.fspath(model_dir), "data": data if isinstance(data, str) else "<python data>"}
    out.update(r)
    if reference is not None:
        out["reference"] = os.fspath(reference) if isinstance(reference, (str, os.PathLike)) else \
            f"<{getattr(reference, 'original_name', type(reference).__name__)}>"
    return out


def _calib_spec(calib_data, d):
    if calib_data is None:
        return ""
    sub = os.path.join(d, "calib")
    os.makedirs(sub, exist_ok=True)
    return _data(calib_data, sub)[0]


def noise_sweep(model_dir, data, mac, seeds=1, out=None, resume=False, acc_bits=32, overflow="wrap", threads=0,
                batch_size=100, calib_data=None, calib_samples=256, progress=True):
    """Accuracy of an integer export under a noisy MAC model, like `anybit intsim --mac SPEC
    --seeds N -o DIR`: `mac` is one model or one parameter given several values
    ("gauss:rel=0.001,0.01,0.1"), each level run with seeds K..K+seeds-1 (K: the spec's seed,
    default 0). Returns a dict: key (the swept parameter), exact (the exact run), levels (mac,
    value, runs, top1_mean, top1_std, top1_min, top1_max, top5_mean), runs (mac, value, seed,
    top1, top5, seconds) and table (the CLI's table). With out, writes results.jsonl,
    noise.csv, noise.json and noise.svg there; resume keeps the runs already in
    out/results.jsonl. calib_data as in intsim_evaluate. docs/noise.md."""
    with tempfile.TemporaryDirectory() as d:
        spec, _, _ = _data(data, d)
        cspec = _calib_spec(calib_data, d)
        engine = _options(_anybit.EngineSpec, acc_bits=int(acc_bits), overflow=overflow, threads=int(threads))
        run = _options(_anybit.IntegerEvalOptions, batch_size=int(batch_size), calib_samples=int(calib_samples),
                       engine=engine)
        options = _options(_anybit.NoiseSweepOptions, mac=mac, seeds=int(seeds), out_dir=os.fspath(out) if out else "",
                           resume=bool(resume), progress=bool(progress), eval=run, model_name=os.fspath(model_dir),
                           data_name=data if isinstance(data, str) else "<python data>")
        text, table = _anybit.noise_sweep(os.fspath(model_dir), spec, cspec, options)
    r = json.loads(text)
    r["table"] = table
    return r
