// The built-in MAC models: their string form, their numbers, and reproducibility under a
// seed.
#include "anybit/intsim/mac.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

namespace anybit {
namespace intsim {
namespace {

std::string parse_error(const std::string& text) {
  try {
    parse_mac_model(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs one dot product with a 32-bit wrapping accumulator.
int64_t dot_once(MacModel& mac, const std::vector<int32_t>& x, const std::vector<int32_t>& w, int bits = 32) {
  Accumulator acc({bits, Overflow::kWrap});
  MacContext ctx;
  ctx.layer = "test";
  ctx.op = "linear";
  ctx.acc = &acc;
  return mac.dot(x.data(), w.data(), x.size(), ctx);
}

TEST(MacModel, ParsesEveryDocumentedFormAndDescribesItselfBack) {
  for (const std::string text : {"exact", "gauss:sigma=2.5", "gauss:rel=0.01", "gauss:sigma=1,rel=0.5,seed=7",
                                 "adc:bits=8,range=4096", "bitflip:rate=0.0001,seed=3"}) {
    const auto m = parse_mac_model(text);
    const auto again = parse_mac_model(m->describe());
    EXPECT_EQ(again->describe(), m->describe()) << text;
  }
  EXPECT_EQ(parse_mac_model("gauss:sigma=2.5")->describe(), "gauss:sigma=2.5,seed=0");
  EXPECT_EQ(parse_mac_model(" bitflip : rate = 1e-4 , seed = 3 ")->describe(), "bitflip:rate=0.0001,seed=3");
  EXPECT_TRUE(parse_mac_model("exact")->is_exact());
  EXPECT_FALSE(parse_mac_model("gauss:sigma=0")->is_exact());
}

TEST(MacModel, BadStringsAreErrorsThatSayWhatIsAccepted) {
  EXPECT_NE(parse_error("noisy").find("unknown model 'noisy' (expected exact, gauss, adc or bitflip)"), std::string::npos);
  EXPECT_NE(parse_error("gauss:sgima=2").find("unknown parameter 'sgima' for gauss (expected sigma, rel, seed)"),
            std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma=abc").find("sigma=abc is not a number"), std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma=-1").find("outside"), std::string::npos);
  EXPECT_NE(parse_error("gauss").find("gauss needs sigma=... or rel=..."), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8").find("adc needs range=..."), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=40,range=10").find("bits=40 is outside [1, 32]"), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8,range=0").find("range must be > 0"), std::string::npos);
  EXPECT_NE(parse_error("bitflip:rate=2").find("outside [0, 1]"), std::string::npos);
  EXPECT_NE(parse_error("bitflip:rate=0.1,rate=0.2").find("given twice"), std::string::npos);
  EXPECT_NE(parse_error("exact:seed=1").find("it takes none"), std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma").find("expected key=value"), std::string::npos);
  EXPECT_EQ(parse_error("gauss:sigma=1").find("MAC model"), std::string::npos);  // (no error)
  EXPECT_EQ(parse_error("noisy").rfind("MAC model 'noisy': ", 0), 0u);
}

TEST(MacModel, ExactSumsThroughTheAccumulator) {
  ExactMac exact;
  EXPECT_EQ(dot_once(exact, {1, -2, 3}, {4, 5, 6}), 4 - 10 + 18);
  EXPECT_EQ(dot_once(exact, {200, 200}, {100, 100}, 16), 40000 - 65536);  // wraps once
}

TEST(MacModel, GaussWithSigmaZeroIsExact) {
  auto g = parse_mac_model("gauss:sigma=0,seed=5");
  for (int i = 0; i < 100; ++i) EXPECT_EQ(dot_once(*g, {i, -3, 7}, {2, i, 1}), 2 * i - 3 * i + 7);
}

TEST(MacModel, GaussIsReproducibleUnderASeedAndDiffersAcrossSeeds) {
  auto a = parse_mac_model("gauss:sigma=10,seed=1");
  auto b = parse_mac_model("gauss:sigma=10,seed=1");
  auto c = parse_mac_model("gauss:sigma=10,seed=2");
  std::vector<int64_t> ra, rb, rc;
  for (int i = 0; i < 100; ++i) {
    ra.push_back(dot_once(*a, {1}, {1000}));
    rb.push_back(dot_once(*b, {1}, {1000}));
    rc.push_back(dot_once(*c, {1}, {1000}));
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
  a->reset();
  EXPECT_EQ(dot_once(*a, {1}, {1000}), ra[0]);
}

TEST(MacModel, GaussErrorHasZeroMeanAndTheRequestedSpread) {
  GaussianMac g(4.0, 0.0, 3);
  const int n = 40000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double e = static_cast<double>(dot_once(g, {1}, {500}) - 500);
    sum += e;
    sum_sq += e * e;
  }
  const double mean = sum / n, sd = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(sd, std::sqrt(16.0 + 1.0 / 12), 0.1);  // rounding adds 1/12 of variance
}

TEST(MacModel, RelativeGaussScalesWithTheExactMagnitude) {
  GaussianMac g(0.0, 0.01, 4);
  double small = 0, large = 0;
  for (int i = 0; i < 2000; ++i) {
    small += std::fabs(static_cast<double>(dot_once(g, {1}, {1000}) - 1000));
    large += std::fabs(static_cast<double>(dot_once(g, {1}, {100000}) - 100000));
  }
  EXPECT_GT(large, 50 * small);
  const double pi = std::acos(-1.0);
  EXPECT_NEAR(large / 2000, 1000 * std::sqrt(2 / pi), 50);  // E|N(0, 1000^2)|
}

TEST(MacModel, AdcRoundsToItsStepAndClipsAtFullScale) {
  AdcMac adc(4, 80.0);  // step 2 * 80 / 16 = 10, codes -8..7
  EXPECT_EQ(dot_once(adc, {1}, {23}), 20);
  EXPECT_EQ(dot_once(adc, {1}, {25}), 20);   // 2.5 codes: ties to even
  EXPECT_EQ(dot_once(adc, {1}, {-37}), -40);
  EXPECT_EQ(dot_once(adc, {1}, {1000}), 70);  // clipped to code 7
  EXPECT_EQ(dot_once(adc, {1}, {-1000}), -80);
  EXPECT_EQ(adc.clipped(), 2);
}

TEST(MacModel, BitFlipRateZeroIsExactAndRateOneInvertsEveryBit) {
  BitFlipMac none(0.0, 1), all(1.0, 1);
  for (int v : {0, 1, -1, 1234, -999}) {
    EXPECT_EQ(dot_once(none, {1}, {v}), v);
    EXPECT_EQ(dot_once(all, {1}, {v}), ~static_cast<int64_t>(v));  // every bit of the word flipped
    EXPECT_EQ(dot_once(all, {1}, {v}, 12), ~static_cast<int64_t>(v)) << "12-bit word";
  }
}

TEST(MacModel, BitFlipIsReproducibleAndFlipsAboutRateTimesBits) {
  BitFlipMac a(0.05, 9), b(0.05, 9);
  int flipped_bits = 0;
  for (int i = 0; i < 2000; ++i) {
    const int64_t ra = dot_once(a, {1}, {0});
    ASSERT_EQ(ra, dot_once(b, {1}, {0}));
    flipped_bits += __builtin_popcountll(static_cast<uint64_t>(ra) & 0xffffffffu);
  }
  EXPECT_NEAR(flipped_bits / 2000.0, 0.05 * 32, 0.15);
}

TEST(PortableRng, ProducesTheSameStreamForTheSameSeed) {
  PortableRng a(42), b(42);
  for (int i = 0; i < 1000; ++i) {
    const double u = a.uniform();
    ASSERT_EQ(u, b.uniform());
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_EQ(a.gaussian(), b.gaussian());
  }
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
