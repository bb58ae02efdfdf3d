// Fake-quant throughput: anybit's kernels against ATen's fake_quantize ops and a plain
// tensor copy, on 16M floats, in one run. Thread count: ANYBIT_BENCH_THREADS (default 2).
// bench/fake_quant_ratios.py turns the JSON output into the ratios of BENCHMARKS.md.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdlib>
#include <vector>

#include "anybit/quant/fake_quant.h"

namespace {

constexpr int64_t kRows = 4096, kCols = 4096;  // 16M floats, 64 MiB

at::Tensor input() {
  static at::Tensor x = [] {
    at::manual_seed(0);
    return at::randn({kRows, kCols});
  }();
  return x;
}

void set_bytes(benchmark::State& st, int passes) {
  // bytes read + written per iteration
  st.SetBytesProcessed(st.iterations() * kRows * kCols * sizeof(float) * passes);
}

void BM_Copy(benchmark::State& st) {
  at::Tensor x = input(), y = at::empty_like(x);
  for (auto _ : st) {
    y.copy_(x);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  set_bytes(st, 2);
}

// A copy into a fresh tensor: the same allocation (and first-touch page faults) as an
// op that returns a new tensor.
void BM_Clone(benchmark::State& st) {
  at::Tensor x = input();
  for (auto _ : st) benchmark::DoNotOptimize(x.clone());
  set_bytes(st, 2);
}

void BM_AtenPerTensor(benchmark::State& st) {
  at::Tensor x = input();
  for (auto _ : st) benchmark::DoNotOptimize(at::fake_quantize_per_tensor_affine(x, 0.02f, 0, -8, 7));
  set_bytes(st, 2);
}

void BM_AnybitPerTensor(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({1}, 0.02), z = at::zeros({1});
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_affine_forward(x, s, z, -1, 0, -8, 7, 0));
  set_bytes(st, 2);
}

void BM_AnybitPerTensorOut(benchmark::State& st) {
  at::Tensor x = input(), y = at::empty_like(x), s = at::full({1}, 0.02), z = at::zeros({1});
  for (auto _ : st) {
    anybit::fake_quant_affine_forward_out(x, s, z, -1, 0, -8, 7, 0, y);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  set_bytes(st, 2);
}

void BM_AnybitPerChannelOut(benchmark::State& st) {
  at::Tensor x = input(), y = at::empty_like(x), s = at::full({kRows}, 0.02), z = at::zeros({kRows});
  for (auto _ : st) {
    anybit::fake_quant_affine_forward_out(x, s, z, 0, 0, -8, 7, 0, y);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  set_bytes(st, 2);
}

void BM_AtenPerChannel(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({kRows}, 0.02), z = at::zeros({kRows}, at::kInt);
  for (auto _ : st) benchmark::DoNotOptimize(at::fake_quantize_per_channel_affine(x, s, z, 0, -8, 7));
  set_bytes(st, 2);
}

void BM_AnybitPerChannel(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({kRows}, 0.02), z = at::zeros({kRows});
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_affine_forward(x, s, z, 0, 0, -8, 7, 0));
  set_bytes(st, 2);
}

// forward + backward through autograd, gradient for x only (STE)
void BM_AtenPerTensorFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  for (auto _ : st) {
    at::Tensor y = at::fake_quantize_per_tensor_affine(x, 0.02f, 0, -8, 7);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}, {g}));
  }
  set_bytes(st, 5);
}

void BM_AnybitPerTensorFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  at::Tensor s = at::full({1}, 0.02), z = at::zeros({1});
  for (auto _ : st) {
    at::Tensor y = anybit::fake_quant_affine(x, s, z, -1, 0, -8, 7, 0, 1.0);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}, {g}));
  }
  set_bytes(st, 5);
}

void BM_AtenPerChannelFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  at::Tensor s = at::full({kRows}, 0.02), z = at::zeros({kRows}, at::kInt);
  for (auto _ : st) {
    at::Tensor y = at::fake_quantize_per_channel_affine(x, s, z, 0, -8, 7);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}, {g}));
  }
  set_bytes(st, 5);
}

void BM_AnybitPerChannelFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  at::Tensor s = at::full({kRows}, 0.02), z = at::zeros({kRows});
  for (auto _ : st) {
    at::Tensor y = anybit::fake_quant_affine(x, s, z, 0, 0, -8, 7, 0, 1.0);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x}, {g}));
  }
  set_bytes(st, 5);
}

// LSQ: gradients for x and the learnable step (ATen's learnable fake-quant is the peer)
void BM_AtenLsqPerTensorFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  at::Tensor s = at::full({1}, 0.02).requires_grad_(), z = at::zeros({1});
  for (auto _ : st) {
    at::Tensor y = at::_fake_quantize_learnable_per_tensor_affine(x, s, z, -8, 7, 1.0);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x, s}, {g}));
  }
  set_bytes(st, 5);
}

void BM_AnybitLsqPerTensorFwdBwd(benchmark::State& st) {
  at::Tensor x = input().clone().requires_grad_(), g = at::ones_like(x);
  at::Tensor s = at::full({1}, 0.02).requires_grad_(), z = at::zeros({1});
  for (auto _ : st) {
    at::Tensor y = anybit::fake_quant_affine(x, s, z, -1, 0, -8, 7, 0, 1.0);
    benchmark::DoNotOptimize(torch::autograd::grad({y}, {x, s}, {g}));
  }
  set_bytes(st, 5);
}

// the other formats, forward into a fresh tensor (against clone): per-tensor and per-channel
// minifloats, the block formats (blocks along the last dim) and the codebooks
void BM_MinifloatE4m3(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({1}, 0.01);
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_minifloat_forward(x, s, -1, 0, 4, 3));
  set_bytes(st, 2);
}

void BM_MinifloatE2m1PerChannel(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({kRows}, 0.5);
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_minifloat_forward(x, s, 0, 0, 2, 1));
  set_bytes(st, 2);
}

void BM_Mxfp8(benchmark::State& st) {
  at::Tensor x = input();
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_mx(x, -1, 32, 4, 3));
  set_bytes(st, 2);
}

void BM_Mxfp4(benchmark::State& st) {
  at::Tensor x = input();
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_mx(x, -1, 32, 2, 1));
  set_bytes(st, 2);
}

void BM_Mxint8(benchmark::State& st) {
  at::Tensor x = input();
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_mx(x, -1, 32, 0, 8));
  set_bytes(st, 2);
}

void BM_Nvfp4(benchmark::State& st) {
  at::Tensor x = input(), ts = at::full({1}, x.abs().max().item<float>() / (6.0f * 448.0f));
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_nvfp4(x, ts, -1, 16));
  set_bytes(st, 2);
}

void BM_Nf4PerChannel(benchmark::State& st) {
  at::Tensor x = input(), s = at::full({kRows}, 4.0);
  const std::vector<double>& l = anybit::nf4_levels();
  at::Tensor levels = at::tensor(std::vector<float>(l.begin(), l.end()));
  for (auto _ : st) benchmark::DoNotOptimize(anybit::fake_quant_lut(x, s, levels, 0, 0));
  set_bytes(st, 2);
}

}  // namespace

BENCHMARK(BM_Copy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Clone)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AtenPerTensor)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerTensor)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerTensorOut)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerChannelOut)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AtenPerChannel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerChannel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AtenPerTensorFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerTensorFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AtenPerChannelFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitPerChannelFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AtenLsqPerTensorFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AnybitLsqPerTensorFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MinifloatE4m3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MinifloatE2m1PerChannel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mxfp8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mxfp4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mxint8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Nvfp4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Nf4PerChannel)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  const char* t = std::getenv("ANYBIT_BENCH_THREADS");
  at::set_num_threads(t ? std::atoi(t) : 2);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
