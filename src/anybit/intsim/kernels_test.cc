// The fast, stepwise and plug-in kernels against their reference twins, over random
// shapes, strides, paddings, dilations, groups (depthwise included), zero points and seeds.
// Pooling, add, requantization and the accumulator model: pool_add_test.cc.
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
// double weights too (the AVX-512 or AVX2-FMA kernel where the CPU has it).
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
    // with an addend (a MAC model's noise) laid out as conv2d_add_layout says: the junk
    // positions of the kernel's grid hold a large value that must not reach any output
    const AddLayout layout = conv2d_add_layout(c.g, packed, m);
    const int64_t OW = c.g.out_w(), OH = c.g.out_h(), planes = c.g.batch * c.g.out_channels;
    ASSERT_GE(layout.row, OW);
    ASSERT_GE(layout.plane, OH * layout.row - (layout.row - OW));
    std::vector<int32_t> add(static_cast<size_t>(planes * layout.plane), 1 << 28), plain(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      plain[i] = static_cast<int32_t>(uniform_int(rng, -5000, 5000));
      const int64_t q = i / P, oy = i % P / OW, ox = i % OW;
      add[static_cast<size_t>(q * layout.plane + oy * layout.row + ox)] = plain[i];
    }
    conv2d_acc32_requantize(c.g, c.x.data(), c.x_zero_point, packed, bias, m, zero_point, qmin, qmax,
                            y.data(), scratch, add.data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = i / P % c.g.out_channels;
      const DyadicMultiplier mo = m[per_channel ? static_cast<size_t>(o) : 0];
      ASSERT_EQ(y[i], requantize_dyadic(ref[i] + plain[i], mo, zero_point, qmin, qmax))
          << what << " with an addend, element " << i << ", row " << layout.row << ", plane " << layout.plane;
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

}  // namespace
}  // namespace intsim
}  // namespace anybit
