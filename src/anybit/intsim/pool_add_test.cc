// The integer kernels around the convolutions: the accumulator model on planted overflows;
// max, average, global and adaptive pooling; the add of two quantized tensors; the
// vectorized requantization, on hand-checked, exhaustive and extreme cases.
#include "anybit/intsim/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
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
