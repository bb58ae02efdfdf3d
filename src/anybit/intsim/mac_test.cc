// The built-in MAC models: their string form, their numbers, and reproducibility under a
// seed.
#include "anybit/intsim/mac.h"

#include <gtest/gtest.h>

#include <limits>

#include <cmath>
#include <array>
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

// Runs one dot product with a wrapping accumulator, as element `index` of image `image`
// (the key of a sum-perturbing model's draws).
int64_t dot_once(MacModel& mac, const std::vector<int32_t>& x, const std::vector<int32_t>& w, int bits = 32,
                 int64_t image = 0, int64_t index = 0) {
  Accumulator acc({bits, Overflow::kWrap});
  MacContext ctx;
  ctx.layer = "test";
  ctx.op = "linear";
  ctx.acc = &acc;
  ctx.image = image;
  ctx.index = index;
  return mac.dot(x.data(), w.data(), x.size(), ctx);
}

TEST(MacModel, ParsesEveryDocumentedFormAndDescribesItselfBack) {
  for (const std::string text : {"exact", "gauss:sigma=2.5", "gauss:rel=0.01", "gauss:sigma=1,rel=0.5,seed=7",
                                 "gauss:fs=0.001", "adc:bits=8,range=4096", "adc:bits=6,fs=0.25",
                                 "adc:bits=8,range=auto", "adc:bits=8,range=auto,pct=99.9",
                                 "bitflip:rate=0.0001,seed=3", "wnoise:rel=0.02,seed=4"}) {
    const auto m = parse_mac_model(text);
    const auto again = parse_mac_model(m->describe());
    EXPECT_EQ(again->describe(), m->describe()) << text;
  }
  EXPECT_EQ(parse_mac_model("gauss:sigma=2.5")->describe(), "gauss:sigma=2.5,seed=0");
  EXPECT_EQ(parse_mac_model("gauss:rel=0.01")->describe(), "gauss:rel=0.01,seed=0");
  EXPECT_EQ(parse_mac_model("adc:bits=8,range=auto")->describe(), "adc:bits=8,range=auto,pct=99.99");
  EXPECT_TRUE(parse_mac_model("adc:bits=8,range=auto")->needs_calibration());
  EXPECT_FALSE(parse_mac_model("adc:bits=8,fs=0.5")->needs_calibration());
  EXPECT_EQ(parse_mac_model(" bitflip : rate = 1e-4 , seed = 3 ")->describe(), "bitflip:rate=0.0001,seed=3");
  EXPECT_TRUE(parse_mac_model("exact")->is_exact());
  EXPECT_FALSE(parse_mac_model("gauss:sigma=0")->is_exact());
}

TEST(MacModel, BadStringsAreErrorsThatSayWhatIsAccepted) {
  EXPECT_NE(parse_error("noisy").find("unknown model 'noisy' (expected exact, gauss, adc, bitflip or wnoise)"),
            std::string::npos);
  EXPECT_NE(parse_error("gauss:sgima=2").find("unknown parameter 'sgima' for gauss (expected sigma, rel, fs, seed)"),
            std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma=abc").find("sigma=abc is not a number"), std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma=-1").find("outside"), std::string::npos);
  EXPECT_NE(parse_error("gauss:sigma=inf").find("sigma=inf is not a number"), std::string::npos);
  EXPECT_THROW(GaussianMac(std::numeric_limits<double>::infinity(), 0, 0, 1), Error);  // the C++ API too
  EXPECT_NE(parse_error("gauss").find("gauss needs sigma=..., rel=... or fs=..."), std::string::npos);
  EXPECT_NE(parse_error("gauss:rel=-0.1").find("rel=-0.1 is outside"), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8").find("adc needs range=... (or range=auto) or fs=..."), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8,range=9,fs=0.1").find("one of them"), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8,range=9,pct=99").find("pct=... goes with range=auto"), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8,range=auto,pct=101").find("pct=101 is outside [0, 100]"), std::string::npos);
  EXPECT_NE(parse_error("adc:bits=8,range=autox").find("range=autox is not a number"), std::string::npos);
  EXPECT_NE(parse_error("wnoise:rel=0.1,sigma=2").find("unknown parameter 'sigma' for wnoise"), std::string::npos);
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
    ra.push_back(dot_once(*a, {1}, {1000}, 32, i / 10, i % 10));
    rb.push_back(dot_once(*b, {1}, {1000}, 32, i / 10, i % 10));
    rc.push_back(dot_once(*c, {1}, {1000}, 32, i / 10, i % 10));
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
    const double e = static_cast<double>(dot_once(g, {1}, {500}, 32, i % 7, i / 7) - 500);
    sum += e;
    sum_sq += e * e;
  }
  const double mean = sum / n, sd = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(sd, std::sqrt(16.0 + 1.0 / 12), 0.1);  // rounding adds 1/12 of variance
}

// A block of sums (the engine's fast path: the vectorized normals) gives each element's
// one-at-a-time result (the per-dot-product path), edge words and the clamp at +-2^50
// included.
TEST(MacModel, GaussBlockEqualsOneSumAtATime) {
  for (double sigma : {3.0, 1e18}) {
    GaussianMac g(sigma, 0.0, 5);
    const int64_t n = 5000 + 3;
    std::vector<int32_t> exact(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) exact[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % 20001 - 10000);
    std::vector<int64_t> block(static_cast<size_t>(n));
    MacLayer layer;
    layer.index = 3;
    SumBlock b;
    b.layer = &layer;
    b.image = 2;
    b.first_index = 37;
    b.count = n;
    b.exact = exact.data();
    b.out = block.data();
    g.perturb(b);
    for (int64_t i = 0; i < n; ++i) {
      int64_t one = 0;
      SumBlock s = b;
      s.first_index = b.first_index + i;
      s.count = 1;
      s.exact = exact.data() + i;
      s.out = &one;
      g.perturb(s);
      ASSERT_EQ(block[static_cast<size_t>(i)], one) << "sigma " << sigma << " element " << i;
    }
  }
}

TEST(MacModel, RelativeGaussScalesWithTheExactMagnitude) {
  GaussianMac g(0.0, 0.01, 4);
  double small = 0, large = 0;
  for (int i = 0; i < 2000; ++i) {
    small += std::fabs(static_cast<double>(dot_once(g, {1}, {1000}, 32, 0, i) - 1000));
    large += std::fabs(static_cast<double>(dot_once(g, {1}, {100000}, 32, 1, i) - 100000));
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
  // the engine counts the clipped results per layer (LayerStats::clipped) from perturb()
  const std::vector<int32_t> exact{23, 1000, -1000, 5};
  std::vector<int64_t> out(4);
  SumBlock b;
  b.count = 4;
  b.exact = exact.data();
  b.out = out.data();
  adc.perturb(b);
  EXPECT_EQ(out, (std::vector<int64_t>{20, 70, -80, 0}));
  EXPECT_EQ(b.clipped, 2);
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
    const int64_t ra = dot_once(a, {1}, {0}, 32, 0, i);
    ASSERT_EQ(ra, dot_once(b, {1}, {0}, 32, 0, i));
    flipped_bits += __builtin_popcountll(static_cast<uint64_t>(ra) & 0xffffffffu);
  }
  EXPECT_NEAR(flipped_bits / 2000.0, 0.05 * 32, 0.15);
}

TEST(MacModel, NoiseSweepsExpandOneParameterAndReplaceSeeds) {
  std::string key;
  std::vector<double> values;
  EXPECT_EQ(expand_mac_levels("gauss:rel=0.001,0.01,0.1,seed=3", &key, &values),
            (std::vector<std::string>{"gauss:rel=0.001,seed=3", "gauss:rel=0.01,seed=3", "gauss:rel=0.1,seed=3"}));
  EXPECT_EQ(key, "rel");
  EXPECT_EQ(values, (std::vector<double>{0.001, 0.01, 0.1}));
  EXPECT_EQ(expand_mac_levels("adc:bits=4,6,8,range=auto", &key, nullptr),
            (std::vector<std::string>{"adc:bits=4,range=auto", "adc:bits=6,range=auto", "adc:bits=8,range=auto"}));
  EXPECT_EQ(expand_mac_levels("gauss:sigma=2", &key, &values), (std::vector<std::string>{"gauss:sigma=2"}));
  EXPECT_EQ(key, "");
  EXPECT_TRUE(values.empty());
  auto err = [](const std::string& t) {
    try {
      expand_mac_levels(t, nullptr, nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(err("gauss:rel=0.1,0.2,sigma=1,2").find("only one parameter may take several values (rel and sigma)"),
            std::string::npos);
  EXPECT_NE(err("gauss:rel=0.1,-0.2").find("rel=-0.2 is outside"), std::string::npos);
  EXPECT_NE(err("gauss:0.1").find("expected key=value"), std::string::npos);
  EXPECT_EQ(with_mac_seed("gauss:rel=0.1", 4), "gauss:rel=0.1,seed=4");
  EXPECT_EQ(with_mac_seed("gauss:seed=9,rel=0.1", 4), "gauss:rel=0.1,seed=4");
  EXPECT_EQ(with_mac_seed("adc:bits=8,range=100", 4), "adc:bits=8,range=100");
  EXPECT_EQ(with_mac_seed("exact", 4), "exact");
}

TEST(MacModel, AdcFullScaleComesFromTheLayerOrFromCalibration) {
  MacLayer layer;
  layer.name = "fc";
  layer.full_scale = 800;
  layer.calibrated = 40;
  auto fs = parse_mac_model("adc:bits=4,fs=0.1");  // F = 80: step 10
  auto cal = parse_mac_model("adc:bits=4,range=auto");  // F = 40: step 5
  fs->prepare({layer});
  cal->prepare({layer});
  Accumulator acc;
  MacContext ctx;
  ctx.acc = &acc;
  ctx.info = &layer;
  const std::vector<int32_t> one{1};
  const std::vector<int32_t> v{23};
  EXPECT_EQ(fs->dot(one.data(), v.data(), 1, ctx), 20);
  EXPECT_EQ(cal->dot(one.data(), v.data(), 1, ctx), 25);
  EXPECT_EQ(static_cast<AdcMac&>(*cal).ranges(), std::vector<double>{40});
  layer.calibrated = -1;
  try {
    cal->prepare({layer});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("range=auto needs calibration data"), std::string::npos) << e.what();
  }
}

TEST(MacModel, RelativeGaussSumsThePerProductVariances) {
  // x = (3, 4), w = (1, 1): sum (x w)^2 = 25, so the noise sd is rel * 5 whatever the sum
  GaussianMac g(0.0, 2.0, 11);
  double sum_sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double e = static_cast<double>(dot_once(g, {3, 4}, {1, 1}, 32, 0, i) - 7);
    sum_sq += e * e;
  }
  EXPECT_NEAR(std::sqrt(sum_sq / n), std::sqrt(100.0 + 1.0 / 12), 0.3);
  // x = (5, 0): the same exact sum 5 but sum (x w)^2 = 25 too; x = (3, -4) w = (1, -1): 7 again
  EXPECT_EQ(dot_squares(std::vector<int32_t>{3, -4}.data(), std::vector<int32_t>{1, -1}.data(), 2), 25.0);
  const std::vector<int32_t> big{65535, -65535}, wbig{65535, 65535};
  EXPECT_EQ(dot_squares(big.data(), wbig.data(), 2), 2 * std::pow(65535.0, 4));
}

TEST(MacModel, WeightNoiseIsStaticPerSeedAndStaysInTheWeightRange) {
  WeightNoiseMac a(0.1, 1), b(0.1, 1), c(0.1, 2);
  MacLayer layer;
  layer.out_channels = 2;
  layer.depth = 300;
  std::vector<int32_t> w(600);
  for (int i = 0; i < 600; ++i) w[i] = i % 2 ? 100 : -100;
  w[599] = 127;  // channel 1's max
  const std::vector<int32_t> lo{-128, -128}, hi{127, 127};
  auto wa = w, wb = w, wc = w;
  a.perturb_weights(layer, wa.data(), lo.data(), hi.data());
  b.perturb_weights(layer, wb.data(), lo.data(), hi.data());
  c.perturb_weights(layer, wc.data(), lo.data(), hi.data());
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa, wc);
  double sum_sq = 0;
  for (int i = 0; i < 300; ++i) {
    ASSERT_GE(wa[i], -128);
    ASSERT_LE(wa[i], 127);
    sum_sq += static_cast<double>(wa[i] - w[i]) * (wa[i] - w[i]);
  }
  EXPECT_NEAR(std::sqrt(sum_sq / 300), 10.0, 1.5);  // rel 0.1 of the channel's max |w| = 100
  EXPECT_LE(wa[599], 127);
}

TEST(MacModel, BitFlipFlipsEachBitAtItsRate) {
  BitFlipMac m(0.01, 5);
  std::vector<int64_t> per_bit(16, 0);
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const uint64_t word = static_cast<uint64_t>(dot_once(m, {1}, {0}, 16, i / 1000, i % 1000)) & 0xffff;
    for (int bit = 0; bit < 16; ++bit) per_bit[bit] += (word >> bit) & 1;
  }
  for (int bit = 0; bit < 16; ++bit) EXPECT_NEAR(per_bit[bit] / static_cast<double>(n), 0.01, 0.0015) << bit;
}

TEST(Philox, MatchesRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32 with 10 rounds
  using W = std::array<uint32_t, 4>;
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (W{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (W{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (W{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, KeyedWordsDoNotDependOnTheBlockTheyAreDrawnIn) {
  std::vector<uint32_t> all(103), part(37);
  keyed_words(77, 2, 5, 9, 11, 103, all.data());
  keyed_words(77, 2, 5, 9, 11 + 50, 37, part.data());
  for (int i = 0; i < 37; ++i) ASSERT_EQ(part[i], all[50 + i]) << i;
  uint32_t one = 0;
  keyed_words(77, 2, 5, 9, 11 + 13, 1, &one);
  EXPECT_EQ(one, all[13]);
  // element e is word (e % 32) / 8 of Philox at counter (8 (e / 32) + e % 8, image, layer, stream)
  for (uint32_t e : {24u, 11u + 100u, 40u}) {
    std::vector<uint32_t> v(1);
    keyed_words(77, 2, 5, 9, e, 1, v.data());
    const auto block = philox4x32_10({8 * (e / 32) + e % 8, 9, 5, 2}, {77, 0});
    EXPECT_EQ(v[0], block[(e % 32) / 8]) << e;
  }
  // and every key component matters
  uint32_t other = 0;
  for (auto [seed, stream, layer, image] : {std::array<uint32_t, 4>{78, 2, 5, 9}, {77, 3, 5, 9}, {77, 2, 6, 9}, {77, 2, 5, 10}}) {
    keyed_words(seed, stream, layer, image, 11 + 13, 1, &other);
    EXPECT_NE(other, one);
  }
}

TEST(Normal, InverseCdfIsAccurateAndTheTableIsWithinItsBound) {
  // Phi^-1 at known quantiles
  EXPECT_NEAR(inverse_normal_exact(0.5), 0.0, 1e-15);
  EXPECT_NEAR(inverse_normal_exact(0.975), 1.959963984540054, 1e-12);
  EXPECT_NEAR(inverse_normal_exact(0.001), -3.090232306167814, 1e-12);
  EXPECT_NEAR(inverse_normal_exact(1e-10), -6.361340902404056, 1e-10);
  // the table against the exact inverse over every 4093rd word and around each cell edge
  double worst = 0;
  auto check = [&](uint64_t w) {
    const uint32_t word = static_cast<uint32_t>(w);
    const double u = (static_cast<double>(word) + 0.5) / 4294967296.0;
    worst = std::max(worst, std::fabs(normal_from_word(word) - inverse_normal_exact(u)));
  };
  for (uint64_t w = 0; w < (uint64_t{1} << 32); w += 4093) check(w);
  for (uint64_t c = 1; c < 4096; ++c)
    for (int64_t d : {-1, 0, 1, 1 << 19}) check((c << 20) + static_cast<uint64_t>(d));
  EXPECT_LT(worst, 2e-4);
  EXPECT_EQ(normal_from_word(0), inverse_normal_exact(0.5 / 4294967296.0));  // exact in the tails
}

// The vectorized interpolation (8 words at a time, one 64-bit load per cell pair) gives
// the portable one's doubles bit for bit, edge words included.
TEST(Normal, KeyedNormalsEqualTheNormalOfEachWord) {
  const int64_t n = 3 * 4096 + 7;
  std::vector<uint32_t> words(static_cast<size_t>(n));
  std::vector<double> z(static_cast<size_t>(n));
  for (uint64_t first : {uint64_t{0}, uint64_t{5}}) {
    keyed_words(11, 0, 2, 7, first, n, words.data());
    keyed_normals(11, 0, 2, 7, first, n, z.data());
    int64_t edges = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = words[static_cast<size_t>(i)] >> 20;
      edges += c < 16 || c >= 4080;
      ASSERT_EQ(z[static_cast<size_t>(i)], normal_from_word(words[static_cast<size_t>(i)])) << i;
    }
    EXPECT_GT(edges, 0);  // the edge words were among them
  }
}

TEST(Normal, KeyedNormalsHaveTheMomentsOfAStandardNormal) {
  const int64_t n = 1 << 20;
  std::vector<double> z(static_cast<size_t>(n));
  keyed_normals(3, 0, 1, 2, 0, n, z.data());
  double m1 = 0, m2 = 0, m4 = 0;
  int64_t beyond3 = 0;
  for (double v : z) {
    m1 += v, m2 += v * v, m4 += v * v * v * v;
    beyond3 += std::fabs(v) > 3;
  }
  m1 /= n, m2 /= n, m4 /= n;
  EXPECT_NEAR(m1, 0.0, 0.005);
  EXPECT_NEAR(m2, 1.0, 0.005);
  EXPECT_NEAR(m4, 3.0, 0.05);
  EXPECT_NEAR(static_cast<double>(beyond3) / n, 0.0026998, 0.0003);  // P(|Z| > 3)
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
