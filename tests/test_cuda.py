"""libanybit_cuda from Python: the plug-in loads on `import anybit` and registers its kernels
(checked everywhere it was built), and, on a machine with a GPU, the quantizer ops on CUDA
tensors equal the CPU's and ATen's CUDA fake_quantize, forward and backward, and the front
ends take device="cuda" (quantize, evaluate, finetune on the shipped model).

Its own ctest entry (python_cuda): without a GPU the GPU tests are skipped, and ctest shows
this entry as skipped, never as passed.
"""
import os

import pytest
import torch

import anybit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = os.path.join(ROOT, "models", "fmnist_resnet.pt")
HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device visible: the CUDA kernels are not run here")
ops = torch.ops.anybit


@pytest.mark.skipif(not torch.version.cuda, reason="torch has no CUDA")
def test_plugin_loads_and_registers_the_cuda_kernels():
    loaded, why = anybit.cuda_kernels()
    assert loaded, why
    for op in ("_fake_quant_affine_forward", "_fake_quant_affine_backward", "_qdrop_mask"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"anybit::{op}", "CUDA"), op


def test_device_cuda_without_a_gpu_is_one_clear_error():
    if HAS_GPU:
        pytest.skip("a GPU is visible")
    with pytest.raises(anybit.Error, match="no CUDA device is visible"):
        anybit.evaluate(FMNIST, "fmnist::test", device="cuda")


def _probe(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3
    flat = x.view(-1)
    flat[:8] = torch.tensor([0.5, -0.5, 1.5, -2.5, 0.0, float("inf"), float("-inf"), float("nan")])
    return x


@needs_gpu
@pytest.mark.parametrize("rounding", [0, 1, 2])
def test_affine_forward_on_cuda_equals_the_cpu_bit_for_bit(rounding):
    x = _probe((8, 6, 5, 5), 0)
    s = torch.rand(6) * 0.1 + 0.01
    z = torch.randint(-3, 4, (6,)).float()
    cpu = ops.fake_quant_affine(x, s, z, 1, 0, -8, 7, rounding)
    dev = ops.fake_quant_affine(x.cuda(), s.cuda(), z.cuda(), 1, 0, -8, 7, rounding)
    assert dev.is_cuda
    assert torch.equal(cpu.isnan(), dev.cpu().isnan())
    assert torch.equal(cpu.nan_to_num(), dev.cpu().nan_to_num())


@needs_gpu
def test_matches_atens_cuda_fake_quantize_forward_and_backward():
    x = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
    s = (torch.rand(32) * 0.05 + 0.01).cuda()
    ref = torch.fake_quantize_per_channel_affine(x, s, torch.zeros(32, dtype=torch.int32, device="cuda"), 0, -128, 127)
    got = ops.fake_quant_affine(x, s, torch.zeros(32, device="cuda"), 0, 0, -128, 127)
    assert torch.equal(ref, got)
    g = torch.randn_like(x)
    (dref,) = torch.autograd.grad(ref, x, g)
    (dgot,) = torch.autograd.grad(got, x, g)
    assert torch.equal(dref, dgot)


@needs_gpu
def test_lsq_gradients_on_cuda_equal_the_cpus():
    x, g = torch.randn(16, 8, 7, 7) * 2, torch.randn(16, 8, 7, 7)
    s, z = torch.rand(8) * 0.1 + 0.02, torch.randint(-2, 3, (8,)).float()

    def run(dev):
        xs, ss, zs = (t.to(dev).requires_grad_() for t in (x, s, z))
        ops.fake_quant_affine(xs, ss, zs, 1, 0, -8, 7, 0, 0.01).backward(g.to(dev))
        return [t.grad.cpu() for t in (xs, ss, zs)]

    (dx0, ds0, dz0), (dx1, ds1, dz1) = run("cpu"), run("cuda")
    assert torch.equal(dx0, dx1)
    assert torch.allclose(ds0, ds1, rtol=1e-5, atol=1e-6) and torch.allclose(dz0, dz1, rtol=1e-5, atol=1e-6)


@needs_gpu
def test_quantize_evaluate_and_finetune_on_cuda(tmp_path):
    cfg = {"rules": [{"kind": "conv", "role": "weight", "spec": "int4"}, {"role": "activation", "spec": "uint8"}]}
    q_cpu = anybit.quantize(FMNIST, cfg, calib_data="fmnist::train", calib_batches=2)
    q_gpu = anybit.quantize(FMNIST, cfg, calib_data="fmnist::train", calib_batches=2, device="cuda")
    r_cpu = anybit.evaluate(q_cpu, "fmnist::test", fused=False)
    r_gpu = anybit.evaluate(q_gpu, "fmnist::test", device="cuda")
    # the statistics come from the device's activations: equal up to float differences of the convs
    assert abs(r_cpu["top1"] - r_gpu["top1"]) < 0.3
    m, report = anybit.finetune(q_gpu, "fmnist::train", max_steps=20, device="cuda", return_report=True)
    assert report[0]["steps"] == 20
    assert next(m.parameters()).device.type == "cpu"


@needs_gpu
@pytest.mark.parametrize("method", ["gptq", "adaround", "brecq", "bias_correction"])
def test_ptq_algorithms_on_cuda_agree_with_the_cpu(method):
    # W4A8 on the shipped model: the same algorithm on the GPU and on the CPU; the captured
    # inputs differ by float rounding (GPU convs), so a few roundings may differ, not the result
    cfg = {"rules": [{"kind": "conv", "role": "weight", "spec": "int4:per_channel"},
                     {"role": "activation", "spec": "auto8"}]}
    kw = {"gptq": {"gptq": True}, "adaround": {"adaround": 50}, "brecq": {"brecq": 30},
          "bias_correction": {"bias_correction": True}}[method]
    q_cpu = anybit.quantize(FMNIST, cfg, calib_data="fmnist::train", calib_batches=2, **kw)
    q_gpu = anybit.quantize(FMNIST, cfg, calib_data="fmnist::train", calib_batches=2, device="cuda", **kw)
    assert next(q_gpu.parameters()).device.type == "cpu"
    w_cpu = dict(q_cpu.named_parameters())
    w_gpu = dict(q_gpu.named_parameters())
    assert w_cpu.keys() == w_gpu.keys()
    for name, w in w_cpu.items():
        agree = torch.isclose(w, w_gpu[name], rtol=1e-3, atol=1e-6).float().mean().item()
        assert agree > 0.95, (name, agree)
    r_cpu = anybit.evaluate(q_cpu, "fmnist::test", fused=False)
    r_gpu = anybit.evaluate(q_gpu, "fmnist::test", fused=False)
    assert abs(r_cpu["top1"] - r_gpu["top1"]) < 0.5
