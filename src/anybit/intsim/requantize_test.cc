// Dyadic requantization and uniform quantization against their reference twins:
// exhaustively where the space is small, on edge values and random samples elsewhere.
#include "anybit/intsim/requantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace anybit {
namespace intsim {
namespace {

constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

std::vector<int32_t> edge_values() {
  return {kMin, kMin + 1, -(1 << 30) - 1, -(1 << 30), -(1 << 30) + 1, -65536, -32768, -255,
          -128, -3, -2, -1, 0, 1, 2, 3, 127, 128, 255, 32767, 65536, (1 << 30) - 1, 1 << 30,
          (1 << 30) + 1, kMax - 1, kMax};
}

TEST(QuantizeMultiplier, FollowsTfliteWithTheShiftCountedToTheRight) {
  EXPECT_EQ(quantize_multiplier(0.5), (DyadicMultiplier{1 << 30, 0}));
  EXPECT_EQ(quantize_multiplier(0.25), (DyadicMultiplier{1 << 30, 1}));
  EXPECT_EQ(quantize_multiplier(1.0), (DyadicMultiplier{1 << 30, -1}));
  EXPECT_EQ(quantize_multiplier(0.75), (DyadicMultiplier{3 << 29, 0}));
  EXPECT_EQ(quantize_multiplier(0.0), (DyadicMultiplier{0, 0}));
  // q * 2^31 rounding up to exactly 2^31: the mantissa is halved and the exponent bumped
  EXPECT_EQ(quantize_multiplier(std::nextafter(1.0, 0.0)), (DyadicMultiplier{1 << 30, -1}));
}

TEST(QuantizeMultiplier, RepresentsEveryMultiplierToWithinHalfAUnitOfQ31) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100000; ++i) {
    const double m = std::ldexp(std::uniform_real_distribution<double>(0.5, 1.0)(rng),
                                std::uniform_int_distribution<int>(-30, 30)(rng));
    const DyadicMultiplier d = quantize_multiplier(m);
    ASSERT_GE(d.m0, 1 << 30) << m;
    ASSERT_GE(d.shift, -31);
    ASSERT_LE(d.shift, 31);
    ASSERT_LE(std::fabs(dyadic_to_double(d) - m), std::ldexp(m, -31)) << m;
  }
}

TEST(QuantizeMultiplier, TinyMultipliersBecomeZeroAndHugeOnesAreAnError) {
  EXPECT_EQ(quantize_multiplier(1e-12), (DyadicMultiplier{0, 0}));
  EXPECT_NO_THROW(quantize_multiplier(std::ldexp(1.0, 30)));
  EXPECT_THROW(quantize_multiplier(std::ldexp(1.0, 32)), Error);
  EXPECT_THROW(quantize_multiplier(-0.5), Error);
  EXPECT_THROW(quantize_multiplier(std::nan("")), Error);
  EXPECT_THROW(quantize_multiplier(INFINITY), Error);
}

std::vector<DyadicMultiplier> sample_multipliers(uint64_t seed, int n) {
  std::mt19937_64 rng(seed);
  std::vector<DyadicMultiplier> ms = {{1 << 30, -1}, {1 << 30, 0}, {1 << 30, 31}, {kMax, -31},
                                      {kMax, 31},    {0, 0},       {1 << 30, -30}};
  for (int i = 0; i < n; ++i)
    ms.push_back(quantize_multiplier(std::exp(std::uniform_real_distribution<double>(-12, 2)(rng))));
  return ms;
}

TEST(RequantizeDyadic, MatchesTheReferenceForEverySixteenBitAccumulator) {
  for (const DyadicMultiplier& m : sample_multipliers(3, 40))
    for (int64_t acc = -(1 << 15); acc < (1 << 15); ++acc)
      ASSERT_EQ(requantize_dyadic(acc, m, 3, -128, 127), requantize_dyadic_reference(acc, m, 3, -128, 127))
          << acc << " m0=" << m.m0 << " shift=" << m.shift;
}

TEST(RequantizeDyadic, MatchesTheReferenceOnRandomAndEdgeAccumulatorsAndRanges) {
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int64_t> acc_dist(kMin, kMax);
  std::uniform_int_distribution<int32_t> zp_dist(-300, 300);
  for (const DyadicMultiplier& m : sample_multipliers(5, 200)) {
    for (int i = 0; i < 2000; ++i) {
      const int64_t acc = acc_dist(rng);
      const int32_t z = zp_dist(rng);
      ASSERT_EQ(requantize_dyadic(acc, m, z, kMin, kMax), requantize_dyadic_reference(acc, m, z, kMin, kMax));
      ASSERT_EQ(requantize_dyadic(acc, m, z, 0, 255), requantize_dyadic_reference(acc, m, z, 0, 255));
    }
    for (int32_t acc : edge_values())
      ASSERT_EQ(requantize_dyadic(acc, m, 0, kMin, kMax), requantize_dyadic_reference(acc, m, 0, kMin, kMax));
  }
}

TEST(RequantizeDyadic, IsWithinOneOfTheExactlyRoundedRealProduct) {
  std::mt19937_64 rng(6);
  std::uniform_int_distribution<int64_t> acc_dist(-(int64_t{1} << 24), int64_t{1} << 24);
  for (int i = 0; i < 200000; ++i) {
    const double real_m = std::exp(std::uniform_real_distribution<double>(-14, 0)(rng));
    const int64_t acc = acc_dist(rng);
    const int32_t q = requantize_dyadic(acc, quantize_multiplier(real_m), 0, kMin, kMax);
    ASSERT_LE(std::fabs(q - std::round(static_cast<double>(acc) * real_m)), 1.0) << acc << " * " << real_m;
  }
}

// One rounding, ties to even (docs/design.md's rounding_shift, torch.round): 13 * 0.25 = 3.25
// gives 3, where gemmlowp's two roundings (round_half_up(6.5) = 7, then 7 / 2 away from
// zero) give 4; 2.5 and 3.5 go to the even neighbour.
TEST(RequantizeDyadic, RoundsOnceWithTiesToEven) {
  const DyadicMultiplier quarter = quantize_multiplier(0.25);
  const std::vector<std::pair<int64_t, int32_t>> cases = {{13, 3}, {12, 3}, {10, 2}, {14, 4}, {-13, -3},
                                                          {-10, -2}, {-14, -4}, {-11, -3}, {2, 0}, {-2, 0}};
  for (const auto& [acc, want] : cases) {
    EXPECT_EQ(requantize_dyadic(acc, quarter, 0, kMin, kMax), want) << acc;
    EXPECT_EQ(requantize_dyadic_reference(acc, quarter, 0, kMin, kMax), want) << acc;
  }
  // a general multiplier: the nearest integer to acc * M for the dyadic M, exactly
  const DyadicMultiplier m{1518500250, 9};  // ~ 0.0013810679
  for (int64_t acc = -70000; acc <= 70000; acc += 13) {
    const long double exact = static_cast<long double>(acc) * m.m0 / std::ldexp(1.0L, 40);
    const long double f = std::floor(exact);
    const int64_t want = static_cast<int64_t>(exact - f > 0.5L || (exact - f == 0.5L && std::fmod(f, 2.0L) != 0) ? f + 1 : f);
    ASSERT_EQ(requantize_dyadic(acc, m, 0, kMin, kMax), want) << acc;
  }
}

TEST(RequantizeDyadic, UnitMultiplierIsTheIdentityAndClampsToTheRange) {
  const DyadicMultiplier one = quantize_multiplier(1.0);
  for (int64_t acc = -100000; acc <= 100000; acc += 7) EXPECT_EQ(requantize_dyadic(acc, one, 0, kMin, kMax), acc);
  EXPECT_EQ(requantize_dyadic(1000, one, 5, -128, 127), 127);
  EXPECT_EQ(requantize_dyadic(-1000, one, 5, -128, 127), -128);
  EXPECT_EQ(requantize_dyadic(10, one, 5, -128, 127), 15);
}

TEST(RequantizeDyadic, SaturatesAccumulatorsOutsideInt32InsteadOfWrapping) {
  const DyadicMultiplier half = quantize_multiplier(0.5);
  EXPECT_EQ(requantize_dyadic(int64_t{1} << 40, half, 0, kMin, kMax), 1 << 30);
  EXPECT_EQ(requantize_dyadic(-(int64_t{1} << 40), half, 0, kMin, kMax), -(1 << 30));
  // a product past int32 (M = 2^19, a left shift) saturates too
  EXPECT_EQ(requantize_dyadic(1 << 20, DyadicMultiplier{1 << 30, -20}, 0, kMin, kMax), kMax);
  EXPECT_EQ(requantize_dyadic(-(1 << 20), DyadicMultiplier{1 << 30, -20}, 0, kMin, kMax), kMin);
  EXPECT_EQ(requantize_dyadic(3, DyadicMultiplier{1 << 30, -20}, 0, kMin, kMax), 3 << 19);
}

TEST(RoundHalfEven, BreaksTiesToEvenLikeTorchRound) {
  EXPECT_EQ(round_half_even(0.5), 0.0);
  EXPECT_EQ(round_half_even(1.5), 2.0);
  EXPECT_EQ(round_half_even(2.5), 2.0);
  EXPECT_EQ(round_half_even(-0.5), 0.0);
  EXPECT_EQ(round_half_even(-1.5), -2.0);
  EXPECT_EQ(round_half_even(-2.5), -2.0);
  EXPECT_EQ(round_half_even(2.4999), 2.0);
  EXPECT_EQ(round_half_even(-2.5001), -3.0);
  for (double v = -50; v <= 50; v += 0.125) EXPECT_EQ(round_half_even(v), std::nearbyint(v)) << v;
}

TEST(QuantizeUniform, FollowsTheDesignFormulaAndClamps) {
  // q = clamp(round_half_even(x / s) + z, qmin, qmax)
  EXPECT_EQ(quantize_uniform(0.25f, 0.5f, 3, -128, 127), 3);   // 0.5 ties to 0
  EXPECT_EQ(quantize_uniform(0.75f, 0.5f, 3, -128, 127), 5);   // 1.5 ties to 2
  EXPECT_EQ(quantize_uniform(-0.75f, 0.5f, 0, -128, 127), -2);
  EXPECT_EQ(quantize_uniform(1000.0f, 0.5f, 0, -128, 127), 127);
  EXPECT_EQ(quantize_uniform(-1000.0f, 0.5f, 10, 0, 255), 0);
  EXPECT_EQ(quantize_uniform(std::nanf(""), 0.5f, 7, 0, 255), 7);
  EXPECT_FLOAT_EQ(dequantize_uniform(5, 0.5f, 3), 1.0f);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const float x = std::uniform_real_distribution<float>(-3, 3)(rng);
    const int32_t q = quantize_uniform(x, 0.05f, 0, -128, 127);
    ASSERT_LE(std::fabs(dequantize_uniform(q, 0.05f, 0) - x), 0.025f + 1e-6f) << x;
  }
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
