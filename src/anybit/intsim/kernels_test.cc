// The fast and plug-in kernels against their reference twins, over random shapes,
// strides, paddings, dilations, groups (depthwise included), zero points and seeds; the
// accumulator model on planted overflows; pooling and add on hand-checked and exhaustive
// cases.
#include "anybit/intsim/kernels.h"

#include <gtest/gtest.h>

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

TEST_P(KernelSeed, LinearFastAndMacKernelsMatchTheReference) {
  std::mt19937_64 rng(static_cast<uint64_t>(GetParam()) + 2000);
  const int64_t batch = uniform_int(rng, 1, 3), I = uniform_int(rng, 1, 70), O = uniform_int(rng, 1, 9);
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
  for (int bits : {8, 16, 32}) {
    for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
      std::vector<int64_t> r(ref.size()), m(ref.size());
      int64_t ro = 0;
      linear_int_reference(batch, I, O, x.data(), zx, w.data(), zw, bias.data(), {bits, mode}, r.data(), &ro);
      Accumulator acc({bits, mode});
      linear_int_mac(batch, I, O, x.data(), zx, w_offset.data(), bias.data(), exact, "fc", acc, m.data(), nullptr);
      ASSERT_EQ(m, r) << bits << " " << overflow_name(mode);
      EXPECT_EQ(acc.overflows(), ro);
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

}  // namespace
}  // namespace intsim
}  // namespace anybit
