// Observers and calibrators on synthetic data with known answers.
#include "anybit/calib/calibrator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace anybit {
namespace calib {
namespace {

std::vector<float> gaussian(int n, double sigma, int seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, static_cast<float>(sigma));
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double total(const Histogram& h) {
  return std::accumulate(h.counts().begin(), h.counts().end(), 0.0);
}

TEST(Histogram, GrowingTheRangeLosesNoSampleAndDoesNotDependOnBatching) {
  std::vector<float> v = gaussian(20000, 1.0, 1);
  for (int i = 0; i < 20000; i += 1000) v[i] *= 50;  // outliers force growth
  Histogram one, many;
  one.observe(v.data(), v.size());
  for (size_t b = 0; b < v.size(); b += 333) many.observe(v.data() + b, std::min<size_t>(333, v.size() - b));
  EXPECT_EQ(total(one), 20000);
  EXPECT_EQ(total(many), 20000);
  // batches grow the range step by step; the merged counts equal one-shot binning
  // because ranges are powers of two and merges are exact
  EXPECT_EQ(one.range(), many.range());
  EXPECT_EQ(one.counts(), many.counts());
}

TEST(Observer, MinMaxReturnsTheExactExtremes) {
  std::vector<float> v = {0.5f, -3.25f, 2.0f, 7.75f, -1.0f};
  Observer o;
  o.observe(v.data(), 2);
  o.observe(v.data() + 2, 3);
  Range r = choose_range(o, parse_method("minmax"), {});
  EXPECT_EQ(r.lo, -3.25);
  EXPECT_EQ(r.hi, 7.75);
  EXPECT_DOUBLE_EQ(o.mean_abs(), (0.5 + 3.25 + 2 + 7.75 + 1) / 5);
}

TEST(Observer, EmaFollowsItsDefinition) {
  Observer o;
  std::vector<float> a = {-1.0f, 1.0f}, b = {-3.0f, 5.0f};
  o.observe(a.data(), 2);
  o.observe(b.data(), 2);
  Range r = choose_range(o, parse_method("ema"), {});
  EXPECT_DOUBLE_EQ(r.lo, -1.0 + 0.01 * (-3.0 + 1.0));
  EXPECT_DOUBLE_EQ(r.hi, 1.0 + 0.01 * (5.0 - 1.0));
}

TEST(Percentile, UniformDataGivesTheQuantileWithinABin) {
  std::vector<float> v(100000);
  std::mt19937 g(3);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  for (auto& x : v) x = d(g);
  Observer o;
  o.observe(v.data(), v.size());
  QuantTarget sym;
  Range r = choose_range(o, parse_method("percentile:90"), sym);
  EXPECT_NEAR(r.hi, 3.6, 2 * o.histogram().bin_width() + 0.02);
  QuantTarget asym;
  asym.asymmetric = true;
  Range ra = choose_range(o, parse_method("percentile:95"), asym);
  EXPECT_NEAR(ra.lo, -3.6, 0.05);
  EXPECT_NEAR(ra.hi, 3.6, 0.05);
}

TEST(Mse, ClipsGaussianDataAt4BitsWellBelowTheMaxAndBeatsMinMax) {
  std::vector<float> v = gaussian(200000, 1.0, 5);
  Observer o;
  o.observe(v.data(), v.size());
  QuantTarget t4{-8, 7, true, false};
  Range r = choose_range(o, parse_method("mse"), t4);
  // Banner et al. 2019: the optimal 4-bit clip of a unit Gaussian is about 2.55 sigma
  EXPECT_GT(r.hi, 2.0);
  EXPECT_LT(r.hi, 3.2);
  const double mm = std::max(-o.min(), o.max());
  EXPECT_LT(histogram_quant_mse(o.histogram(), r.lo, r.hi, t4),
            histogram_quant_mse(o.histogram(), -mm, mm, t4));
}

TEST(Mse, OptimalClipOnRawDataIsNeverWorseThanMaxAbs) {
  for (int seed = 0; seed < 6; ++seed) {
    for (int bits : {2, 3, 4, 8}) {
      std::vector<float> v = gaussian(4096, 0.1 * (seed + 1), seed);
      const int qmax = (1 << (bits - 1)) - 1, qmin = -(1 << (bits - 1));
      auto err = [&](double c) {
        double s = c / qmax, e = 0;
        for (float x : v) {
          double q = std::min<double>(std::max<double>(std::nearbyint(x / s), qmin), qmax);
          e += (x - q * s) * (x - q * s);
        }
        return e;
      };
      double amax = 0;
      for (float x : v) amax = std::max(amax, static_cast<double>(std::fabs(x)));
      const double c = mse_optimal_clip(v.data(), v.size(), qmin, qmax, true);
      EXPECT_LE(err(c), err(amax) * (1 + 1e-9)) << "bits " << bits << " seed " << seed;
      EXPECT_LE(c, amax);
    }
  }
}

TEST(Entropy, ClipsHeavyTailedDataTighterThanMinMax) {
  std::mt19937 g(9);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> v(100000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 ? 1 : -1) * e(g);  // Laplace
  Observer o;
  o.observe(v.data(), v.size());
  QuantTarget t8{-128, 127, true, false};
  Range r = choose_range(o, parse_method("entropy"), t8);
  const double mm = std::max(-o.min(), o.max());
  EXPECT_GT(r.hi, 0);
  EXPECT_LT(r.hi, mm);
  EXPECT_EQ(r.lo, -r.hi);
}

TEST(ParseMethod, ABadNameThrowsWithTheName) {
  try {
    parse_method("minmx");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'minmx'"), std::string::npos);
  }
  EXPECT_THROW(parse_method("percentile:0"), std::invalid_argument);
  EXPECT_THROW(parse_method("percentile:abc"), std::invalid_argument);
  EXPECT_EQ(parse_method("percentile:99.9").percentile, 99.9);
}

}  // namespace
}  // namespace calib
}  // namespace anybit
