// libanybit_cuda: loading and registration (everywhere), and its kernels against the CPU's
// (where a GPU is visible; GTEST_SKIP elsewhere, which ctest shows as skipped).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <string>

#include "anybit/base/error.h"
#include "anybit/calibrate/observe.h"
#include "anybit/quant/device.h"
#include "anybit/quant/fake_quant.h"

namespace anybit {
namespace {

bool gpu() { return load_cuda_kernels().empty() && at::hasCUDA() && at::getNumGPUs() > 0; }

#define REQUIRE_GPU() \
  if (!gpu()) GTEST_SKIP() << "no CUDA device visible: the CUDA kernels are not run here"

TEST(CudaPlugin, LoadsAndRegistersTheCudaKernels) {
  ASSERT_EQ(load_cuda_kernels(), "");
  for (const char* op : {"anybit::_fake_quant_affine_forward", "anybit::_fake_quant_affine_backward",
                         "anybit::_qdrop_mask"}) {
    const auto h = c10::Dispatcher::singleton().findSchema({op, ""});
    ASSERT_TRUE(h.has_value()) << op;
    EXPECT_TRUE(h->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) << op;
    EXPECT_TRUE(h->hasKernelForDispatchKey(c10::DispatchKey::CPU)) << op;
  }
}

TEST(CudaPlugin, DeviceOptionIsParsedOrRefusedWithOneMessage) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:99"), Error);
  if (gpu()) {
    EXPECT_TRUE(parse_device("cuda").is_cuda());
  } else {
    try {
      parse_device("cuda");
      FAIL() << "--device cuda accepted without a GPU";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA device is visible"), std::string::npos) << e.what();
    }
  }
}

// values that probe the rounding: ties, the clamp edges, zeros of both signs, NaN and infinities
at::Tensor probe_values(std::vector<int64_t> shape) {
  at::Tensor x = at::randn(shape) * 3;
  float* p = x.data_ptr<float>();
  const float specials[] = {0.5f, -0.5f, 1.5f, -2.5f, 0.0f, -0.0f, 127.5f, -128.5f, 1e30f, -1e30f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  for (int64_t i = 0; i < x.numel() && i < 13 * 7; i += 7) p[i] = specials[i / 7];
  return x;
}

void expect_bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  const at::Tensor ac = a.cpu().contiguous(), bc = b.cpu().contiguous();
  EXPECT_EQ(std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()), 0);
}

TEST(CudaKernels, AffineForwardEqualsTheCpuKernelBitForBit) {
  REQUIRE_GPU();
  torch::manual_seed(0);
  const at::Tensor x = probe_values({8, 6, 5, 5});
  struct Case {
    at::Tensor scale, zp;
    int64_t axis, group, qmin, qmax;
  };
  const Case cases[] = {{at::full({1}, 0.05f), at::zeros({1}), -1, 0, -128, 127},
                        {at::rand({6}) * 0.1 + 0.01, at::randint(-3, 4, {6}).to(at::kFloat), 1, 0, -8, 7},
                        {at::rand({8}) * 0.1 + 0.01, at::zeros({8}), 0, 0, 0, 15},
                        {at::rand({8 * 6 * 5}) * 0.2 + 0.01, at::zeros({8 * 6 * 5}), 0, 5, -2, 1}};
  for (const Case& c : cases)
    for (int64_t r = 0; r < 3; ++r) {
      const at::Tensor cpu = fake_quant_affine(x, c.scale, c.zp, c.axis, c.group, c.qmin, c.qmax, r, 1.0);
      const at::Tensor dev = fake_quant_affine(x.cuda(), c.scale.cuda(), c.zp.cuda(), c.axis, c.group, c.qmin,
                                               c.qmax, r, 1.0);
      ASSERT_TRUE(dev.is_cuda());
      expect_bitwise_equal(cpu, dev);
    }
}

TEST(CudaKernels, AffineBackwardEqualsTheCpuKernel) {
  REQUIRE_GPU();
  torch::manual_seed(1);
  const at::Tensor x = at::randn({16, 8, 7, 7}) * 2, g = at::randn({16, 8, 7, 7});
  const at::Tensor s = at::rand({8}) * 0.1 + 0.02, z = at::randint(-2, 3, {8}).to(at::kFloat);
  auto run = [&](const at::Device& d) {
    at::Tensor xs = x.to(d).requires_grad_(), ss = s.to(d).requires_grad_(), zs = z.to(d).requires_grad_();
    fake_quant_affine(xs, ss, zs, 1, 0, -8, 7, 0, 0.01).backward(g.to(d));
    return std::make_tuple(xs.grad().cpu(), ss.grad().cpu(), zs.grad().cpu());
  };
  const auto [dx0, ds0, dz0] = run(at::kCPU);
  const auto [dx1, ds1, dz1] = run(at::Device(at::kCUDA));
  expect_bitwise_equal(dx0, dx1);
  // the sums differ only in the order of their additions
  EXPECT_TRUE(at::allclose(ds0, ds1, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(dz0, dz1, 1e-5, 1e-6));
}

TEST(CudaKernels, QDropMaskAndGradientsEqualTheCpus) {
  REQUIRE_GPU();
  torch::manual_seed(2);
  const at::Tensor x = at::randn({4, 8, 9, 9}), g = at::randn({4, 8, 9, 9}), s = at::full({1}, 0.1f);
  auto run = [&](const at::Device& d) {
    at::Tensor xs = x.to(d).requires_grad_(), ss = s.to(d).requires_grad_();
    at::Tensor y = fake_quant_affine_drop(xs, ss, at::zeros({1}, d), -1, 0, -8, 7, 0.4, 123, 5, 0, 1.0);
    y.backward(g.to(d));
    return std::make_tuple(y.detach().cpu(), xs.grad().cpu(), ss.grad().cpu());
  };
  const auto [y0, dx0, ds0] = run(at::kCPU);
  const auto [y1, dx1, ds1] = run(at::Device(at::kCUDA));
  expect_bitwise_equal(y0, y1);
  expect_bitwise_equal(dx0, dx1);
  EXPECT_TRUE(at::allclose(ds0, ds1, 1e-5, 1e-6));
}

TEST(CudaKernels, MatchAtensCudaFakeQuantize) {
  REQUIRE_GPU();
  torch::manual_seed(3);
  const at::Tensor x = at::randn({32, 16, 3, 3}).cuda();
  const at::Tensor s = (at::rand({32}) * 0.05 + 0.01).cuda();
  const at::Tensor z = at::zeros({32}, at::kInt).cuda();
  const at::Tensor ref = at::fake_quantize_per_channel_affine(x, s, z, 0, -128, 127);
  expect_bitwise_equal(ref, fake_quant_affine(x, s, z.to(at::kFloat), 0, 0, -128, 127, 0, 1.0));
}

TEST(CudaKernels, PactBinaryAndTernaryRunOnTheDeviceAndEqualTheCpu) {
  REQUIRE_GPU();
  torch::manual_seed(4);
  const at::Tensor x = at::randn({8, 16, 5, 5}), a = at::full({1}, 2.0f), d = at::full({16}, 0.3f);
  expect_bitwise_equal(fake_quant_pact(x, a, 4, 0), fake_quant_pact(x.cuda(), a.cuda(), 4, 0));
  const at::Tensor al = at::rand({16}) + 0.5;
  expect_bitwise_equal(fake_quant_binary(x, al, 1, 1.0), fake_quant_binary(x.cuda(), al.cuda(), 1, 1.0));
  expect_bitwise_equal(fake_quant_ternary(x, al, d, 1, 1.0), fake_quant_ternary(x.cuda(), al.cuda(), d.cuda(), 1, 1.0));
}

// calibration statistics computed on the GPU (observe_where_it_is): the host observer's
TEST(CudaCalibration, StatisticsOnTheDeviceEqualTheHostObservers) {
  REQUIRE_GPU();
  torch::manual_seed(5);
  calib::Observer host, dev;
  for (const at::Tensor& b : {at::relu(at::randn({16, 8, 9, 9})), at::randn({4, 1000}) * 30,
                              at::tensor({1.0f, std::numeric_limits<float>::infinity(), -1e-39f})}) {
    host.observe(b.data_ptr<float>(), b.numel());
    observe_where_it_is(dev, b.cuda());
    EXPECT_EQ(dev.histogram().counts(), host.histogram().counts());
    EXPECT_EQ(dev.min(), host.min());
    EXPECT_EQ(dev.max(), host.max());
    EXPECT_EQ(dev.histogram().nonfinite(), host.histogram().nonfinite());
    EXPECT_NEAR(dev.mean_abs(), host.mean_abs(), 1e-12 * host.mean_abs());
  }
}

}  // namespace
}  // namespace anybit
