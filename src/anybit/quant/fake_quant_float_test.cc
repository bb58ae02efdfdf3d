// The float-like fake-quant kernels against their references: minifloats (the OCP tables,
// ties to the even code, saturation), MX and NVFP4 blocks with their shared scales, and
// codebooks (lookup tables) with their gradients. The integer grids: fake_quant_test.cc.
#include "anybit/quant/fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "anybit/quant/fake_quant_elem.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {

// ---- minifloat ----------------------------------------------------------------------

TEST(FakeQuantMinifloat, TheTablesHoldTheOcpFormats) {
  EXPECT_EQ(minifloat_values(2, 1), (std::vector<double>{0, 0.5, 1, 1.5, 2, 3, 4, 6}));  // FP4 E2M1
  const std::vector<double> e4m3 = minifloat_values(4, 3);
  EXPECT_EQ(e4m3.size(), 127u);  // 128 codes, S.1111.111 is NaN
  EXPECT_EQ(e4m3.back(), 448.0);
  EXPECT_EQ(e4m3[1], std::ldexp(1.0, -9));  // the smallest subnormal
  const std::vector<double> e5m2 = minifloat_values(5, 2);
  EXPECT_EQ(e5m2.size(), 124u);  // exponent 31 is inf and NaN
  EXPECT_EQ(e5m2.back(), 57344.0);
  EXPECT_EQ(minifloat_values(3, 2).back(), 28.0);
  EXPECT_EQ(minifloat_values(2, 3).back(), 7.5);
}

// For every format of up to 12 bits: each value (and its negative) casts to itself, each
// midpoint of two neighbours goes to the even code, beyond the largest saturates, and the
// optimized kernel, the ATen composition and the enumerating reference agree.
TEST(FakeQuantMinifloat, EveryValueRoundTripsTiesGoToTheEvenCodeAndLargeValuesSaturate) {
  int formats = 0;
  for (int e = 1; e <= 8; ++e) {
    for (int m = 0; m <= 10 && 1 + e + m <= 12; ++m) {
      ++formats;
      const std::vector<double> v = minifloat_values(e, m);
      const double max = v.back();
      EXPECT_EQ(max, minifloat_max(e, m)) << e << m;
      std::vector<float> in, want;
      for (size_t k = 0; k < v.size(); ++k) {
        in.push_back(static_cast<float>(v[k]));
        want.push_back(static_cast<float>(v[k]));
        in.push_back(static_cast<float>(-v[k]));
        want.push_back(static_cast<float>(-v[k]));
        if (k + 1 < v.size()) {
          const double mid = (v[k] + v[k + 1]) / 2;
          in.push_back(static_cast<float>(mid));
          want.push_back(static_cast<float>(k % 2 == 0 ? v[k] : v[k + 1]));
        }
      }
      for (double big : {max * 1.01, max * 4, HUGE_VAL}) {  // max * 4 is inf in float32 for e8
        in.push_back(static_cast<float>(big));
        want.push_back(static_cast<float>(max));
        in.push_back(static_cast<float>(-big));
        want.push_back(static_cast<float>(-max));
      }
      const at::Tensor x = at::tensor(in), expect = at::tensor(want), one = at::ones({1});
      const std::string f = "e" + std::to_string(e) + "m" + std::to_string(m);
      EXPECT_TRUE(at::equal(fake_quant_minifloat_forward(x, one, -1, 0, e, m), expect)) << f;
      EXPECT_TRUE(at::equal(fake_quant_minifloat_reference(x, one, -1, 0, e, m), expect)) << f;
      EXPECT_TRUE(at::equal(fake_quant_minifloat_torchops(x, one, -1, 0, e, m), expect)) << f;
    }
  }
  EXPECT_EQ(formats, 60);
}

TEST(FakeQuantMinifloat, KernelMatchesTheReferencePerTensorChannelAndGroup) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({8, 6, 3, 3}) * at::exp2(at::randint(-6, 6, {8, 1, 1, 1}).to(at::kFloat));
  for (auto [e, m] : {std::pair<int, int>{4, 3}, {5, 2}, {3, 2}, {2, 3}, {2, 1}, {8, 7}, {5, 10}}) {
    const at::Tensor st = at::full({1}, 0.37f), sc = at::rand({8}) + 0.01, sg = at::rand({48}) + 0.01;  // 48 groups of 9
    EXPECT_TRUE(at::equal(fake_quant_minifloat_forward(x, st, -1, 0, e, m),
                          fake_quant_minifloat_reference(x, st, -1, 0, e, m))) << e << m;
    EXPECT_TRUE(at::equal(fake_quant_minifloat_forward(x, sc, 0, 0, e, m),
                          fake_quant_minifloat_reference(x, sc, 0, 0, e, m))) << e << m;
    EXPECT_TRUE(at::equal(fake_quant_minifloat_forward(x, sg, -1, 9, e, m),
                          fake_quant_minifloat_reference(x, sg, -1, 9, e, m))) << e << m;
    EXPECT_TRUE(at::allclose(fake_quant_minifloat_torchops(x, sc, 0, 0, e, m),
                             fake_quant_minifloat_reference(x, sc, 0, 0, e, m), 0, 0)) << e << m;
    const at::Tensor ycl = fake_quant_minifloat_forward(x.contiguous(at::MemoryFormat::ChannelsLast), st, -1, 0, e, m);
    EXPECT_TRUE(ycl.is_contiguous(at::MemoryFormat::ChannelsLast));  // per tensor: as it lies
    EXPECT_TRUE(at::equal(ycl, fake_quant_minifloat_reference(x, st, -1, 0, e, m))) << e << m;
  }
  const at::Tensor special = at::tensor({NAN, INFINITY, -INFINITY, 0.0f});
  const at::Tensor y = fake_quant_minifloat(special, at::full({1}, 2.0f), -1, 0, 4, 3);
  EXPECT_TRUE(std::isnan(y[0].item<float>()));
  EXPECT_EQ(y[1].item<float>(), 896.0f);  // saturated: 448 * 2
  EXPECT_EQ(y[2].item<float>(), -896.0f);
  EXPECT_EQ(y[3].item<float>(), 0.0f);
}

TEST(FakeQuantMinifloat, GradientIsStraightThroughInsideAndLsqOnTheScale) {
  // e2m1 at scale 0.5: the range is +-3
  at::Tensor x = at::tensor({0.2f, -1.3f, 2.9f, 3.5f, -7.0f}).requires_grad_();
  at::Tensor s = at::full({1}, 0.5f).requires_grad_();
  at::Tensor g = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f});
  at::Tensor y = fake_quant_minifloat(x, s, -1, 0, 2, 1, 0.5);
  (y * g).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({1.0f, 2.0f, 3.0f, 0.0f, 0.0f})));
  // inside (x^ - x) / s, outside sign(x) * max, times the gradient scale
  const at::Tensor yd = y.detach(), xd = x.detach();
  double want = 0;
  for (int i = 0; i < 5; ++i) {
    const double v = xd[i].item<double>() / 0.5;
    want += g[i].item<double>() * (std::fabs(v) <= 6 ? (yd[i].item<double>() - xd[i].item<double>()) / 0.5
                                                      : (v > 0 ? 6.0 : -6.0));
  }
  EXPECT_NEAR(s.grad().item<double>(), 0.5 * want, 1e-5);
}

// ---- block formats ----------------------------------------------------------------

TEST(FakeQuantMx, TheSharedScaleIsTheBlockMaximumsPowerOfTwoOverTheElementsLargest) {
  // MXFP4: a block whose maximum is 6 * 2^-3 has X = 2^(2 - 2) * 2^-3; its E2M1 multiples are exact
  const std::vector<double> e2m1 = minifloat_values(2, 1);
  std::vector<float> v;
  for (int i = 0; i < 32; ++i) v.push_back(static_cast<float>((i % 2 ? -1 : 1) * e2m1[i % 8] / 8));
  const at::Tensor x = at::tensor(v).reshape({1, 32});
  EXPECT_TRUE(at::equal(fake_quant_mx(x, -1, 32, 2, 1), x));
  // a maximum of 7 has the same X = 1 and saturates to 6 (MX's known clipping)
  const at::Tensor y = fake_quant_mx(at::tensor({7.0f, 1.0f, 0.26f, -5.0f}), -1, 32, 2, 1);
  EXPECT_TRUE(at::equal(y, at::tensor({6.0f, 1.0f, 0.5f, -4.0f})));
  // MXINT8: k * 2^-6 with |k| <= 127 under X = 2^floor(log2 max)
  const at::Tensor z = fake_quant_mx(at::tensor({1.5f, 0.01f, -1.999f}), -1, 32, 0, 8);
  EXPECT_TRUE(at::equal(z, at::tensor({1.5f, 1.0f / 64, -127.0f / 64})));
}

TEST(FakeQuantMx, KernelMatchesTheReferenceOnEveryElementFormatAlongEitherAxis) {
  at::manual_seed(5);
  // 40 channels: blocks of 32 and a last block of 8; magnitudes differ from block to block
  const at::Tensor a = at::randn({3, 40, 2, 3}) * at::exp2(at::randint(-30, 30, {3, 40, 1, 1}).to(at::kFloat));
  const at::Tensor b = at::randn({5, 70}) * at::exp2(at::randint(-8, 8, {5, 70}).to(at::kFloat));
  for (auto [e, m] : {std::pair<int, int>{4, 3}, {5, 2}, {3, 2}, {2, 3}, {2, 1}, {0, 8}, {0, 4}}) {
    EXPECT_TRUE(at::equal(fake_quant_mx(a, -1, 32, e, m), fake_quant_mx_reference(a, 1, 32, e, m))) << e << m;
    EXPECT_TRUE(at::equal(fake_quant_mx(b, -1, 32, e, m), fake_quant_mx_reference(b, 1, 32, e, m))) << e << m;
    EXPECT_TRUE(at::equal(fake_quant_mx(a, 3, 2, e, m), fake_quant_mx_reference(a, 3, 2, e, m))) << e << m;
    // a channels-last feature map (the fused evaluation's layout) is read and written as it lies
    const at::Tensor y = fake_quant_mx(a.contiguous(at::MemoryFormat::ChannelsLast), -1, 32, e, m);
    EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(at::equal(y, fake_quant_mx_reference(a, 1, 32, e, m))) << e << m;
  }
  // rows longer than the kernel's segments of 64 blocks, and a last block of 8
  const at::Tensor d = at::randn({3, 2 * 64 * 32 + 8}) * at::exp2(at::randint(-6, 6, {3, 4104}).to(at::kFloat));
  EXPECT_TRUE(at::equal(fake_quant_mx(d, -1, 32, 4, 3), fake_quant_mx_reference(d, 1, 32, 4, 3)));
  EXPECT_TRUE(at::equal(fake_quant_mx(d, -1, 32, 0, 8), fake_quant_mx_reference(d, 1, 32, 0, 8)));
  // a NaN poisons its own block only
  at::Tensor c = at::ones({64});
  c[3] = NAN;
  const at::Tensor y = fake_quant_mx(c, -1, 32, 4, 3);
  EXPECT_TRUE(at::isnan(y.slice(0, 0, 32)).all().item<bool>());
  EXPECT_TRUE(at::equal(y.slice(0, 32), at::ones({32})));
  // straight through
  at::Tensor x = at::randn({4, 32}).requires_grad_();
  fake_quant_mx(x, -1, 32, 2, 1).mul(3.0).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::full({4, 32}, 3.0f)));
}

TEST(FakeQuantNvfp4, KernelMatchesTheReferenceAndBlocksUseTheirE4m3Scale) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({8, 48}) * at::exp2(at::randint(-4, 4, {8, 3, 1}).to(at::kFloat)).expand({8, 3, 16}).reshape({8, 48});
  const at::Tensor ts = at::full({1}, w.abs().max().item<float>() / (6.0f * 448.0f));
  const at::Tensor y = fake_quant_nvfp4(w, ts, -1, 16);
  EXPECT_TRUE(at::equal(y, fake_quant_nvfp4_reference(w, ts, -1, 16)));
  const at::Tensor x = at::randn({2, 20, 3, 3});
  EXPECT_TRUE(at::equal(fake_quant_nvfp4(x, ts, -1, 16), fake_quant_nvfp4_reference(x, ts, 1, 16)));
  const at::Tensor ycl = fake_quant_nvfp4(x.contiguous(at::MemoryFormat::ChannelsLast), ts, -1, 16);
  EXPECT_TRUE(ycl.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(at::equal(ycl, fake_quant_nvfp4_reference(x, ts, 1, 16)));
  const at::Tensor longer = at::randn({2, 64 * 16 * 3 + 5});
  EXPECT_TRUE(at::equal(fake_quant_nvfp4(longer, ts, -1, 16), fake_quant_nvfp4_reference(longer, ts, -1, 16)));
  // each block is E2M1 values times one d = e4m3(max / 6 / ts) * ts
  const std::vector<double> e2m1 = minifloat_values(2, 1);
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t k = 0; k < 3; ++k) {
      const at::Tensor blk = w[r].slice(0, 16 * k, 16 * k + 16), q = y[r].slice(0, 16 * k, 16 * k + 16);
      const float sb = blk.abs().max().item<float>() / 6.0f * (1.0f / ts.item<float>());
      const float d = fake_quant_minifloat_reference(at::full({1}, sb), at::ones({1}), -1, 0, 4, 3).item<float>() *
                      ts.item<float>();
      for (int64_t i = 0; i < 16; ++i) {
        const double e = std::fabs(q[i].item<double>() / d);  // e2m1 * d was rounded to float32
        double nearest = 1e9;
        for (double v : e2m1) nearest = std::min(nearest, std::fabs(v - e));
        EXPECT_LE(nearest, 1e-6 * std::max(1.0, e)) << e;
      }
    }
  EXPECT_TRUE(at::equal(fake_quant_nvfp4(at::zeros({16}), ts, -1, 16), at::zeros({16})));
}

// ---- codebooks --------------------------------------------------------------------

TEST(FakeQuantLut, NearestLevelTiesToTheEvenIndexAndMatchesTheReference) {
  const at::Tensor levels = at::tensor({-1.0f, -0.25f, 0.0f, 0.5f});
  // ties: -0.625 between -1 (index 0) and -0.25 -> index 0; 0.25 between 0 (2) and 0.5 (3) -> 0
  const at::Tensor x = at::tensor({-3.0f, -0.625f, -0.1f, 0.25f, 0.3f, 9.0f});
  const at::Tensor want = at::tensor({-1.0f, -1.0f, 0.0f, 0.0f, 0.5f, 0.5f}) * 2;
  EXPECT_TRUE(at::equal(fake_quant_lut(x * 2, at::full({1}, 2.0f), levels, -1, 0), want));
  EXPECT_TRUE(at::equal(fake_quant_lut_reference(x * 2, at::full({1}, 2.0f), levels, -1, 0), want));
  at::manual_seed(7);
  const at::Tensor w = at::randn({6, 5, 3, 3});
  const at::Tensor rows = std::get<0>(at::sort(at::randn({6, 16}), 1));
  const at::Tensor s = at::rand({6}) + 0.5;
  EXPECT_TRUE(at::equal(fake_quant_lut(w, s, rows, 0, 0), fake_quant_lut_reference(w, s, rows, 0, 0)));
  const at::Tensor nf4 = at::tensor(std::vector<float>(nf4_levels().begin(), nf4_levels().end()));
  const at::Tensor sg = at::rand({6 * 5}) + 0.5;  // groups of 9
  EXPECT_TRUE(at::equal(fake_quant_lut(w, sg, nf4, -1, 9), fake_quant_lut_reference(w, sg, nf4, -1, 9)));
  // per tensor, a channels-last map is read and written as it lies
  const at::Tensor cl = fake_quant_lut(w.contiguous(at::MemoryFormat::ChannelsLast), at::full({1}, 1.5f), nf4, -1, 0);
  EXPECT_TRUE(cl.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(at::equal(cl, fake_quant_lut_reference(w, at::full({1}, 1.5f), nf4, -1, 0)));
  // codebooks above 32 levels take the binary search instead of the counting passes
  const at::Tensor big = std::get<0>(at::sort(at::randn({6, 64}), 1));
  EXPECT_TRUE(at::equal(fake_quant_lut(w, s, big, 0, 0), fake_quant_lut_reference(w, s, big, 0, 0)));
  EXPECT_EQ(nf4_levels().size(), 16u);
  EXPECT_EQ(nf4_levels()[7], 0.0);
}

TEST(FakeQuantLut, LevelsAndScaleGetTheirGradients) {
  const at::Tensor levels = at::tensor({-1.0f, 0.0f, 0.5f, 1.0f}).requires_grad_();
  const at::Tensor s = at::full({1}, 2.0f).requires_grad_();
  const at::Tensor x = at::tensor({-1.9f, 0.1f, 0.9f, 1.1f, 5.0f}).requires_grad_();
  const at::Tensor g = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f});
  (fake_quant_lut(x, s, levels, -1, 0, 0.5) * g).sum().backward();
  // x / s = -0.95, 0.05, 0.45, 0.55, 2.5: levels 0, 1, 2, 2, 3 (the last outside)
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 0.0f})));
  EXPECT_TRUE(at::allclose(levels.grad(), at::tensor({1.0f, 2.0f, 7.0f, 5.0f}) * 2 * 0.5));
  // inside l - x/s, outside l
  const double ds = 1 * (-1 + 0.95) + 2 * (0 - 0.05) + 3 * (0.5 - 0.45) + 4 * (0.5 - 0.55) + 5 * 1.0;
  EXPECT_NEAR(s.grad().item<double>(), 0.5 * ds, 1e-5);
}

}  // namespace
}  // namespace anybit
