// Fake-quant kernels: optimized vs reference vs ATen-op fallback vs ATen's own
// fake_quantize_* ops, forward and backward, over bits, granularities and seeds. Minifloat,
// MX, NVFP4 and codebook kernels: fake_quant_float_test.cc.
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

bool bit_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::equal(a.contiguous(), b.contiguous());
}

// Random values plus exact rounding ties (k + 0.5) * s and values outside the range.
at::Tensor test_input(at::IntArrayRef shape, double scale, int64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape) * (scale * 40.0);
  at::Tensor flat = x.view({-1});
  const int64_t n = flat.numel();
  for (int64_t i = 0; i < n; i += 3) flat[i] = (static_cast<double>(i % 61) - 30.0 + 0.5) * scale;
  return x;
}

class UniformVsAten : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(UniformVsAten, PerTensorIsBitIdenticalToTorchFakeQuantize) {
  const int bits = std::get<0>(GetParam());
  const bool asym = std::get<1>(GetParam());
  QuantSpec s = parse_spec((asym ? "uint" : "int") + std::to_string(bits));
  for (int64_t seed = 0; seed < 4; ++seed) {
    const double sc = 0.0173 * (seed + 1);
    const int64_t zp = asym ? (s.qmax() + 1) / 3 : 0;
    at::Tensor x = test_input({7, 33, 5}, sc, seed);
    at::Tensor scale = at::full({1}, sc), z = at::full({1}, static_cast<double>(zp));
    at::Tensor want = at::fake_quantize_per_tensor_affine(x, static_cast<float>(sc), zp, s.qmin(), s.qmax());
    EXPECT_TRUE(bit_equal(fake_quant_affine_forward(x, scale, z, -1, 0, s.qmin(), s.qmax(), 0), want));
    EXPECT_TRUE(bit_equal(fake_quant_affine_reference(x, scale, z, -1, 0, s.qmin(), s.qmax(), 0), want));
    EXPECT_TRUE(bit_equal(fake_quant_affine_torchops(x, scale, z, -1, 0, s.qmin(), s.qmax(), 0), want));
  }
}

TEST_P(UniformVsAten, PerChannelIsBitIdenticalToTorchFakeQuantizeOnEveryAxis) {
  const int bits = std::get<0>(GetParam());
  const bool asym = std::get<1>(GetParam());
  QuantSpec s = parse_spec((asym ? "uint" : "int") + std::to_string(bits));
  at::Tensor x = test_input({6, 5, 4, 3}, 0.05, bits);
  for (int64_t axis = 0; axis < 4; ++axis) {
    const int64_t C = x.size(axis);
    at::Tensor scale = at::linspace(0.01, 0.09, C);
    at::Tensor zi = asym ? at::arange(C, at::kInt) % (s.qmax() + 1) : at::zeros({C}, at::kInt);
    at::Tensor want = at::fake_quantize_per_channel_affine(x, scale, zi, axis, s.qmin(), s.qmax());
    at::Tensor zf = zi.to(at::kFloat);
    EXPECT_TRUE(bit_equal(fake_quant_affine_forward(x, scale, zf, axis, 0, s.qmin(), s.qmax(), 0), want))
        << "axis " << axis;
    EXPECT_TRUE(bit_equal(fake_quant_affine_reference(x, scale, zf, axis, 0, s.qmin(), s.qmax(), 0), want));
    EXPECT_TRUE(bit_equal(fake_quant_affine_torchops(x, scale, zf, axis, 0, s.qmin(), s.qmax(), 0), want));
  }
}

INSTANTIATE_TEST_SUITE_P(Bits2To16, UniformVsAten,
                         ::testing::Combine(::testing::Range(2, 17), ::testing::Bool()));

TEST(FakeQuantAffine, PerGroupEqualsPerChannelOverGroupedRows) {
  at::Tensor w = test_input({8, 64}, 0.02, 3);
  at::Tensor scale = at::rand({8 * 64 / 16}) * 0.05 + 0.01;
  at::Tensor z = at::zeros({scale.numel()});
  at::Tensor got = fake_quant_affine_forward(w, scale, z, -1, 16, -8, 7, 0);
  at::Tensor want = fake_quant_affine_forward(w.reshape({-1, 16}), scale, z, 0, 0, -8, 7, 0);
  EXPECT_TRUE(bit_equal(got, want.reshape({8, 64})));
  EXPECT_TRUE(bit_equal(fake_quant_affine_reference(w, scale, z, -1, 16, -8, 7, 0), got));
  EXPECT_TRUE(bit_equal(fake_quant_affine_torchops(w, scale, z, -1, 16, -8, 7, 0), got));
}

TEST(FakeQuantAffine, EveryRoundingModeResolvesEveryTieAsSpecified) {
  // all ties k + 1/2 of a 6-bit signed range, with s = 1 (exact in float)
  at::Tensor x = at::arange(-40, 40).to(at::kFloat) + 0.5;
  at::Tensor one = at::ones({1}), zero = at::zeros({1});
  auto run = [&](int64_t mode) { return fake_quant_affine_forward(x, one, zero, -1, 0, -32, 31, mode); };
  at::Tensor even = run(0), away = run(1), floor = run(2);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i].item<double>();
    auto clampq = [](double q) { return std::min(std::max(q, -32.0), 31.0); };
    EXPECT_EQ(even[i].item<double>(), clampq(std::nearbyint(v))) << v;
    EXPECT_EQ(away[i].item<double>(), clampq(std::round(v))) << v;
    EXPECT_EQ(floor[i].item<double>(), clampq(std::floor(v))) << v;
    EXPECT_EQ(std::fmod(std::fabs(even[i].item<double>()), 2.0) == 0.0 ||
                  std::fabs(v) > 31.0,
              true) << "half-even must land on an even integer: " << v;
  }
  for (int64_t mode = 0; mode < 3; ++mode)
    EXPECT_TRUE(bit_equal(run(mode), fake_quant_affine_reference(x, one, zero, -1, 0, -32, 31, mode)));
}

TEST(FakeQuantAffine, ClampsAndAppliesEveryZeroPointOfUint4Exhaustively) {
  at::Tensor x = at::arange(-200, 200).to(at::kFloat) * 0.01;  // -2.0 .. 1.99
  const float s = 0.1f;
  for (int z = 0; z <= 15; ++z) {
    at::Tensor got = fake_quant_affine_forward(x, at::full({1}, s), at::full({1}, float(z)), -1, 0, 0, 15, 0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float xv = x[i].item<float>();
      float q = std::min(std::max(std::nearbyint(xv * (1.0f / s)) + z, 0.0f), 15.0f);
      EXPECT_EQ(got[i].item<float>(), (q - z) * s);
    }
    at::Tensor levels = std::get<0>(at::_unique(got));
    EXPECT_LE(levels.numel(), 16);
  }
}

TEST(FakeQuantAffine, StochasticRoundingIsUnbiasedAndLandsOnNeighbours) {
  at::manual_seed(0);
  at::Tensor x = at::full({200000}, 0.3f);
  at::Tensor y = fake_quant_affine_forward(x, at::ones({1}), at::zeros({1}), -1, 0, -8, 7, 3);
  EXPECT_TRUE(((y == 0) | (y == 1)).all().item<bool>());
  EXPECT_NEAR(y.mean().item<double>(), 0.3, 0.005);
}

TEST(FakeQuantAffine, InvalidArgumentsThrowWithTheValues) {
  at::Tensor x = at::randn({4, 3});
  EXPECT_THROW(fake_quant_affine_forward(x, at::ones({1}), at::zeros({1}), -1, 0, 5, 2, 0), Error);
  EXPECT_THROW(fake_quant_affine_forward(x, at::ones({5}), at::zeros({5}), 0, 0, -8, 7, 0), Error);
  EXPECT_THROW(fake_quant_affine_forward(x, at::ones({3}), at::zeros({3}), 7, 0, -8, 7, 0), Error);
  EXPECT_THROW(fake_quant_affine_forward(x, at::ones({1}), at::zeros({1}), -1, 5, -8, 7, 0), Error);
  try {
    fake_quant_affine_forward(x, at::ones({1}), at::zeros({1}), -1, 0, 5, 2, 0);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quant_min (5)"), std::string::npos);
  }
}

// ---- gradients ------------------------------------------------------------------

// The zero point is even here on purpose: ATen's learnable backward rounds x/s + z where
// its forward rounds x/s and then adds z, so at exact ties with an odd z its gradient mask
// disagrees with its own forward. anybit uses round(x/s) + z in both directions.
TEST(FakeQuantAffineGrad, MatchesTorchLearnableFakeQuantizePerTensor) {
  for (int bits : {2, 4, 8}) {
    at::Tensor x0 = test_input({5, 40}, 0.05, bits);
    const int64_t qmin = 0, qmax = (1 << bits) - 1;
    const double gf = 1.0 / std::sqrt(x0.numel() * qmax);
    at::Tensor xa = x0.clone().requires_grad_(), sa = at::full({1}, 0.05).requires_grad_(),
               za = at::full({1}, 2.0).requires_grad_();
    at::Tensor xb = x0.clone().requires_grad_(), sb = at::full({1}, 0.05).requires_grad_(),
               zb = at::full({1}, 2.0).requires_grad_();
    at::Tensor dy = at::randn(x0.sizes());
    at::Tensor ya = fake_quant_affine(xa, sa, za, -1, 0, qmin, qmax, 0, gf);
    at::Tensor yb = at::_fake_quantize_learnable_per_tensor_affine(xb, sb, zb, qmin, qmax, gf);
    EXPECT_TRUE(bit_equal(ya, yb));
    (ya * dy).sum().backward();
    (yb * dy).sum().backward();
    EXPECT_TRUE(bit_equal(xa.grad(), xb.grad()));
    EXPECT_TRUE(at::allclose(sa.grad(), sb.grad(), 1e-4, 1e-6)) << sa.grad() << sb.grad();
    EXPECT_TRUE(at::allclose(za.grad(), zb.grad(), 1e-4, 1e-6)) << za.grad() << zb.grad();
  }
}

TEST(FakeQuantAffineGrad, MatchesTorchLearnableFakeQuantizePerChannel) {
  at::Tensor x0 = test_input({6, 4, 9}, 0.03, 11);
  at::Tensor s0 = at::linspace(0.01, 0.06, 4), z0 = at::zeros({4});
  at::Tensor xa = x0.clone().requires_grad_(), sa = s0.clone().requires_grad_(), za = z0.clone().requires_grad_();
  at::Tensor xb = x0.clone().requires_grad_(), sb = s0.clone().requires_grad_(), zb = z0.clone().requires_grad_();
  at::Tensor ya = fake_quant_affine(xa, sa, za, 1, 0, -8, 7, 0, 0.5);
  at::Tensor yb = at::_fake_quantize_learnable_per_channel_affine(xb, sb, zb, 1, -8, 7, 0.5);
  EXPECT_TRUE(bit_equal(ya, yb));
  at::Tensor dy = at::randn(x0.sizes());
  (ya * dy).sum().backward();
  (yb * dy).sum().backward();
  EXPECT_TRUE(bit_equal(xa.grad(), xb.grad()));
  EXPECT_TRUE(at::allclose(sa.grad(), sb.grad(), 1e-4, 1e-6)) << sa.grad() << sb.grad();
  EXPECT_TRUE(at::allclose(za.grad(), zb.grad(), 1e-4, 1e-6)) << za.grad() << zb.grad();
}

TEST(FakeQuantAffineGrad, OptimizedBackwardMatchesReferenceOverGranularities) {
  struct Case { std::vector<int64_t> shape; int64_t nparams, axis, group; };
  const std::vector<Case> cases = {{{3, 5, 7}, 1, -1, 0},    {{3, 5, 7}, 5, 1, 0},
                                   {{3, 5, 7}, 3, 0, 0},     {{3, 5, 7}, 7, 2, 0},
                                   {{4, 70000}, 4, 0, 0},    {{8, 32}, 32, -1, 8},
                                   {{1 << 18}, 1, -1, 0}};
  for (const auto& c : cases) {
    at::Tensor x = test_input(c.shape, 0.02, 5);
    at::Tensor g = at::randn(x.sizes());
    at::Tensor s = at::rand({c.nparams}) * 0.03 + 0.01, z = at::full({c.nparams}, 2.0);
    auto fast = fake_quant_affine_backward(g, x, s, z, c.axis, c.group, -16, 15, 0.7, true, true);
    auto ref = fake_quant_affine_backward_reference(g, x, s, z, c.axis, c.group, -16, 15, 0.7);
    EXPECT_TRUE(bit_equal(std::get<0>(fast), std::get<0>(ref)));
    EXPECT_TRUE(at::allclose(std::get<1>(fast), std::get<1>(ref), 1e-3, 1e-3));
    EXPECT_TRUE(at::allclose(std::get<2>(fast), std::get<2>(ref), 1e-3, 1e-3));
  }
}

TEST(FakeQuantAffineGrad, StraightThroughInsideTheRangeAndZeroOutside) {
  at::Tensor x = at::tensor({-10.0f, -4.2f, -0.3f, 0.0f, 2.6f, 3.4f, 3.6f, 9.0f}).requires_grad_();
  at::Tensor y = fake_quant_affine(x, at::ones({1}), at::zeros({1}), -1, 0, -4, 3, 0, 1.0);
  y.sum().backward();
  // round(-4.2) = -4 is inside, round(3.6) = 4 is outside
  at::Tensor want = at::tensor({0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f});
  EXPECT_TRUE(at::equal(x.grad(), want)) << x.grad();
}

// Where the quantizer saturates, x^ = qmax * s is smooth in s and LSQ's gradient is the
// true derivative: check it by central finite differences in double precision.
TEST(FakeQuantAffineGrad, LsqScaleGradientMatchesFiniteDifferencesWhereSaturated) {
  at::Tensor x = at::tensor({5.0f, 7.0f, -6.0f, 9.0f});
  at::Tensor s = at::full({1}, 0.5f).requires_grad_();
  at::Tensor y = fake_quant_affine(x, s, at::zeros({1}), -1, 0, -4, 3, 0, 1.0);
  y.sum().backward();
  const double h = 1e-3;
  auto f = [&](double sv) {
    return fake_quant_affine_forward(x, at::full({1}, sv), at::zeros({1}), -1, 0, -4, 3, 0)
        .to(at::kDouble).sum().item<double>();
  };
  const double fd = (f(0.5 + h) - f(0.5 - h)) / (2 * h);
  EXPECT_NEAR(s.grad().item<double>(), fd, 1e-3);
}

TEST(FakeQuantPact, ClipGradientMatchesFiniteDifferencesAndStraightThroughInside) {
  at::Tensor x = at::tensor({-1.0f, 0.2f, 0.9f, 2.5f, 3.0f}).requires_grad_();
  at::Tensor a = at::full({1}, 2.0f).requires_grad_();
  at::Tensor y = fake_quant_pact(x, a, 4, 0);
  y.sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({0.0f, 1.0f, 1.0f, 0.0f, 0.0f})));
  const double h = 1e-3;
  auto f = [&](double av) {
    // only the clipped elements depend smoothly on alpha: fd over them
    at::Tensor xc = at::tensor({2.5f, 3.0f});
    return fake_quant_pact(xc, at::full({1}, av), 4, 0).to(at::kDouble).sum().item<double>();
  };
  EXPECT_NEAR(a.grad().item<double>(), (f(2.0 + h) - f(2.0 - h)) / (2 * h), 1e-3);
  // values: 16 levels over [0, 2]
  at::Tensor levels = std::get<0>(at::_unique(fake_quant_pact(at::linspace(-1, 3, 1000), a.detach(), 4, 0)));
  EXPECT_EQ(levels.numel(), 16);
}

TEST(FakeQuantBinary, SignOfZeroIsPlusOneAndAlphaScalesPerChannel) {
  at::Tensor x = at::tensor({-0.5f, 0.0f, 0.25f, 1.0f, -2.0f, 0.0f}).view({2, 3});
  at::Tensor alpha = x.abs().mean(1);
  at::Tensor y = fake_quant_binary(x, alpha, 0, 1.0);
  at::Tensor want = at::tensor({-0.25f, 0.25f, 0.25f, 1.0f, -1.0f, 1.0f}).view({2, 3});
  EXPECT_TRUE(at::allclose(y, want)) << y;
}

TEST(FakeQuantBinary, AlphaGradientMatchesFiniteDifferences) {
  at::Tensor x = at::randn({3, 8});
  at::Tensor a = at::full({3}, 0.7f).requires_grad_();
  at::Tensor w = at::randn({3, 8});
  (fake_quant_binary(x, a, 0, 1.0) * w).sum().backward();
  for (int c = 0; c < 3; ++c) {
    const double h = 1e-2;
    auto f = [&](double d) {
      at::Tensor ap = a.detach().clone();
      ap[c] = ap[c].item<double>() + d;
      return (fake_quant_binary(x, ap, 0, 1.0) * w).to(at::kDouble).sum().item<double>();
    };
    EXPECT_NEAR(a.grad()[c].item<double>(), (f(h) - f(-h)) / (2 * h), 1e-3);
  }
}

TEST(FakeQuantTernary, ThresholdSendsSmallValuesToZero) {
  at::Tensor x = at::tensor({-1.0f, -0.3f, 0.0f, 0.29f, 0.31f, 2.0f});
  at::Tensor y = fake_quant_ternary(x, at::full({1}, 0.5f), at::full({1}, 0.3f), -1, 1.0);
  EXPECT_TRUE(at::equal(y, at::tensor({-0.5f, 0.0f, 0.0f, 0.0f, 0.5f, 0.5f}))) << y;
}

// ternary:lsq: the threshold's gradient is the finite difference of the loss over the band
// h = kTernaryThresholdBand * delta (exact for a loss linear in the output), per channel;
// the alpha gradient matches finite differences as for binary.
TEST(FakeQuantTernary, LearnedThresholdAndAlphaGradientsMatchFiniteDifferences) {
  at::manual_seed(3);
  at::Tensor x = at::randn({4, 2000});
  at::Tensor a = at::full({4}, 0.8f).requires_grad_();
  at::Tensor d = at::tensor({0.5f, 0.7f, 0.3f, 1.1f}).requires_grad_();
  at::Tensor w = at::randn({4, 2000});
  (fake_quant_ternary(x, a, d, 0, 1.0) * w).sum().backward();
  auto loss = [&](const at::Tensor& ap, const at::Tensor& dp) {
    return (fake_quant_ternary(x, ap, dp, 0, 1.0) * w).to(at::kDouble).sum().item<double>();
  };
  int nonzero = 0;
  for (int c = 0; c < 4; ++c) {
    const double h = kTernaryThresholdBand * d[c].item<double>();
    at::Tensor up = d.detach().clone(), down = d.detach().clone();
    up[c] = d[c].item<double>() + h / 2;
    down[c] = d[c].item<double>() - h / 2;
    const double fd = (loss(a.detach(), up) - loss(a.detach(), down)) / h;
    EXPECT_NEAR(d.grad()[c].item<double>(), fd, 1e-3 * (1 + std::abs(fd))) << c;
    nonzero += std::abs(fd) > 1e-3;
    at::Tensor ap = a.detach().clone(), am = a.detach().clone();
    ap[c] = a[c].item<double>() + 1e-2;
    am[c] = a[c].item<double>() - 1e-2;
    EXPECT_NEAR(a.grad()[c].item<double>(), (loss(ap, d.detach()) - loss(am, d.detach())) / 2e-2, 1e-2) << c;
  }
  EXPECT_GE(nonzero, 3);  // the check compared real slopes, not zeros
}

// A learned threshold moves where the loss wants it: fitting a ternary output to a target
// made with a larger threshold, gradient descent on delta alone lowers the loss and raises delta.
TEST(FakeQuantTernary, LearnedThresholdDescendsTowardsTheTarget) {
  at::manual_seed(5);
  at::Tensor x = at::randn({20000});
  at::Tensor target = fake_quant_ternary(x, at::full({1}, 1.0f), at::full({1}, 1.0f), -1, 1.0);
  at::Tensor alpha = at::full({1}, 1.0f);
  at::Tensor d = at::full({1}, 0.4f).requires_grad_();
  auto mse = [&]() { return (fake_quant_ternary(x, alpha, d, -1, 1.0) - target).pow(2).mean(); };
  const double before = mse().item<double>();
  for (int i = 0; i < 200; ++i) {
    at::Tensor l = mse();
    d.mutable_grad() = at::Tensor();
    l.backward();
    at::NoGradGuard ng;
    d.sub_(d.grad() * (0.2 / (1 + 0.05 * i)));
  }
  EXPECT_LT(mse().item<double>(), 0.25 * before);
  EXPECT_NEAR(d.item<double>(), 1.0, 0.1);
}

TEST(FakeQuantLog, PowersOfTwoAreExactZeroIsKeptAndRangeIsClamped) {
  // 4 bits: 7 exponents, hi = 0 -> levels 2^-6 .. 2^0
  at::Tensor x = at::tensor({0.0f, 1.0f, -0.5f, 0.25f, 3.0f, -100.0f, 1e-5f, 0.7f, 0.6f});
  at::Tensor y = fake_quant_log(x, at::zeros({1}), 7, -1);
  at::Tensor want = at::tensor({0.0f, 1.0f, -0.5f, 0.25f, 1.0f, -1.0f, 0.015625f, 0.5f, 0.5f});
  // 0.7: log2 = -0.51 -> -1 ; 0.6: log2 = -0.74 -> -1
  EXPECT_TRUE(at::equal(y, want)) << y;
  at::Tensor r = at::randn({1000});
  at::Tensor yl = fake_quant_log(r, at::full({1}, 1.0f), 7, -1);
  EXPECT_LE(std::get<0>(at::_unique(yl)).numel(), 2 * 7);
}

TEST(FakeQuantLog, GradientIsStraightThroughInsideTheExponentRange) {
  at::Tensor x = at::tensor({0.001f, 0.1f, 0.9f, 5.0f}).requires_grad_();
  fake_quant_log(x, at::zeros({1}), 7, -1).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({0.0f, 1.0f, 1.0f, 0.0f})));
}

TEST(Ops, RegisteredWithTheDispatcherUnderTheAnybitNamespace) {
  for (const char* name : {"anybit::fake_quant_affine", "anybit::fake_quant_log",
                           "anybit::fake_quant_binary", "anybit::fake_quant_ternary",
                           "anybit::fake_quant_pact", "anybit::fake_quant_minifloat",
                           "anybit::fake_quant_mx", "anybit::fake_quant_nvfp4", "anybit::fake_quant_lut"}) {
    EXPECT_TRUE(c10::Dispatcher::singleton().findSchema({name, ""}).has_value()) << name;
  }
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("anybit::fake_quant_affine", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                  int64_t, int64_t, int64_t, int64_t, double)>();
  at::Tensor x = at::randn({10});
  EXPECT_TRUE(bit_equal(op.call(x, at::full({1}, 0.1), at::zeros({1}), -1, 0, -8, 7, 0, 1.0),
                        at::fake_quantize_per_tensor_affine(x, 0.1f, 0, -8, 7)));
}

// QDrop's fused quantizer equals where(mask, x, fake_quant_affine(x)) forward and backward,
// with a mask that is p of the elements, differs between streams and does not depend on
// the thread count.
TEST(FakeQuantAffineDrop, EqualsTheSelectOfInputAndQuantizerWithItsMask) {
  const at::Tensor x0 = test_input({4, 8, 9, 11}, 0.05, 7);
  const at::Tensor z = at::zeros({1});
  for (double p : {0.0, 0.3, 1.0}) {
    SCOPED_TRACE(p);
    at::Tensor x = x0.clone().requires_grad_(true), s = at::full({1}, 0.05).requires_grad_(true);
    at::Tensor y = fake_quant_affine_drop(x, s, z, -1, 0, -128, 127, p, 1234, 3, 0, 1.0);
    const at::Tensor m = qdrop_mask(x0.numel(), p, 1234, 3).view(x0.sizes());
    at::Tensor xr = x0.clone().requires_grad_(true), sr = at::full({1}, 0.05).requires_grad_(true);
    at::Tensor yr = at::where(m, xr, fake_quant_affine(xr, sr, z, -1, 0, -128, 127, 0, 1.0));
    EXPECT_TRUE(bit_equal(y, yr));
    const at::Tensor g = at::randn(x0.sizes());
    y.backward(g);
    yr.backward(g);
    EXPECT_TRUE(bit_equal(x.grad(), xr.grad()));
    EXPECT_TRUE(at::allclose(s.grad(), sr.grad(), 1e-5, 1e-6)) << s.grad() << " " << sr.grad();
    EXPECT_EQ(m.sum().item<int64_t>() == 0, p == 0);
    EXPECT_EQ(m.all().item<bool>(), p == 1);
  }
  // the mask holds p of the elements, and another stream or seed draws another one
  const int64_t n = 1 << 20;
  const at::Tensor a = qdrop_mask(n, 0.3, 5, 0), b = qdrop_mask(n, 0.3, 5, 1), c = qdrop_mask(n, 0.3, 6, 0);
  EXPECT_NEAR(a.to(at::kFloat).mean().item<double>(), 0.3, 0.003);
  // independent masks agree on p^2 + (1-p)^2 = 0.58 of the elements
  EXPECT_NEAR(a.eq(b).to(at::kFloat).mean().item<double>(), 0.58, 0.005);
  EXPECT_NEAR(a.eq(c).to(at::kFloat).mean().item<double>(), 0.58, 0.005);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = fake_quant_affine_drop(x0, at::full({1}, 0.05), z, -1, 0, -128, 127, 0.5, 9, 0, 0, 1.0);
  at::set_num_threads(2);
  const at::Tensor two = fake_quant_affine_drop(x0, at::full({1}, 0.05), z, -1, 0, -128, 127, 0.5, 9, 0, 0, 1.0);
  at::set_num_threads(threads);
  EXPECT_TRUE(bit_equal(one, two));
  EXPECT_THROW(fake_quant_affine_drop(x0, at::full({1}, 0.05), z, -1, 0, -128, 127, 1.5, 9, 0, 0, 1.0), Error);
}

// The element functions the CUDA kernels run (quant/fake_quant_elem.h) against the CPU kernels,
// element by element: x^ and dx bit for bit, the LSQ sums to rounding, over per-tensor,
// per-channel and grouped parameters, every deterministic rounding, ties, NaN and infinities.
TEST(FakeQuantElem, ElementFunctionsEqualTheCpuKernels) {
  at::Tensor x = test_input({6, 5, 4, 4}, 0.05, 11);
  float* px = x.data_ptr<float>();
  const float specials[] = {0.0f, -0.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 0.025f, -0.075f};
  for (int i = 0; i < 9; ++i) px[5 * i + 1] = specials[i];
  const at::Tensor g = at::randn({6, 5, 4, 4});
  struct Case {
    at::Tensor scale, zp;
    int64_t axis, group, qmin, qmax;
  };
  const Case cases[] = {{at::full({1}, 0.05f), at::full({1}, 2.4f), -1, 0, -128, 127},
                        {at::rand({5}) * 0.1 + 0.01, at::randint(-3, 4, {5}).to(at::kFloat), 1, 0, -8, 7},
                        {at::rand({6 * 5 * 4}) * 0.2 + 0.01, at::randint(0, 3, {6 * 5 * 4}).to(at::kFloat), 0, 4, 0, 3}};
  for (const Case& c : cases) {
    const ChannelLayout L = channel_layout(x, c.scale.numel(), c.axis, c.group, "test");
    const float* ps = c.scale.data_ptr<float>();
    const float* pz = c.zp.data_ptr<float>();
    auto grid_of = [&](int64_t i) {
      const int64_t ch = (i / L.inner) % L.channels;
      return elem::grid(ps[c.scale.numel() == 1 ? 0 : ch], pz[c.zp.numel() == 1 ? 0 : ch],
                        static_cast<float>(c.qmin), static_cast<float>(c.qmax));
    };
    for (int r = 0; r < 3; ++r) {
      const at::Tensor y = fake_quant_affine_forward(x, c.scale, c.zp, c.axis, c.group, c.qmin, c.qmax, r);
      at::Tensor e = at::empty_like(x);
      for (int64_t i = 0; i < x.numel(); ++i) e.data_ptr<float>()[i] = elem::affine(px[i], grid_of(i), r);
      EXPECT_TRUE(at::equal(y.isnan(), e.isnan())) << "rounding " << r;
      EXPECT_TRUE(at::equal(at::nan_to_num(y), at::nan_to_num(e))) << "rounding " << r;
    }
    const at::Tensor dx =
        std::get<0>(fake_quant_affine_backward(g, x, c.scale, c.zp, c.axis, c.group, c.qmin, c.qmax, 1.0, false, false));
    at::Tensor edx = at::empty_like(x);
    for (int64_t i = 0; i < x.numel(); ++i)
      edx.data_ptr<float>()[i] = elem::affine_grad(px[i], g.data_ptr<float>()[i], grid_of(i)).dx;
    EXPECT_TRUE(at::equal(dx, edx));
  }
  // the LSQ sums, on finite inputs (the CPU sums blocks of floats in double: equal to rounding)
  const at::Tensor xf = at::nan_to_num(x, 0.0, 1e3, -1e3);
  const Case& c = cases[1];
  const auto [dx, ds, dz] = fake_quant_affine_backward(g, xf, c.scale, c.zp, 1, 0, -8, 7, 0.5, true, true);
  std::vector<double> eds(5, 0.0), edz(5, 0.0);
  for (int64_t i = 0; i < xf.numel(); ++i) {
    const int64_t ch = (i / 16) % 5;
    const elem::AffineGrad t = elem::affine_grad(
        xf.data_ptr<float>()[i], g.data_ptr<float>()[i],
        elem::grid(c.scale.data_ptr<float>()[ch], c.zp.data_ptr<float>()[ch], -8.0f, 7.0f));
    eds[ch] += 0.5 * t.ds;
    edz[ch] += 0.5 * t.dz;
  }
  for (int64_t ch = 0; ch < 5; ++ch) {
    EXPECT_NEAR(ds[ch].item<double>(), eds[ch], 1e-4 * (1 + std::fabs(eds[ch])));
    EXPECT_NEAR(dz[ch].item<double>(), edz[ch], 1e-4 * (1 + std::fabs(edz[ch])));
  }
  // and the mask: the element function is the one qdrop_mask draws with
  const elem::DropKey k = elem::drop_key(0.3, 77, 2);
  const at::Tensor m = qdrop_mask(4096, 0.3, 77, 2);
  for (int64_t i = 0; i < 4096; ++i)
    ASSERT_EQ(m.data_ptr<bool>()[i], elem::dropped(static_cast<uint32_t>(i), k.k1, k.k2, k.threshold));
}

}  // namespace
}  // namespace anybit
