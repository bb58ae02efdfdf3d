// Observers and calibrators on synthetic data with known answers, and each closed form
// against its plain twin.
#include "anybit/calib/calibrator.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace anybit {
namespace calib {
namespace {

std::vector<float> gaussian(int n, double sigma, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, static_cast<float>(sigma));
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> laplace(int n, double b, unsigned seed) {
  std::mt19937 g(seed);
  std::exponential_distribution<float> e(static_cast<float>(1.0 / b));
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(n);
  for (auto& x : v) x = (sign(g) ? 1 : -1) * e(g);
  return v;
}

std::vector<float> uniform(int n, float lo, float hi, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

int64_t total(const Histogram& h) {
  return std::accumulate(h.counts().begin(), h.counts().end(), int64_t{0});
}

QuantTarget signed_bits(int bits) {
  return {-(1 << (bits - 1)), (1 << (bits - 1)) - 1, true, false};
}
QuantTarget unsigned_bits(int bits) { return {0, (1 << bits) - 1, false, false}; }
QuantTarget asymmetric_bits(int bits) { return {0, (1 << bits) - 1, false, true}; }

Observer observe_all(const std::vector<float>& v) {
  Observer o;
  o.observe(v.data(), static_cast<int64_t>(v.size()));
  return o;
}

// The plain definition of the error quant_squared_error computes: double arithmetic,
// std::nearbyint (half to even).
double reference_squared_error(const std::vector<float>& x, double lo, double hi,
                               const QuantTarget& t) {
  const Grid g = grid_for_range(lo, hi, t);
  double e = 0;
  for (float v : x) {
    const double q =
        std::min<double>(std::max<double>(std::nearbyint(v / g.scale) + g.zero_point, t.qmin), t.qmax);
    const double d = v - (q - g.zero_point) * g.scale;
    e += d * d;
  }
  return e;
}

// Values that sit on bin edges at many ranges: powers of two, their negatives, zero of
// both signs, subnormals, and the largest value below a power of two.
std::vector<float> edge_values() {
  std::vector<float> v;
  for (int e = -20; e <= 6; ++e) {
    const float p = std::ldexp(1.0f, e);
    v.insert(v.end(), {p, -p, 3 * p, -3 * p, std::nextafter(p, 0.0f), -std::nextafter(p, 0.0f)});
  }
  v.insert(v.end(), {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(),
                     -std::numeric_limits<float>::denorm_min(), 1e-30f, -1e-30f});
  return v;
}

// ---- histogram ------------------------------------------------------------------------

TEST(Histogram, GrowingTheRangeLosesNoSampleAndDoesNotDependOnBatching) {
  std::vector<float> v = edge_values();
  const std::vector<float> g = gaussian(20000, 1.0, 1);
  v.insert(v.end(), g.begin(), g.end());
  for (size_t i = 0; i < v.size(); i += 997) v[i] *= 50;  // outliers force growth mid-stream
  Histogram one;
  one.observe(v.data(), static_cast<int64_t>(v.size()));
  EXPECT_EQ(total(one), static_cast<int64_t>(v.size()));
  for (size_t batch : {1, 7, 333, 4096}) {
    Histogram many;
    for (size_t b = 0; b < v.size(); b += batch)
      many.observe(v.data() + b, static_cast<int64_t>(std::min(batch, v.size() - b)));
    EXPECT_EQ(total(many), static_cast<int64_t>(v.size())) << "batch " << batch;
    EXPECT_EQ(many.range(), one.range()) << "batch " << batch;
    EXPECT_EQ(many.counts(), one.counts()) << "batch " << batch;
  }
}

TEST(Histogram, EverySampleLandsInTheBinWhoseEdgesEncloseIt) {
  // tiny values first, then ever larger ones: the range doubles about 40 times
  std::vector<float> v = edge_values();
  for (int e = -30; e <= 10; ++e) {
    const std::vector<float> u = uniform(50, -std::ldexp(1.0f, e), std::ldexp(1.0f, e), e + 100);
    v.insert(v.end(), u.begin(), u.end());
  }
  Histogram h(64);
  for (size_t b = 0; b < v.size(); b += 50)
    h.observe(v.data() + b, static_cast<int64_t>(std::min<size_t>(50, v.size() - b)));
  // reference: bin i holds [lower(i), lower(i+1)), found by search over the exact edges
  std::vector<int64_t> expected(h.bins(), 0);
  for (float x : v) {
    int i = h.bins() - 1;
    while (h.bin_lower(i) > x) --i;
    ++expected[i];
  }
  EXPECT_EQ(h.counts(), expected);
  EXPECT_GT(h.range(), h.amax());
  EXPECT_LE(h.range(), 2 * h.amax());
}

TEST(Histogram, MergingTwoHistogramsEqualsObservingBoth) {
  const std::vector<float> a = gaussian(5000, 0.01, 2), b = laplace(5000, 30.0, 3);
  Histogram ha, hb, both;
  ha.observe(a.data(), 5000);
  hb.observe(b.data(), 5000);
  both.observe(a.data(), 5000);
  both.observe(b.data(), 5000);
  Histogram m1 = ha, m2 = hb;
  m1.merge(hb);
  m2.merge(ha);
  for (const Histogram* m : {&m1, &m2}) {
    EXPECT_EQ(m->counts(), both.counts());
    EXPECT_EQ(m->range(), both.range());
    EXPECT_EQ(m->count(), 10000);
    EXPECT_EQ(m->min(), both.min());
    EXPECT_EQ(m->max(), both.max());
  }
  Histogram empty;
  empty.merge(ha);
  EXPECT_EQ(empty.counts(), ha.counts());
}

// The vectorized pass (eight lanes, then the tail) and the interleaved partial histograms
// (inputs of at least 4 * bins values) against plain loops, for every length up to 40 and
// a few long ones, with non-finite values in a full block, in the tail, or nowhere.
TEST(Histogram, MatchesPlainLoopsForAnyLengthAndNonFinitePlacement) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<int> lengths;
  for (int n = 1; n <= 40; ++n) lengths.push_back(n);
  for (int n : {255, 256, 1001, 4099}) lengths.push_back(n);
  for (int n : lengths) {
    for (int place : {-1, 0, n - 1}) {
      std::vector<float> v(n);
      for (float& x : v) x = nd(rng) > 0.5f ? nd(rng) : 0.0f;  // runs of zeros, as after a ReLU
      if (place >= 0) v[place] = (n % 2) ? std::numeric_limits<float>::infinity() : std::nanf("");
      Histogram h(64);
      h.observe(v.data(), n);
      double lo = 1e300, hi = -1e300, sa = 0;
      int64_t finite = 0;
      for (float x : v) {
        if (!std::isfinite(x)) continue;
        lo = std::min<double>(lo, x), hi = std::max<double>(hi, x), sa += std::fabs(static_cast<double>(x));
        ++finite;
      }
      ASSERT_EQ(h.count(), finite) << n << " " << place;
      ASSERT_EQ(h.nonfinite(), n - finite);
      if (!finite) continue;
      EXPECT_EQ(h.min(), lo);
      EXPECT_EQ(h.max(), hi);
      EXPECT_NEAR(h.sum_abs(), sa, 1e-9 * sa);
      std::vector<int64_t> want(64, 0);
      for (float x : v)
        if (std::isfinite(x)) ++want[32 + static_cast<int64_t>(std::floor(x * 32.0 / h.range()))];
      EXPECT_EQ(h.counts(), want) << n << " " << place;
    }
  }
}

// Batches of more than one 64K chunk are observed on all OpenMP threads: the counts,
// extremes and the sum of |x| are those of one thread, bit for bit, also with a NaN and an
// inf in the middle and chunk boundaries that do not fall on thread boundaries.
TEST(Histogram, ObservingOnManyThreadsGivesTheStatisticsOfOneThread) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int64_t n : {(int64_t{1} << 16) + 1, int64_t{3} * (1 << 16) + 777, int64_t{1} << 20}) {
    std::vector<float> v(n);
    for (float& x : v) x = nd(rng) > 1.0f ? nd(rng) : 0.0f;
    v[n / 3] = std::nanf("");
    v[n / 2] = std::numeric_limits<float>::infinity();
    std::vector<Histogram> h(3);
    const int threads[] = {1, 2, 5};
    for (int t = 0; t < 3; ++t) {
      omp_set_num_threads(threads[t]);
      h[t].observe(v.data(), n);
      h[t].observe(v.data() + 7, n - 7);  // a second batch: the range is set, the bins add
    }
    omp_set_num_threads(1);
    for (int t = 1; t < 3; ++t) {
      EXPECT_EQ(h[t].counts(), h[0].counts()) << n << " threads " << threads[t];
      EXPECT_EQ(h[t].count(), h[0].count());
      EXPECT_EQ(h[t].nonfinite(), h[0].nonfinite());
      EXPECT_EQ(h[t].min(), h[0].min());
      EXPECT_EQ(h[t].max(), h[0].max());
      EXPECT_EQ(h[t].sum_abs(), h[0].sum_abs());
    }
    EXPECT_EQ(h[0].nonfinite(), 4);
  }
}

TEST(Histogram, TracksCountMeanAbsSignAndSkipsNonFiniteValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {1.0f, 2.0f, std::nanf(""), inf, 3.0f, -inf};
  Histogram h;
  h.observe(v.data(), 6);
  EXPECT_EQ(h.count(), 3);
  EXPECT_EQ(h.nonfinite(), 3);
  EXPECT_EQ(total(h), 3);
  EXPECT_DOUBLE_EQ(h.mean_abs(), 2.0);
  EXPECT_FALSE(h.has_negative());
  const float neg = -0.5f;
  h.observe(&neg, 1);
  EXPECT_TRUE(h.has_negative());
  EXPECT_DOUBLE_EQ(h.sum_abs(), 6.5);
  EXPECT_EQ(h.range(), 4.0);  // smallest power of two above max|x| = 3
}

TEST(Histogram, RejectsABinCountThatIsNotAPowerOfTwo) {
  EXPECT_THROW(Histogram(2000), std::invalid_argument);
  EXPECT_THROW(Histogram(0), std::invalid_argument);
}

// ---- observer -------------------------------------------------------------------------

TEST(Observer, MinMaxReturnsTheExactExtremes) {
  const std::vector<float> v = {0.5f, -3.25f, 2.0f, 7.75f, -1.0f};
  Observer o;
  o.observe(v.data(), 2);
  o.observe(v.data() + 2, 3);
  const Range r = choose_range(o, Method::kMinMax, signed_bits(8));
  EXPECT_EQ(r.lo, -3.25);
  EXPECT_EQ(r.hi, 7.75);
  EXPECT_EQ(o.count(), 5);
  EXPECT_DOUBLE_EQ(o.mean_abs(), (0.5 + 3.25 + 2 + 7.75 + 1) / 5);
}

TEST(Observer, EmaFollowsTheMovingAverageDefinition) {
  Observer o;
  double lo = 0, hi = 0;
  for (int b = 0; b < 20; ++b) {
    const std::vector<float> v = gaussian(100, 1.0 + b, b);
    o.observe(v.data(), 100);
    const double bl = *std::min_element(v.begin(), v.end()), bh = *std::max_element(v.begin(), v.end());
    if (b == 0) {
      lo = bl, hi = bh;  // the first batch initializes
    } else {
      lo = lo + 0.01 * (bl - lo);
      hi = hi + 0.01 * (bh - hi);
    }
    const float nan = std::nanf("");
    o.observe(&nan, 1);  // a batch without finite values moves nothing
  }
  const Range r = choose_range(o, parse_method("ema"), signed_bits(8));
  EXPECT_DOUBLE_EQ(r.lo, lo);
  EXPECT_DOUBLE_EQ(r.hi, hi);
  EXPECT_EQ(o.batches(), 20);
}

TEST(Observer, PerChannelObservationSplitsChannelsByStride) {
  // outer 2, channels 3, inner 4: value = 100 * channel + 10 * outer + inner index
  const int64_t outer = 2, channels = 3, inner = 4;
  std::vector<float> x(outer * channels * inner);
  for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) {
    const int64_t c = (i / inner) % channels, o = i / (inner * channels);
    x[i] = static_cast<float>(100 * c + 10 * o + i % inner);
  }
  std::vector<Observer> obs(channels);
  observe_per_channel(obs, x.data(), outer, channels, inner);
  for (int64_t c = 0; c < channels; ++c) {
    EXPECT_EQ(obs[c].count(), outer * inner);
    EXPECT_EQ(obs[c].min(), 100.0 * c);
    EXPECT_EQ(obs[c].max(), 100.0 * c + 13);
    EXPECT_EQ(obs[c].batches(), 1);
  }
  std::vector<Observer> too_few(2);
  EXPECT_THROW(observe_per_channel(too_few, x.data(), outer, channels, inner), std::invalid_argument);
}

TEST(Observer, WithoutDataEveryMethodGivesAnEmptyRange) {
  Observer o;
  for (const char* m : {"minmax", "ema", "percentile", "mse", "entropy"}) {
    const Range r = choose_range(o, parse_method(m), signed_bits(8));
    EXPECT_EQ(r.lo, 0) << m;
    EXPECT_EQ(r.hi, 0) << m;
  }
}

// ---- percentile -----------------------------------------------------------------------

TEST(Percentile, UniformDataGivesTheQuantileWithinABinWidth) {
  const std::vector<float> v = uniform(200000, -4.0f, 4.0f, 3);
  const Observer o = observe_all(v);
  const double w = o.histogram().bin_width();
  // sampling noise of a quantile of 200000 uniform samples is ~0.006 at these levels
  const double tol = w + 0.02;
  const Range r = choose_range(o, parse_method("percentile:90"), signed_bits(8));
  EXPECT_NEAR(r.hi, 3.6, tol);
  EXPECT_EQ(r.lo, -r.hi);
  const Range ra = choose_range(o, parse_method("percentile:95"), asymmetric_bits(8));
  EXPECT_NEAR(ra.lo, -3.6, tol);
  EXPECT_NEAR(ra.hi, 3.6, tol);

  const Observer pos = observe_all(uniform(200000, 0.0f, 4.0f, 4));
  const Range ru = choose_range(pos, parse_method("percentile:75"), unsigned_bits(8));
  EXPECT_EQ(ru.lo, 0);
  EXPECT_NEAR(ru.hi, 3.0, pos.histogram().bin_width() + 0.02);
  // the default 99.99 stays inside the data and near its top
  const Range rd = choose_range(o, Method::kPercentile, signed_bits(8));
  EXPECT_LE(rd.hi, o.histogram().amax());
  EXPECT_NEAR(rd.hi, 4.0, 0.01);
}

TEST(Percentile, InterpolatesLinearlyInsideABin) {
  // 4 equal samples in one bin [1, 1.125) of a 32-bin histogram: the 50th percentile of
  // |x| is halfway through that bin
  const std::vector<float> v = {1.0f, 1.0f, 1.0f, 1.0f, 1.9f};
  Observer o(32);
  o.observe(v.data(), 5);
  ASSERT_EQ(o.histogram().bin_width(), 0.125);
  const Range r = choose_range(o, parse_method("percentile:40"), signed_bits(8));
  EXPECT_DOUBLE_EQ(r.hi, 1.0 + 0.125 * 0.5);
}

// ---- mse --------------------------------------------------------------------------------

TEST(Mse, HistogramErrorClosedFormMatchesNumericalIntegration) {
  const Observer o = observe_all(laplace(20000, 1.0, 6));
  const Histogram& h = o.histogram();
  for (const QuantTarget& t : {signed_bits(2), signed_bits(4), signed_bits(8), unsigned_bits(3),
                               asymmetric_bits(4), asymmetric_bits(8)}) {
    for (const Range& r : {Range{-0.3, 0.5}, Range{-2.0, 2.0}, Range{-20.0, 15.0}, Range{0.0, 3.0}}) {
      const double fast = histogram_quant_mse(h, r.lo, r.hi, t);
      const double ref = histogram_quant_mse_reference(h, r.lo, r.hi, t, 512);
      EXPECT_NEAR(fast, ref, 1e-3 * ref) << "q [" << t.qmin << ", " << t.qmax << "] range ["
                                         << r.lo << ", " << r.hi << "]";
    }
  }
}

TEST(Mse, ClipsGaussianDataAt4BitsNearBannersOptimumAndBeatsMinMax) {
  const std::vector<float> v = gaussian(200000, 1.0, 5);
  const Observer o = observe_all(v);
  const QuantTarget t4 = signed_bits(4);
  const Range r = choose_range(o, parse_method("mse"), t4);
  // Banner et al. 2019, table 1: 4-bit Gaussian optimum alpha = 2.55 sigma for 16 levels
  // spanning 2 alpha; our grid spans [-8s, 7s] with s = c / 7, so c is slightly smaller
  EXPECT_GT(r.hi, 2.0);
  EXPECT_LT(r.hi, 3.0);
  EXPECT_EQ(r.lo, -r.hi);
  const double amax = o.histogram().amax();
  EXPECT_LT(r.hi, 0.7 * amax);
  EXPECT_LT(histogram_quant_mse(o.histogram(), r.lo, r.hi, t4),
            histogram_quant_mse(o.histogram(), -amax, amax, t4));
  // on the raw data too, and within 2% of the exact raw-data optimum
  const double e_hist = reference_squared_error(v, r.lo, r.hi, t4);
  const double c = mse_optimal_clip(v.data(), static_cast<int64_t>(v.size()), t4.qmin, t4.qmax, true);
  EXPECT_LT(e_hist, reference_squared_error(v, -amax, amax, t4));
  EXPECT_LT(e_hist, 1.02 * reference_squared_error(v, -c, c, t4));
}

TEST(Mse, ClipTightensAsTheBitWidthFalls) {
  const Observer o = observe_all(gaussian(100000, 1.0, 7));
  double prev = 0;
  for (int bits : {2, 3, 4, 6, 8}) {
    const double c = choose_range(o, Method::kMse, signed_bits(bits)).hi;
    EXPECT_GT(c, prev) << bits << " bits";
    prev = c;
  }
}

TEST(Mse, AsymmetricAndUnsignedTargetsClipInsideTheData) {
  std::vector<float> v = laplace(50000, 1.0, 8);
  for (auto& x : v) x = x > 0 ? x : 0.2f * x;  // leaky-ReLU-like skew
  const Observer o = observe_all(v);
  const Range ra = choose_range(o, Method::kMse, asymmetric_bits(4));
  EXPECT_LT(ra.lo, 0);
  EXPECT_GE(ra.lo, o.min());
  EXPECT_LT(ra.hi, o.max());
  EXPECT_LT(histogram_quant_mse(o.histogram(), ra.lo, ra.hi, asymmetric_bits(4)),
            histogram_quant_mse(o.histogram(), o.min(), o.max(), asymmetric_bits(4)));
  const Range ru = choose_range(o, Method::kMse, unsigned_bits(4));
  EXPECT_EQ(ru.lo, 0);
  EXPECT_LT(ru.hi, o.max());
}

class MseOptimalClip : public ::testing::TestWithParam<int> {};

TEST_P(MseOptimalClip, IsNeverWorseThanMaxAbsClipping) {
  const int bits = GetParam();
  for (unsigned seed = 0; seed < 6; ++seed) {
    std::vector<float> v = seed % 3 == 0   ? gaussian(3000, 0.05 * (seed + 1), seed)
                           : seed % 3 == 1 ? laplace(3000, 0.02 * (seed + 1), seed)
                                           : uniform(3000, -0.3f, 0.7f, seed);
    for (bool symmetric : {true, false}) {
      const QuantTarget t = symmetric ? signed_bits(bits) : asymmetric_bits(bits);
      double amax = 0, mn = 0, mx = 0;
      for (float x : v) {
        amax = std::max(amax, static_cast<double>(std::fabs(x)));
        mn = std::min<double>(mn, x);
        mx = std::max<double>(mx, x);
      }
      const double c = mse_optimal_clip(v.data(), static_cast<int64_t>(v.size()), t.qmin, t.qmax, symmetric);
      EXPECT_GT(c, 0);
      EXPECT_LE(c, amax);
      const Range r = mse_optimal_range(v.data(), static_cast<int64_t>(v.size()), t);
      const double e = reference_squared_error(v, r.lo, r.hi, t);
      const double e_max = symmetric ? reference_squared_error(v, -amax, amax, t)
                                     : reference_squared_error(v, mn, mx, t);
      EXPECT_LE(e, e_max * (1 + 1e-9)) << bits << " bits, seed " << seed << ", symmetric " << symmetric;
      if (bits <= 4 && seed % 3 != 2) {  // clipping pays on bell-shaped data only
        EXPECT_LT(c, amax) << bits << " bits, seed " << seed;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, MseOptimalClip, ::testing::Values(2, 3, 4, 5, 8),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::to_string(i.param) + "bits";
                         });

TEST(Mse, RawErrorKernelMatchesAPlainLoop) {
  const std::vector<float> v = laplace(1001, 0.5, 11);  // odd length: the tail path too
  for (const QuantTarget& t : {signed_bits(3), signed_bits(8), unsigned_bits(4), asymmetric_bits(5)}) {
    for (const Range& r : {Range{-0.4, 0.9}, Range{-3.0, 3.0}, Range{0.0, 1.5}}) {
      const double fast = quant_squared_error(v.data(), static_cast<int64_t>(v.size()), r.lo, r.hi, t);
      const double ref = reference_squared_error(v, r.lo, r.hi, t);
      EXPECT_NEAR(fast, ref, 1e-5 * ref);
    }
  }
}

TEST(Mse, PerChannelClipEqualsClippingEachChannelAlone) {
  const int64_t outer = 3, channels = 4, inner = 50;
  std::vector<float> x = gaussian(static_cast<int>(outer * channels * inner), 1.0, 12);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= 1.0f + static_cast<float>((i / inner) % channels);
  const QuantTarget t = signed_bits(3);
  const std::vector<Range> rs = mse_optimal_range_per_channel(x.data(), outer, channels, inner, t);
  ASSERT_EQ(rs.size(), 4u);
  for (int64_t c = 0; c < channels; ++c) {
    std::vector<float> ch;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < inner; ++k) ch.push_back(x[(o * channels + c) * inner + k]);
    const Range r = mse_optimal_range(ch.data(), static_cast<int64_t>(ch.size()), t);
    EXPECT_EQ(rs[c].lo, r.lo);
    EXPECT_EQ(rs[c].hi, r.hi);
  }
  EXPECT_LT(rs[0].hi, rs[3].hi);  // channel 3 is four times wider
}

TEST(Mse, OptimalClipRejectsNonFiniteWeights) {
  const std::vector<float> v = {0.1f, std::nanf(""), 0.3f};
  try {
    mse_optimal_clip(v.data(), 3, -8, 7, true);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("x[1]"), std::string::npos) << e.what();
  }
}

// ---- entropy ----------------------------------------------------------------------------

TEST(Entropy, ClipsHeavyTailedDataInsideTheRangeAndTighterThanMinMax) {
  const Observer o = observe_all(laplace(100000, 1.0, 9));
  const double amax = o.histogram().amax();
  const Range r8 = choose_range(o, parse_method("entropy"), signed_bits(8));
  EXPECT_GT(r8.hi, 0);
  EXPECT_LT(r8.hi, 0.9 * amax);
  EXPECT_EQ(r8.lo, -r8.hi);
  // fewer levels, tighter clip
  const Range r4 = choose_range(o, Method::kEntropy, signed_bits(4));
  EXPECT_GT(r4.hi, 0);
  EXPECT_LT(r4.hi, r8.hi);
}

TEST(Entropy, UnsignedAndAsymmetricTargetsStayInsideTheData) {
  std::vector<float> v = laplace(50000, 1.0, 10);
  for (auto& x : v) x = std::fabs(x) - 0.5f;
  const Observer o = observe_all(v);
  const Range ru = choose_range(o, Method::kEntropy, unsigned_bits(8));
  EXPECT_EQ(ru.lo, 0);
  EXPECT_GT(ru.hi, 0);
  EXPECT_LT(ru.hi, o.max());
  const Range ra = choose_range(o, Method::kEntropy, asymmetric_bits(8));
  EXPECT_GE(ra.lo, o.min());
  EXPECT_LT(ra.lo, 0);
  EXPECT_GT(ra.hi, 0);
  EXPECT_LT(ra.hi, o.max());
}

TEST(Entropy, ManyLevelsOnFewBinsKeepTheFullRange) {
  const Observer o = observe_all(laplace(10000, 1.0, 13));
  const Range r = choose_range(o, Method::kEntropy, signed_bits(16));
  EXPECT_EQ(r.hi, o.histogram().amax());
}

// ---- every method ---------------------------------------------------------------------

TEST(Calibrators, EveryMethodGivesAnOrderedRangeWithinTheData) {
  std::vector<float> v = gaussian(30000, 1.0, 14);
  for (size_t i = 0; i < v.size(); i += 3) v[i] = std::fabs(v[i]) * 3;  // skew
  const Observer o = observe_all(v);
  const double amax = o.histogram().amax(), tiny = 1e-12;
  for (const char* m : {"minmax", "ema", "percentile", "percentile:99", "mse", "entropy"}) {
    for (int bits : {2, 4, 8}) {
      for (const QuantTarget& t : {signed_bits(bits), unsigned_bits(bits), asymmetric_bits(bits)}) {
        const Range r = choose_range(o, parse_method(m), t);
        EXPECT_LE(r.lo, r.hi) << m << " " << bits;
        EXPECT_LE(std::fabs(r.lo), amax + tiny) << m << " " << bits;
        EXPECT_LE(std::fabs(r.hi), amax + tiny) << m << " " << bits;
        if (!t.is_signed_data_range) {
          EXPECT_GE(r.lo, o.min() - tiny) << m << " " << bits;
          EXPECT_LE(r.hi, o.max() + tiny) << m << " " << bits;
        }
      }
    }
  }
}

// ---- names and errors -----------------------------------------------------------------

TEST(ParseMethod, ABadNameThrowsWithTheNameAndTheChoices) {
  try {
    parse_method("minmx");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown calibrator 'minmx' (expected minmax, ema, percentile[:P], mse, entropy)");
  }
  EXPECT_THROW(parse_method("mse:3"), std::invalid_argument);
  EXPECT_THROW(parse_method(""), std::invalid_argument);
  EXPECT_THROW(parse_method("percentile:0"), std::invalid_argument);
  EXPECT_THROW(parse_method("percentile:100.5"), std::invalid_argument);
  EXPECT_THROW(parse_method("percentile:abc"), std::invalid_argument);
  EXPECT_THROW(parse_method("percentile:"), std::invalid_argument);
}

TEST(ParseMethod, ReadsEveryMethodAndItsNameReadsBack) {
  EXPECT_EQ(parse_method("percentile").percentile, 99.99);
  EXPECT_EQ(parse_method("percentile:99.9").percentile, 99.9);
  EXPECT_EQ(parse_method("entropy").method, Method::kEntropy);
  for (const char* m : {"minmax", "ema", "percentile:99.9", "mse", "entropy"}) {
    const MethodSpec s = parse_method(m);
    const MethodSpec back = parse_method(method_name(s));
    EXPECT_EQ(back.method, s.method) << m;
    EXPECT_EQ(back.percentile, s.percentile) << m;
  }
}

TEST(QuantTarget, AnEmptyGridIsRejected) {
  const QuantTarget bad{5, 5, true, false};
  EXPECT_THROW(grid_for_range(-1, 1, bad), std::invalid_argument);
  const Observer o = observe_all(gaussian(100, 1.0, 15));
  EXPECT_THROW(choose_range(o, Method::kMse, bad), std::invalid_argument);
}

TEST(QuantTarget, GridFollowsTheNumericSemantics) {
  const Grid s = grid_for_range(-2.0, 1.0, signed_bits(8));
  EXPECT_DOUBLE_EQ(s.scale, 2.0 / 127);
  EXPECT_EQ(s.zero_point, 0);
  const Grid u = grid_for_range(-2.0, 3.0, unsigned_bits(8));
  EXPECT_DOUBLE_EQ(u.scale, 3.0 / 255);
  const Grid a = grid_for_range(-1.0, 3.0, asymmetric_bits(8));
  EXPECT_DOUBLE_EQ(a.scale, 4.0 / 255);
  EXPECT_EQ(a.zero_point, std::nearbyint(1.0 / (4.0 / 255)));
}

}  // namespace
}  // namespace calib
}  // namespace anybit
