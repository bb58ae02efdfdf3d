// The fast, stepwise and plug-in kernels against their reference twins, over random
// shapes, strides, paddings, dilations, groups (depthwise included), zero points and seeds;
// the accumulator model on planted overflows; pooling, add and requantization on
// hand-checked, exhaustive and extreme cases.
#include "anybit/intsim/kernels.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "anybit/intsim/test_util.h"

namespace anybit {
namespace intsim {
namespace {

using testing::uniform_int;

struct ConvCase {
  Conv2dGeometry g;
  int32_t x_zero_point = 0;
  std::vector<int32_t> x, w, w_zero_point, bias;
  std::vector<int32_t> w_offset;  // w - z_w, [O][K]
  bool has_bias = true;
};

ConvCase random_conv(uint64_t seed) {
  std::mt19937_64 rng(seed);
  ConvCase c;
  Conv2dGeometry& g = c.g;
  const int64_t kind = uniform_int(rng, 0, 2);  // plain, grouped, depthwise
  if (kind == 2) {
    g.in_channels = uniform_int(rng, 1, 6);
    g.groups = g.in_channels;
    g.out_channels = g.in_channels * uniform_int(rng, 1, 2);
  } else {
    g.groups = kind == 0 ? 1 : uniform_int(rng, 2, 3);
    g.in_channels = g.groups * uniform_int(rng, 1, 4);
    g.out_channels = g.groups * uniform_int(rng, 1, 6);
  }
  g.batch = uniform_int(rng, 1, 2);
  do {
    g.kernel_h = uniform_int(rng, 1, 5), g.kernel_w = uniform_int(rng, 1, 5);
    g.stride_h = uniform_int(rng, 1, 3), g.stride_w = uniform_int(rng, 1, 3);
    g.pad_h = uniform_int(rng, 0, 2), g.pad_w = uniform_int(rng, 0, 2);
    g.dilation_h = uniform_int(rng, 1, 2), g.dilation_w = uniform_int(rng, 1, 2);
    g.in_h = uniform_int(rng, 1, 12), g.in_w = uniform_int(rng, 1, 12);
  } while (g.in_h + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1 < 0 ||
           g.in_w + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1 < 0);
  const bool unsigned_x = uniform_int(rng, 0, 1);
  const int32_t lo = unsigned_x ? 0 : -128, hi = unsigned_x ? 255 : 127;
  c.x_zero_point = unsigned_x ? static_cast<int32_t>(uniform_int(rng, 0, 255)) : 0;
  c.x.resize(static_cast<size_t>(g.batch * g.in_channels * g.in_h * g.in_w));
  for (auto& v : c.x) v = static_cast<int32_t>(uniform_int(rng, lo, hi));
  const int64_t K = g.patch_size();
  c.w.resize(static_cast<size_t>(g.out_channels * K));
  for (auto& v : c.w) v = static_cast<int32_t>(uniform_int(rng, -128, 127));
  const bool per_channel = uniform_int(rng, 0, 1);
  for (int64_t o = 0; o < (per_channel ? g.out_channels : 1); ++o)
    c.w_zero_point.push_back(static_cast<int32_t>(uniform_int(rng, -10, 10)));
  c.has_bias = uniform_int(rng, 0, 3) != 0;
  for (int64_t o = 0; o < g.out_channels; ++o) c.bias.push_back(static_cast<int32_t>(uniform_int(rng, -100000, 100000)));
  for (int64_t o = 0; o < g.out_channels; ++o)
    for (int64_t k = 0; k < K; ++k)
      c.w_offset.push_back(c.w[o * K + k] - c.w_zero_point[per_channel ? o : 0]);
  return c;
}

int64_t conv_out_size(const Conv2dGeometry& g) { return g.batch * g.out_channels * g.out_h() * g.out_w(); }

class KernelSeed : public ::testing::TestWithParam<int> {};

TEST_P(KernelSeed, Conv2dFastKernelsMatchTheReference) {
  const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()));
  const int32_t* bias = c.has_bias ? c.bias.data() : nullptr;
  const int64_t n = conv_out_size(c.g);
  std::vector<int64_t> ref(static_cast<size_t>(n));
  int64_t overflows = 0;
  conv2d_int_reference(c.g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, bias, {},
                       ref.data(), &overflows);
  EXPECT_EQ(overflows, 0);
  std::vector<int32_t> fast32(static_cast<size_t>(n)), fast16(static_cast<size_t>(n));
  conv2d_int32_acc32(c.g, c.x.data(), c.x_zero_point, c.w_offset.data(), bias, fast32.data());
  const std::vector<int16_t> w16(c.w_offset.begin(), c.w_offset.end());
  conv2d_int16_acc32(c.g, c.x.data(), c.x_zero_point, w16.data(), bias, fast16.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(fast32[i], ref[i]) << "int32 operands, element " << i;
    ASSERT_EQ(fast16[i], ref[i]) << "int16 operands, element " << i;
  }
}

// The sums of squared products (the gauss:rel noise) against the definition, element by
// element: sum over the window of ((x - z_x) * w)^2, padding contributing 0; with the
// double weights too (the AVX-512 kernel where the CPU has it).
TEST_P(KernelSeed, Conv2dSquareSumsMatchTheDefinition) {
  const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()) + 5000);
  const Conv2dGeometry& g = c.g;
  const int64_t K = g.patch_size(), P = g.out_h() * g.out_w(), Cg = g.in_channels / g.groups;
  const int64_t Og = g.out_channels / g.groups;
  std::vector<uint32_t> w_sq(c.w_offset.size());
  for (size_t i = 0; i < w_sq.size(); ++i) w_sq[i] = static_cast<uint32_t>(c.w_offset[i] * c.w_offset[i]);
  const std::vector<double> w_f64(w_sq.begin(), w_sq.end());
  std::vector<double> got(static_cast<size_t>(conv_out_size(g))), got64(got.size());
  KernelScratch scratch;
  conv2d_square_sums(g, c.x.data(), c.x_zero_point, w_sq.data(), got.data(), scratch);
  conv2d_square_sums(g, c.x.data(), c.x_zero_point, w_sq.data(), got64.data(), scratch, w_f64.data());
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o = 0; o < g.out_channels; ++o)
      for (int64_t p = 0; p < P; ++p) {
        const int64_t grp = o / Og, oy = p / g.out_w(), ox = p % g.out_w();
        double want = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t ci = k / (g.kernel_h * g.kernel_w), ky = k / g.kernel_w % g.kernel_h, kx = k % g.kernel_w;
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
          if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
          const int64_t xv = c.x[((n * g.in_channels + grp * Cg + ci) * g.in_h + iy) * g.in_w + ix] - c.x_zero_point;
          const double prod = static_cast<double>(xv * c.w_offset[o * K + k]);
          want += prod * prod;
        }
        const size_t i = static_cast<size_t>((n * g.out_channels + o) * P + p);
        ASSERT_EQ(got[i], want) << "element " << i;
        ASSERT_EQ(got64[i], want) << "element " << i << " (double weights)";
      }
}

TEST_P(KernelSeed, Conv2dMacPathWithExactMacMatchesTheReferenceAtEveryWidthAndMode) {
  const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()) + 1000);
  const int32_t* bias = c.has_bias ? c.bias.data() : nullptr;
  const int64_t n = conv_out_size(c.g);
  ExactMac exact;
  for (int bits : {8, 12, 16, 20, 32}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      const AccumulatorSpec spec{bits, mode};
      std::vector<int64_t> ref(static_cast<size_t>(n)), mac(static_cast<size_t>(n));
      int64_t ref_overflows = 0;
      conv2d_int_reference(c.g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, bias, spec,
                           ref.data(), &ref_overflows);
      Accumulator acc(spec);
      MacStats stats;
      conv2d_int_mac(c.g, c.x.data(), c.x_zero_point, c.w_offset.data(), bias, exact, "conv", acc,
                     mac.data(), &stats);
      ASSERT_EQ(mac, ref) << bits << " bits, " << overflow_name(mode);
      EXPECT_EQ(acc.overflows(), ref_overflows) << bits << " bits, " << overflow_name(mode);
      EXPECT_EQ(stats.dot_products, n);
      EXPECT_EQ(stats.sum_abs_error, 0.0);
    }
  }
}

TEST_P(KernelSeed, Conv2dStepwiseKernelsMatchTheReferenceAtEveryWidthAndMode) {
  const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()) + 3000);
  const int32_t* bias = c.has_bias ? c.bias.data() : nullptr;
  const int64_t n = conv_out_size(c.g);
  const std::vector<int16_t> w16(c.w_offset.begin(), c.w_offset.end());
  KernelScratch scratch;
  // 8..31 bits run in int32 lanes with int16 operands, 32 bits and int32 operands in int64.
  for (int bits : {8, 12, 16, 20, 31, 32}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      const AccumulatorSpec spec{bits, mode};
      std::vector<int64_t> ref(static_cast<size_t>(n));
      int64_t ref_overflows = 0;
      conv2d_int_reference(c.g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, bias, spec,
                           ref.data(), &ref_overflows);
      std::vector<int32_t> s16(static_cast<size_t>(n)), s32(static_cast<size_t>(n));
      int64_t overflows16 = 0, overflows32 = 0;
      conv2d_int16_stepwise(c.g, c.x.data(), c.x_zero_point, w16.data(), bias, spec, s16.data(),
                            &overflows16, scratch);
      conv2d_int32_stepwise(c.g, c.x.data(), c.x_zero_point, c.w_offset.data(), bias, spec,
                            s32.data(), &overflows32, scratch);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(s16[i], ref[i]) << bits << " bits, " << overflow_name(mode) << ", int16, " << i;
        ASSERT_EQ(s32[i], ref[i]) << bits << " bits, " << overflow_name(mode) << ", int32, " << i;
      }
      EXPECT_EQ(overflows16, ref_overflows) << bits << " bits, " << overflow_name(mode);
      EXPECT_EQ(overflows32, ref_overflows) << bits << " bits, " << overflow_name(mode);
    }
  }
}

TEST_P(KernelSeed, PackedFastKernelsReuseOneScratchAcrossShapes) {
  KernelScratch scratch;
  for (uint64_t i = 0; i < 3; ++i) {
    const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()) * 3 + i + 4000);
    const int32_t* bias = c.has_bias ? c.bias.data() : nullptr;
    const int64_t n = conv_out_size(c.g);
    std::vector<int64_t> ref(static_cast<size_t>(n));
    conv2d_int_reference(c.g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, bias, {},
                         ref.data(), nullptr);
    const std::vector<int16_t> w16(c.w_offset.begin(), c.w_offset.end());
    const PackedWeights<int16_t> p16 = pack_conv2d_weights(c.g, w16.data());
    const PackedWeights<int32_t> p32 = pack_conv2d_weights(c.g, c.w_offset.data());
    EXPECT_EQ(p16.depth, c.g.patch_size());
    EXPECT_EQ(p16.depth_padded % 16, 0);
    EXPECT_EQ(p16.rows * p16.groups, c.g.out_channels);
    std::vector<int32_t> f16(static_cast<size_t>(n)), f32(static_cast<size_t>(n));
    conv2d_acc32(c.g, c.x.data(), c.x_zero_point, p16, bias, f16.data(), scratch);
    conv2d_acc32(c.g, c.x.data(), c.x_zero_point, p32, bias, f32.data(), scratch);
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(f16[j], ref[j]) << "case " << i << ", int16, element " << j;
      ASSERT_EQ(f32[j], ref[j]) << "case " << i << ", int32, element " << j;
    }
  }
}

// A random multiplier per output channel, some with a left shift (M >= 1), some zero.
std::vector<DyadicMultiplier> random_multipliers(std::mt19937_64& rng, int64_t n) {
  std::vector<DyadicMultiplier> m;
  for (int64_t i = 0; i < n; ++i) {
    DyadicMultiplier d;
    d.shift = static_cast<int>(uniform_int(rng, -3, 14));
    d.m0 = uniform_int(rng, 0, 9) == 0 ? 0 : static_cast<int32_t>(uniform_int(rng, 1 << 30, (int64_t{1} << 31) - 1));
    m.push_back(d);
  }
  return m;
}

// The fast conv with its requantization fused against the reference accumulators put
// through requantize_dyadic.
void expect_fused_requantization_matches(const ConvCase& c, std::mt19937_64& rng, const std::string& what) {
  const int32_t* bias = c.has_bias ? c.bias.data() : nullptr;
  const int64_t n = conv_out_size(c.g), P = c.g.out_h() * c.g.out_w();
  std::vector<int64_t> ref(static_cast<size_t>(n));
  conv2d_int_reference(c.g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, bias, {},
                       ref.data(), nullptr);
  const std::vector<int16_t> w16(c.w_offset.begin(), c.w_offset.end());
  const PackedWeights<int16_t> packed = pack_conv2d_weights(c.g, w16.data());
  KernelScratch scratch;
  for (bool per_channel : {true, false}) {
    const std::vector<DyadicMultiplier> m = random_multipliers(rng, per_channel ? c.g.out_channels : 1);
    const bool wide = uniform_int(rng, 0, 3) == 0;
    const int32_t qmin = wide ? -32768 : -128, qmax = wide ? 32767 : 127;
    const int32_t zero_point = static_cast<int32_t>(uniform_int(rng, -20, 20));
    std::vector<int32_t> y(static_cast<size_t>(n));
    conv2d_acc32_requantize(c.g, c.x.data(), c.x_zero_point, packed, bias, m, zero_point, qmin, qmax,
                            y.data(), scratch);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = i / P % c.g.out_channels;
      const DyadicMultiplier mo = m[per_channel ? static_cast<size_t>(o) : 0];
      ASSERT_EQ(y[i], requantize_dyadic(ref[i], mo, zero_point, qmin, qmax))
          << what << ", element " << i << ", m0 " << mo.m0 << ", shift " << mo.shift;
    }
  }
}

TEST_P(KernelSeed, Conv2dFastKernelWithFusedRequantizationMatchesTheReference) {
  const ConvCase c = random_conv(static_cast<uint64_t>(GetParam()) + 5000);
  std::mt19937_64 rng(static_cast<uint64_t>(GetParam()) + 5000);
  expect_fused_requantization_matches(c, rng, "random case");
}

// Layers the size of a small ResNet's, with output channels that are not a multiple of the
// direct convolution's row block and maps whose rows straddle its vectors.
TEST(Kernels, FastConvOnResNetSizedLayersMatchesTheReference) {
  struct Shape {
    int64_t c, h, o, k, stride, pad, dilation, groups;
  };
  const std::vector<Shape> shapes = {{1, 28, 16, 3, 1, 1, 1, 1},  {16, 28, 20, 3, 1, 1, 1, 1},
                                     {16, 28, 32, 1, 2, 0, 1, 1}, {16, 28, 32, 3, 2, 1, 1, 1},
                                     {33, 14, 9, 3, 1, 1, 1, 1},  {32, 14, 64, 3, 2, 1, 1, 1},
                                     {64, 7, 64, 3, 1, 1, 1, 1},  {12, 13, 12, 3, 1, 2, 2, 12},
                                     {6, 17, 10, 5, 3, 2, 1, 2},  {8, 9, 8, 2, 4, 1, 1, 1}};
  std::mt19937_64 rng(15);
  for (const Shape& s : shapes) {
    ConvCase c;
    Conv2dGeometry& g = c.g;
    g.batch = 2, g.in_channels = s.c, g.in_h = g.in_w = s.h, g.out_channels = s.o;
    g.kernel_h = g.kernel_w = s.k, g.stride_h = g.stride_w = s.stride, g.pad_h = g.pad_w = s.pad;
    g.dilation_h = g.dilation_w = s.dilation, g.groups = s.groups;
    c.x_zero_point = static_cast<int32_t>(uniform_int(rng, 0, 255));
    c.x.resize(static_cast<size_t>(g.batch * g.in_channels * g.in_h * g.in_w));
    for (auto& v : c.x) v = static_cast<int32_t>(uniform_int(rng, 0, 255));
    const int64_t K = g.patch_size();
    c.w.resize(static_cast<size_t>(g.out_channels * K));
    for (auto& v : c.w) v = static_cast<int32_t>(uniform_int(rng, -128, 127));
    c.w_zero_point = {static_cast<int32_t>(uniform_int(rng, -3, 3))};
    for (int64_t o = 0; o < g.out_channels; ++o) c.bias.push_back(static_cast<int32_t>(uniform_int(rng, -50000, 50000)));
    for (int64_t i = 0; i < g.out_channels * K; ++i) c.w_offset.push_back(c.w[i] - c.w_zero_point[0]);
    const std::string what = "shape " + std::to_string(s.c) + "x" + std::to_string(s.h) + " -> " +
                             std::to_string(s.o) + ", k" + std::to_string(s.k) + " s" + std::to_string(s.stride);
    std::vector<int64_t> ref(static_cast<size_t>(conv_out_size(g)));
    conv2d_int_reference(g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, c.bias.data(), {},
                         ref.data(), nullptr);
    std::vector<int32_t> fast(ref.size());
    const std::vector<int16_t> w16(c.w_offset.begin(), c.w_offset.end());
    conv2d_int16_acc32(g, c.x.data(), c.x_zero_point, w16.data(), c.bias.data(), fast.data());
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(fast[i], ref[i]) << what << ", element " << i;
    expect_fused_requantization_matches(c, rng, what);
  }
}

// 8-bit operands whose products fit int16 (|w| <= 127, |x - z_x| <= 255), accumulators of at
// most 16 bits: the stepwise kernels run in 16-bit lanes (on CPUs with the SIMD kernels).
// Overflows are planted by a large bias-free sum, in both directions.
TEST_P(KernelSeed, StepwiseKernelsInSixteenBitLanesMatchTheReference) {
  std::mt19937_64 rng(static_cast<uint64_t>(GetParam()) + 6000);
  ConvCase c;
  Conv2dGeometry& g = c.g;
  g.batch = uniform_int(rng, 1, 2);
  g.groups = uniform_int(rng, 1, 2);
  g.in_channels = g.groups * uniform_int(rng, 1, 5);
  g.out_channels = g.groups * uniform_int(rng, 1, 5);
  g.in_h = uniform_int(rng, 3, 14), g.in_w = uniform_int(rng, 3, 14);
  g.kernel_h = g.kernel_w = uniform_int(rng, 1, 3);
  g.stride_h = g.stride_w = uniform_int(rng, 1, 2);
  g.pad_h = g.pad_w = uniform_int(rng, 0, 1);
  const bool unsigned_x = uniform_int(rng, 0, 1);
  c.x_zero_point = unsigned_x ? 0 : static_cast<int32_t>(uniform_int(rng, -10, 10));
  c.x.resize(static_cast<size_t>(g.batch * g.in_channels * g.in_h * g.in_w));
  // mostly one sign, so that sums run far enough to overflow
  for (auto& v : c.x) v = static_cast<int32_t>(unsigned_x ? uniform_int(rng, 0, 255) : uniform_int(rng, -118, 117));
  const int64_t K = g.patch_size();
  const int64_t w_lo = uniform_int(rng, 0, 1) ? -127 : -20, w_hi = w_lo == -127 ? 20 : 127;
  for (int64_t i = 0; i < g.out_channels * K; ++i) c.w.push_back(static_cast<int32_t>(uniform_int(rng, w_lo, w_hi)));
  c.w_zero_point = {0};
  c.w_offset = c.w;
  for (int64_t o = 0; o < g.out_channels; ++o) c.bias.push_back(static_cast<int32_t>(uniform_int(rng, -3000, 3000)));
  const std::vector<int16_t> w16(c.w.begin(), c.w.end());
  const int64_t n = conv_out_size(g);
  KernelScratch scratch;
  int64_t planted = 0;
  for (int bits : {8, 9, 12, 15, 16}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      const AccumulatorSpec spec{bits, mode};
      std::vector<int64_t> ref(static_cast<size_t>(n));
      int64_t ref_overflows = 0;
      conv2d_int_reference(g, c.x.data(), c.x_zero_point, c.w.data(), c.w_zero_point, c.bias.data(), spec,
                           ref.data(), &ref_overflows);
      planted += ref_overflows;
      std::vector<int32_t> s16(static_cast<size_t>(n));
      int64_t overflows = 0;
      conv2d_int16_stepwise(g, c.x.data(), c.x_zero_point, w16.data(), c.bias.data(), spec, s16.data(),
                            &overflows, scratch);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(s16[i], ref[i]) << bits << " bits, " << overflow_name(mode) << ", element " << i;
      EXPECT_EQ(overflows, ref_overflows) << bits << " bits, " << overflow_name(mode);
    }
  }
  EXPECT_GT(planted, 0);
  // linear over the same operands: the images are the lanes
  const int64_t I = uniform_int(rng, 1, 300), O = uniform_int(rng, 1, 7), batch = uniform_int(rng, 1, 40);
  std::vector<int32_t> x(static_cast<size_t>(batch * I)), w(static_cast<size_t>(O * I));
  for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, 0, 255));
  for (auto& v : w) v = static_cast<int32_t>(uniform_int(rng, w_lo, w_hi));
  const std::vector<int16_t> lw16(w.begin(), w.end());
  for (int bits : {8, 13, 16}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      std::vector<int64_t> ref(static_cast<size_t>(batch * O));
      int64_t ref_overflows = 0, overflows = 0;
      linear_int_reference(batch, I, O, x.data(), 0, w.data(), {0}, nullptr, {bits, mode}, ref.data(), &ref_overflows);
      std::vector<int32_t> out(ref.size());
      linear_int16_stepwise(batch, I, O, x.data(), 0, lw16.data(), nullptr, {bits, mode}, out.data(), &overflows,
                            scratch);
      for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(out[i], ref[i]) << bits << " bits, " << overflow_name(mode);
      EXPECT_EQ(overflows, ref_overflows) << bits << " bits, " << overflow_name(mode);
    }
  }
}

TEST_P(KernelSeed, LinearFastAndMacKernelsMatchTheReference) {
  std::mt19937_64 rng(static_cast<uint64_t>(GetParam()) + 2000);
  const int64_t batch = uniform_int(rng, 1, 20), I = uniform_int(rng, 1, 70), O = uniform_int(rng, 1, 9);
  const int32_t zx = static_cast<int32_t>(uniform_int(rng, 0, 255));
  std::vector<int32_t> x(static_cast<size_t>(batch * I)), w(static_cast<size_t>(O * I)), bias, zw, w_offset;
  for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, 0, 255));
  for (auto& v : w) v = static_cast<int32_t>(uniform_int(rng, -128, 127));
  for (int64_t o = 0; o < O; ++o) {
    bias.push_back(static_cast<int32_t>(uniform_int(rng, -50000, 50000)));
    zw.push_back(static_cast<int32_t>(uniform_int(rng, -5, 5)));
  }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) w_offset.push_back(w[o * I + i] - zw[o]);
  std::vector<int64_t> ref(static_cast<size_t>(batch * O));
  linear_int_reference(batch, I, O, x.data(), zx, w.data(), zw, bias.data(), {}, ref.data(), nullptr);
  std::vector<int32_t> f32(ref.size()), f16(ref.size());
  linear_int32_acc32(batch, I, O, x.data(), zx, w_offset.data(), bias.data(), f32.data());
  const std::vector<int16_t> w16(w_offset.begin(), w_offset.end());
  linear_int16_acc32(batch, I, O, x.data(), zx, w16.data(), bias.data(), f16.data());
  ExactMac exact;
  KernelScratch scratch;
  for (int bits : {8, 16, 31, 32}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      std::vector<int64_t> r(ref.size()), m(ref.size());
      int64_t ro = 0;
      linear_int_reference(batch, I, O, x.data(), zx, w.data(), zw, bias.data(), {bits, mode}, r.data(), &ro);
      Accumulator acc({bits, mode});
      linear_int_mac(batch, I, O, x.data(), zx, w_offset.data(), bias.data(), exact, "fc", acc, m.data(), nullptr);
      ASSERT_EQ(m, r) << bits << " " << overflow_name(mode);
      EXPECT_EQ(acc.overflows(), ro);
      std::vector<int32_t> s16(ref.size()), s32(ref.size());
      int64_t o16 = 0, o32 = 0;
      linear_int16_stepwise(batch, I, O, x.data(), zx, w16.data(), bias.data(), {bits, mode}, s16.data(), &o16, scratch);
      linear_int32_stepwise(batch, I, O, x.data(), zx, w_offset.data(), bias.data(), {bits, mode}, s32.data(), &o32,
                            scratch);
      for (size_t i = 0; i < r.size(); ++i) {
        ASSERT_EQ(s16[i], r[i]) << bits << " " << overflow_name(mode) << " int16 " << i;
        ASSERT_EQ(s32[i], r[i]) << bits << " " << overflow_name(mode) << " int32 " << i;
      }
      EXPECT_EQ(o16, ro);
      EXPECT_EQ(o32, ro);
    }
  }
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(f32[i], ref[i]) << i;
    ASSERT_EQ(f16[i], ref[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, KernelSeed, ::testing::Range(0, 60));

TEST(Kernels, DepthwiseConvWithPaddingGivesTheHandComputedSums) {
  Conv2dGeometry g;
  g.in_channels = g.out_channels = g.groups = 2;
  g.in_h = g.in_w = 2;
  g.kernel_h = g.kernel_w = 3;
  g.pad_h = g.pad_w = 1;
  const std::vector<int32_t> x = {1, 2, 3, 4, /* channel 1 */ 10, 20, 30, 40};
  std::vector<int32_t> w(18, 1);  // channel 0: all ones
  for (int k = 9; k < 18; ++k) w[k] = k == 13 ? 2 : 0;  // channel 1: 2 at the centre
  std::vector<int32_t> acc(8);
  conv2d_int32_acc32(g, x.data(), 0, w.data(), nullptr, acc.data());
  EXPECT_EQ(acc, (std::vector<int32_t>{10, 10, 10, 10, 20, 40, 60, 80}));
}

// int16 operands at their extremes, with the bound just inside int32: every pmaddwd pair
// and every partial sum of the GEMM must stay exact.
TEST(Kernels, FastKernelsAreExactAtTheEdgeOfTheBound) {
  std::mt19937_64 rng(8);
  const int64_t K = 1000, O = 6, batch = 5;
  std::vector<int32_t> x(static_cast<size_t>(batch * K)), w(static_cast<size_t>(O * K)), bias(O);
  for (auto& v : x) v = uniform_int(rng, 0, 1) ? -32768 : 32767;
  for (int64_t o = 0; o < O; ++o) {
    // One pmaddwd pair near 2^30 + 2^29 and small weights after it: max|x| * sum|w| is
    // about 1.6e9, and the bias fills the rest of the range.
    int64_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      int32_t v = static_cast<int32_t>(uniform_int(rng, -1, 1));
      if (k == 0) v = o % 2 ? -32768 : 32767;
      if (k == 1) v = o % 2 ? -16384 : 16384;
      w[o * K + k] = v;
      sum += std::abs(int64_t{v});
    }
    const int64_t room = (int64_t{1} << 31) - 1 - 32768 * sum;
    ASSERT_GT(room, 0);
    bias[o] = static_cast<int32_t>(o % 2 ? -room : room);
  }
  std::vector<int64_t> ref(static_cast<size_t>(batch * O));
  int64_t overflows = 0;
  linear_int_reference(batch, K, O, x.data(), 0, w.data(), {0}, bias.data(), {}, ref.data(), &overflows);
  EXPECT_EQ(overflows, 0);
  const std::vector<int16_t> w16(w.begin(), w.end());
  std::vector<int32_t> f16(ref.size()), f32(ref.size());
  linear_int16_acc32(batch, K, O, x.data(), 0, w16.data(), bias.data(), f16.data());
  linear_int32_acc32(batch, K, O, x.data(), 0, w.data(), bias.data(), f32.data());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(f16[i], ref[i]) << i;
    ASSERT_EQ(f32[i], ref[i]) << i;
  }
}

TEST(Accumulator, WrapKeepsTheLowBitsLikeATwosComplementRegister) {
  std::mt19937_64 rng(9);
  for (int i = 0; i < 100000; ++i) {
    const int64_t v = static_cast<int64_t>(rng()) >> uniform_int(rng, 0, 40);
    ASSERT_EQ(fit_accumulator(v, {8, Overflow::kWrap}, nullptr), static_cast<int8_t>(v));
    ASSERT_EQ(fit_accumulator(v, {16, Overflow::kWrap}, nullptr), static_cast<int16_t>(v));
    ASSERT_EQ(fit_accumulator(v, {32, Overflow::kWrap}, nullptr), static_cast<int32_t>(v));
    const int64_t s = fit_accumulator(v, {12, Overflow::kSaturate}, nullptr);
    ASSERT_EQ(s, std::min<int64_t>(std::max<int64_t>(v, -2048), 2047));
  }
  EXPECT_THROW(Accumulator({7, Overflow::kWrap}), Error);
  EXPECT_THROW(Accumulator({33, Overflow::kWrap}), Error);
}

// 127 * 127 three times is 48387: the third addition leaves a 16-bit accumulator.
TEST(Accumulator, PlantedOverflowWrapsToTheLowSixteenBitsAndIsCountedOnce) {
  const std::vector<int32_t> x = {127, 127, 127}, w = {127, 127, 127};
  const int32_t bias = -1000;
  int64_t out = 0, overflows = 0;
  linear_int_reference(1, 3, 1, x.data(), 0, w.data(), {0}, &bias, {16, Overflow::kWrap}, &out, &overflows);
  EXPECT_EQ(out, 48387 - 65536 - 1000);
  EXPECT_EQ(overflows, 1);
  ExactMac exact;
  Accumulator acc({16, Overflow::kWrap});
  int64_t mac_out = 0;
  linear_int_mac(1, 3, 1, x.data(), 0, w.data(), &bias, exact, "fc", acc, &mac_out, nullptr);
  EXPECT_EQ(mac_out, out);
  EXPECT_EQ(acc.overflows(), 1);
}

TEST(Accumulator, PlantedOverflowSaturatesAtTheLargestSixteenBitValueAndIsCountedOnce) {
  const std::vector<int32_t> x = {127, 127, 127}, w = {127, 127, 127};
  const int32_t bias = -1000;
  int64_t out = 0, overflows = 0;
  linear_int_reference(1, 3, 1, x.data(), 0, w.data(), {0}, &bias, {16, Overflow::kSaturate}, &out, &overflows);
  EXPECT_EQ(out, 32767 - 1000);
  EXPECT_EQ(overflows, 1);
  // Wide enough, nothing overflows and the modes agree.
  overflows = 0;
  linear_int_reference(1, 3, 1, x.data(), 0, w.data(), {0}, &bias, {17, Overflow::kSaturate}, &out, &overflows);
  EXPECT_EQ(out, 48387 - 1000);
  EXPECT_EQ(overflows, 0);
}

TEST(Pooling, MaxPoolIgnoresPaddingAndHonoursCeilMode) {
  Pool2dGeometry g;
  g.in_h = 3, g.in_w = 3;
  g.kernel_h = g.kernel_w = 2;
  g.stride_h = g.stride_w = 2;
  g.pad_h = g.pad_w = 1;
  g.out_h = g.out_w = 2;
  const std::vector<int32_t> x = {-5, -6, -7, -8, -9, -10, -11, -12, -13};
  std::vector<int32_t> y(4);
  maxpool2d_int(g, x.data(), -128, y.data());
  EXPECT_EQ(y, (std::vector<int32_t>{-5, -6, -8, -9}));  // padding (-inf) never wins
  // ceil_mode: a 3x3 input, kernel 2, stride 2, no padding gives 2x2 windows, the last partial
  g.pad_h = g.pad_w = 0;
  maxpool2d_int(g, x.data(), -128, y.data());
  EXPECT_EQ(y, (std::vector<int32_t>{-5, -7, -11, -13}));
}

TEST(Pooling, AveragePoolSumsOffsetsAndCountsOverflows) {
  Pool2dGeometry g;
  g.in_h = g.in_w = 4;
  g.kernel_h = g.kernel_w = 2;
  g.stride_h = g.stride_w = 2;
  g.out_h = g.out_w = 2;
  std::vector<int32_t> x(16);
  for (int i = 0; i < 16; ++i) x[i] = 100 + i;
  std::vector<int64_t> sum(4);
  Accumulator acc;
  avgpool2d_sum_int(g, x.data(), 100, acc, sum.data());
  EXPECT_EQ(sum, (std::vector<int64_t>{0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15}));
  EXPECT_EQ(acc.overflows(), 0);
  std::vector<int32_t> big(16, 127);
  Accumulator narrow({8, Overflow::kSaturate});
  avgpool2d_sum_int(g, big.data(), -128, narrow, sum.data());
  EXPECT_EQ(sum, (std::vector<int64_t>{127, 127, 127, 127}));
  EXPECT_EQ(narrow.overflows(), 16);  // every addition of 255 saturates
}

// The global pool (the window is the whole plane) against a plain sum, and where the
// accumulator is too narrow for the bound, against every addition through it.
TEST(Pooling, GlobalAveragePoolSumsMatchAdditionsThroughTheAccumulator) {
  std::mt19937_64 rng(16);
  Pool2dGeometry g;
  g.batch = 3, g.channels = 5, g.in_h = 7, g.in_w = 6;
  g.kernel_h = 7, g.kernel_w = 6;
  std::vector<int32_t> x(static_cast<size_t>(g.batch * g.channels * 42));
  for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, 0, 255));
  for (int bits : {32, 16, 12}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      Accumulator acc({bits, mode}), expect_acc({bits, mode});
      std::vector<int64_t> sum(static_cast<size_t>(g.batch * g.channels));
      avgpool2d_sum_int(g, x.data(), 3, acc, sum.data());
      for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
        int64_t s = 0;
        for (int64_t i = 0; i < 42; ++i) s = expect_acc.add(s, x[nc * 42 + i] - 3);
        ASSERT_EQ(sum[nc], s) << bits << " bits, " << overflow_name(mode) << ", plane " << nc;
      }
      EXPECT_EQ(acc.overflows(), expect_acc.overflows()) << bits << " bits, " << overflow_name(mode);
      if (bits == 12) {
        EXPECT_GT(acc.overflows(), 0);
      }
    }
  }
}

// Adaptive average pooling against its definition written directly: the window of output
// index i along an axis of length `in` pooled to `out` is [floor(i * in / out), ceil((i + 1)
// * in / out)), here in floating point.
std::vector<int64_t> adaptive_sums_by_definition(const Pool2dGeometry& g, const std::vector<int32_t>& x, int32_t z) {
  std::vector<int64_t> sum;
  auto window = [](int64_t i, int64_t in, int64_t out) {
    return std::pair<int64_t, int64_t>{static_cast<int64_t>(std::floor(static_cast<double>(i * in) / out)),
                                       static_cast<int64_t>(std::ceil(static_cast<double>((i + 1) * in) / out))};
  };
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        const auto [y0, y1] = window(oy, g.in_h, g.out_h);
        const auto [x0, x1] = window(ox, g.in_w, g.out_w);
        int64_t s = 0;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) s += x[(nc * g.in_h + iy) * g.in_w + ix] - z;
        sum.push_back(s);
      }
    }
  }
  return sum;
}

TEST(Pooling, AdaptiveWindowsAreFloorAndCeilOfTheScaledIndex) {
  auto windows = [](int64_t in, int64_t out) {
    std::vector<std::pair<int64_t, int64_t>> w;
    for (int64_t i = 0; i < out; ++i) w.emplace_back(adaptive_window_begin(i, in, out), adaptive_window_end(i, in, out));
    return w;
  };
  using W = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(windows(1, 6), W(6, {0, 1}));  // 1 -> 6 replicates
  EXPECT_EQ(windows(13, 6), (W{{0, 3}, {2, 5}, {4, 7}, {6, 9}, {8, 11}, {10, 13}}));  // overlapping
  EXPECT_EQ(windows(8, 6), (W{{0, 2}, {1, 3}, {2, 4}, {4, 6}, {5, 7}, {6, 8}}));
  EXPECT_EQ(windows(5, 3), (W{{0, 2}, {1, 4}, {3, 5}}));  // sizes 2, 3, 2
  EXPECT_EQ(windows(2, 3), (W{{0, 1}, {0, 2}, {1, 2}}));  // sizes 1, 2, 1
  EXPECT_EQ(windows(12, 4), (W{{0, 3}, {3, 6}, {6, 9}, {9, 12}}));  // divisible: avg_pool2d's windows
  EXPECT_EQ(windows(5, 5), (W{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}}));  // the identity
}

TEST(Pooling, AdaptiveAveragePoolSumsEveryWindowOfTheDefinition) {
  std::mt19937_64 rng(15);
  // {in_h, in_w, out_h, out_w}: the brief's shapes, sizes that vary, non-square ones
  const std::vector<std::array<int64_t, 4>> shapes = {
      {1, 1, 6, 6}, {13, 13, 6, 6}, {8, 8, 6, 6}, {7, 7, 3, 3}, {5, 5, 5, 5}, {5, 2, 3, 3},
      {11, 13, 4, 5}, {13, 8, 6, 3}, {3, 9, 7, 2}, {6, 6, 1, 1}, {12, 12, 4, 4}, {1, 7, 1, 3}};
  for (const auto& [ih, iw, oh, ow] : shapes) {
    Pool2dGeometry g;
    g.batch = 2, g.channels = 3, g.in_h = ih, g.in_w = iw, g.out_h = oh, g.out_w = ow;
    std::vector<int32_t> x(static_cast<size_t>(g.batch * g.channels * ih * iw));
    for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, 0, 255));
    const int32_t z = static_cast<int32_t>(uniform_int(rng, 0, 255));
    const std::vector<int64_t> expected = adaptive_sums_by_definition(g, x, z);
    std::vector<int64_t> fast(expected.size()), reference(expected.size());
    Accumulator acc, ref_acc;
    KernelScratch scratch;
    adaptive_avgpool2d_sum_int(g, x.data(), z, acc, fast.data(), scratch);
    adaptive_avgpool2d_sum_reference(g, x.data(), z, ref_acc, reference.data());
    const std::string shape = std::to_string(ih) + "x" + std::to_string(iw) + " -> " + std::to_string(oh) + "x" + std::to_string(ow);
    EXPECT_EQ(fast, expected) << shape;
    EXPECT_EQ(reference, expected) << shape;
    EXPECT_EQ(acc.overflows() + ref_acc.overflows(), 0) << shape;
  }
  // 1 -> 6 replicates each value; 2 -> 3 sums the middle window from both inputs
  Pool2dGeometry g;
  g.in_h = 1, g.in_w = 2, g.out_h = 6, g.out_w = 3;
  const std::vector<int32_t> x = {10, 3};
  std::vector<int64_t> sum(18);
  Accumulator acc;
  KernelScratch scratch;
  adaptive_avgpool2d_sum_int(g, x.data(), 1, acc, sum.data(), scratch);
  for (int64_t oy = 0; oy < 6; ++oy) EXPECT_EQ(std::vector<int64_t>(sum.begin() + 3 * oy, sum.begin() + 3 * oy + 3), (std::vector<int64_t>{9, 11, 2}));
}

// Narrow accumulators: the fast kernel leaves its separable sums for additions through the
// accumulator in the reference's order, and overflows where the reference does.
TEST(Pooling, AdaptiveAveragePoolMatchesItsReferenceThroughNarrowAccumulators) {
  std::mt19937_64 rng(17);
  int64_t narrow_overflows = 0;
  for (int trial = 0; trial < 40; ++trial) {
    Pool2dGeometry g;
    g.batch = uniform_int(rng, 1, 2), g.channels = uniform_int(rng, 1, 3);
    g.in_h = uniform_int(rng, 1, 14), g.in_w = uniform_int(rng, 1, 14);
    g.out_h = uniform_int(rng, 1, 8), g.out_w = uniform_int(rng, 1, 8);
    std::vector<int32_t> x(static_cast<size_t>(g.batch * g.channels * g.in_h * g.in_w));
    for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, -128, 127));
    const int32_t z = static_cast<int32_t>(uniform_int(rng, -20, 20));
    for (int bits : {32, 12, 9}) {
      for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
        Accumulator acc({bits, mode}), ref_acc({bits, mode});
        KernelScratch scratch;
        std::vector<int64_t> fast(static_cast<size_t>(g.batch * g.channels * g.out_h * g.out_w)), reference(fast.size());
        adaptive_avgpool2d_sum_int(g, x.data(), z, acc, fast.data(), scratch);
        adaptive_avgpool2d_sum_reference(g, x.data(), z, ref_acc, reference.data());
        ASSERT_EQ(fast, reference) << "trial " << trial << ", " << bits << " bits, " << overflow_name(mode);
        EXPECT_EQ(acc.overflows(), ref_acc.overflows()) << "trial " << trial << ", " << bits << " bits";
        if (bits == 9) narrow_overflows += acc.overflows();
        if (bits == 32) {
          EXPECT_EQ(fast, adaptive_sums_by_definition(g, x, z)) << "trial " << trial;
        }
      }
    }
  }
  EXPECT_GT(narrow_overflows, 0) << "a 9-bit accumulator should overflow somewhere";
}

AddParams random_add_params(std::mt19937_64& rng) {
  AddParams p;
  const double sa = testing::uniform_real(rng, 0.01, 0.1), sb = testing::uniform_real(rng, 0.01, 0.1);
  const double so = (sa + sb) * testing::uniform_real(rng, 0.5, 1.5);
  const double twice_max = 2 * std::max(sa, sb);
  p.a_zero_point = static_cast<int32_t>(uniform_int(rng, -20, 20));
  p.b_zero_point = static_cast<int32_t>(uniform_int(rng, -20, 20));
  p.left_shift = 20;
  p.a_multiplier = quantize_multiplier(sa / twice_max);
  p.b_multiplier = quantize_multiplier(sb / twice_max);
  p.out_multiplier = quantize_multiplier(twice_max / ((1 << p.left_shift) * so));
  p.out_zero_point = static_cast<int32_t>(uniform_int(rng, -10, 10));
  return p;
}

TEST(Add, MatchesTheReferenceForEveryPairOfInt8Inputs) {
  std::mt19937_64 rng(11);
  std::vector<int32_t> a, b;
  for (int i = -128; i < 128; ++i)
    for (int j = -128; j < 128; ++j) a.push_back(i), b.push_back(j);
  std::vector<int32_t> y(a.size());
  for (int trial = 0; trial < 4; ++trial) {
    const AddParams p = random_add_params(rng);
    add_int(p, a.data(), b.data(), static_cast<int64_t>(a.size()), y.data());
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(y[i], add_int_reference(p, a[i], b[i])) << a[i] << " + " << b[i];
  }
}

TEST(Add, ResultIsTheSumOfTheRealValuesToWithinOneStep) {
  std::mt19937_64 rng(12);
  const double sa = 0.05, sb = 0.02, so = 0.06;
  AddParams p;
  p.a_zero_point = 3, p.b_zero_point = -4, p.out_zero_point = 1;
  const double twice_max = 2 * std::max(sa, sb);
  p.a_multiplier = quantize_multiplier(sa / twice_max);
  p.b_multiplier = quantize_multiplier(sb / twice_max);
  p.out_multiplier = quantize_multiplier(twice_max / ((1 << p.left_shift) * so));
  for (int i = 0; i < 10000; ++i) {
    const int32_t a = static_cast<int32_t>(uniform_int(rng, -128, 127));
    const int32_t b = static_cast<int32_t>(uniform_int(rng, -128, 127));
    int32_t y = 0;
    add_int(p, &a, &b, 1, &y);
    const double real = (a - 3) * sa + (b + 4) * sb;
    const double expect = std::min(127.0, std::max(-128.0, std::round(real / so) + 1));
    ASSERT_LE(std::fabs(y - expect), 1.0) << a << " " << b;
  }
}

// Values where the lane arithmetic could go wrong: the int32 extremes, ties of both
// roundings, and the saturation of the offset and of the multiplier's left shift.
std::vector<int32_t> requantize_test_values(std::mt19937_64& rng) {
  const int32_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  std::vector<int32_t> v = {lo, lo + 1, hi, hi - 1, 0, 1, -1, 2, -2};
  for (int e = 0; e < 31; ++e)
    for (int32_t d : {-1, 0, 1}) {
      v.push_back(static_cast<int32_t>((int64_t{1} << e) + d));
      v.push_back(static_cast<int32_t>(-(int64_t{1} << e) + d));
    }
  for (int i = 0; i < 2000; ++i) v.push_back(static_cast<int32_t>(uniform_int(rng, lo, hi) >> uniform_int(rng, 0, 31)));
  return v;
}

TEST(Requantize, TheVectorizedFormMatchesRequantizeDyadic) {
  std::mt19937_64 rng(13);
  const std::vector<int32_t> x = requantize_test_values(rng);
  std::vector<int32_t> y(x.size());
  for (int shift = -31; shift <= 31; ++shift) {
    for (int trial = 0; trial < 4; ++trial) {
      DyadicMultiplier m;
      m.shift = shift;
      m.m0 = trial == 0 ? 0 : (trial == 1 ? std::numeric_limits<int32_t>::max()
                                          : static_cast<int32_t>(uniform_int(rng, 1 << 30, (int64_t{1} << 31) - 1)));
      const int32_t offset = trial == 3 ? std::numeric_limits<int32_t>::min() : static_cast<int32_t>(uniform_int(rng, -300, 300));
      const int32_t zero_point = static_cast<int32_t>(uniform_int(rng, -200, 200));
      const bool wide = uniform_int(rng, 0, 1);
      const int32_t qmin = wide ? std::numeric_limits<int32_t>::min() : -128, qmax = wide ? std::numeric_limits<int32_t>::max() : 127;
      requantize_int32(x.data(), static_cast<int64_t>(x.size()), offset, m, zero_point, qmin, qmax, y.data());
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(y[i], requantize_dyadic(int64_t{x[i]} - offset, m, zero_point, qmin, qmax))
            << "x " << x[i] << " - " << offset << ", m0 " << m.m0 << ", shift " << shift;
    }
  }
}

TEST(Add, MatchesTheReferenceAtExtremeInputsAndParameters) {
  std::mt19937_64 rng(14);
  const std::vector<int32_t> v = requantize_test_values(rng);
  std::vector<int32_t> a(v.size()), b(v.size()), y(v.size());
  for (int trial = 0; trial < 40; ++trial) {
    AddParams p = random_add_params(rng);
    p.left_shift = static_cast<int>(uniform_int(rng, 0, 31));
    p.a_zero_point = static_cast<int32_t>(uniform_int(rng, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
    p.b_multiplier.shift = static_cast<int>(uniform_int(rng, -31, 31));
    p.out_multiplier.shift = static_cast<int>(uniform_int(rng, -31, 31));
    p.qmin = std::numeric_limits<int32_t>::min() + static_cast<int32_t>(uniform_int(rng, 0, 1));
    p.qmax = std::numeric_limits<int32_t>::max();
    for (size_t i = 0; i < v.size(); ++i) a[i] = v[i], b[i] = v[(i * 7 + trial) % v.size()];
    add_int(p, a.data(), b.data(), static_cast<int64_t>(v.size()), y.data());
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(y[i], add_int_reference(p, a[i], b[i])) << a[i] << " + " << b[i] << ", trial " << trial;
  }
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
