// The engine end to end: random models through the fast, stepwise, per-dot-product and
// reference paths give the same integers on any number of threads; narrow accumulators
// overflow where the reference says; MAC plug-ins see every dot product, in order; the
// numbers follow the formulas of docs/design.md. The MAC models and noise: engine_mac_test.cc.
#include "anybit/intsim/engine.h"

#include <gtest/gtest.h>

#include <array>
#include <algorithm>
#include <cmath>
#include <map>

#include "anybit/intsim/kernels.h"
#include "anybit/intsim/engine_test_util.h"

namespace anybit {
namespace intsim {
namespace {

using testing::expect_same_tensors;
using testing::ModelBuilder;
using testing::random_inputs;
using testing::random_model;
using testing::run_all;
using testing::TempDir;
using testing::uniform_int;


class EngineSeed : public ::testing::TestWithParam<int> {};

TEST_P(EngineSeed, FastPathMatchesTheReferencePathTensorByTensor) {
  ModelBuilder b = random_model(static_cast<uint64_t>(GetParam()));
  const auto in = random_inputs(b, 2);
  std::vector<LayerStats> stats;
  const auto fast = run_all(b.model, {}, in, &stats);
  EngineOptions ref;
  ref.path = KernelPath::kReference;
  expect_same_tensors(fast, run_all(b.model, ref, in));
  for (const LayerStats& s : stats) {
    if (s.op == "conv2d" || s.op == "linear") {
      EXPECT_TRUE(s.fast_path) << s.name;
    }
  }
}

TEST_P(EngineSeed, PerDotProductPathWithTheExactMacMatchesTheFastPath) {
  ModelBuilder b = random_model(static_cast<uint64_t>(GetParam()) + 100);
  const auto in = random_inputs(b, 2);
  EngineOptions slow;
  slow.path = KernelPath::kPerDotProduct;
  slow.mac = parse_mac_model("exact");
  std::vector<LayerStats> stats;
  expect_same_tensors(run_all(b.model, {}, in), run_all(b.model, slow, in, &stats));
  for (const LayerStats& s : stats) EXPECT_FALSE(s.fast_path) << s.name;
}

TEST_P(EngineSeed, NarrowAccumulatorsOverflowExactlyWhereTheReferenceSays) {
  ModelBuilder b = random_model(static_cast<uint64_t>(GetParam()) + 200);
  const auto in = random_inputs(b, 1);
  for (Overflow mode : {Overflow::kWrap, Overflow::kSaturate}) {
    EngineOptions narrow;
    narrow.accumulator = {12, mode};
    EngineOptions ref = narrow;
    ref.path = KernelPath::kReference;
    std::vector<LayerStats> s_narrow, s_ref;
    expect_same_tensors(run_all(b.model, narrow, in, &s_narrow), run_all(b.model, ref, in, &s_ref));
    int64_t total = 0;
    for (size_t k = 0; k < s_narrow.size(); ++k) {
      EXPECT_EQ(s_narrow[k].overflows, s_ref[k].overflows) << s_narrow[k].name;
      total += s_narrow[k].overflows;
    }
    EXPECT_GT(total, 0) << "a 12-bit accumulator should overflow somewhere";
  }
}

// Chunks of an odd batch over 1, 2, 3 and 7 threads: the same tensors and the same
// statistics on the fast, stepwise (narrow accumulators) and reference kernels.
TEST_P(EngineSeed, ResultsAndStatisticsDoNotDependOnTheThreadCount) {
  ModelBuilder b = random_model(static_cast<uint64_t>(GetParam()) + 300);
  const auto in = random_inputs(b, 9);
  EngineOptions fast, wrap, saturate, reference;
  wrap.accumulator = {12, Overflow::kWrap};
  saturate.accumulator = {14, Overflow::kSaturate};
  reference.accumulator = {12, Overflow::kWrap};
  reference.path = KernelPath::kReference;
  for (EngineOptions o : {fast, wrap, saturate, reference}) {
    o.threads = 1;
    std::vector<LayerStats> one;
    const auto expected = run_all(b.model, o, in, &one);
    for (int threads : {2, 3, 7}) {
      o.threads = threads;
      std::vector<LayerStats> many;
      expect_same_tensors(expected, run_all(b.model, o, in, &many));
      ASSERT_EQ(many.size(), one.size());
      for (size_t k = 0; k < one.size(); ++k) {
        EXPECT_EQ(many[k].dot_products, one[k].dot_products) << one[k].name << ", " << threads << " threads";
        EXPECT_EQ(many[k].overflows, one[k].overflows) << one[k].name << ", " << threads << " threads";
        EXPECT_EQ(many[k].fast_path, one[k].fast_path) << one[k].name;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, EngineSeed, ::testing::Range(0, 25));

// One linear layer: y = clamp(z + M * (sum (x - zx)(w - zw) + b)).
Model one_linear(const std::vector<int32_t>& w, int64_t in_features, int32_t bias, QuantParams xq, QuantParams yq,
                 double m, DType wdtype = DType::kInt8, int32_t wqmin = -128, int32_t wqmax = 127) {
  Model model;
  model.inputs.push_back({"x", {in_features}, xq});
  Op op;
  op.kind = OpKind::kLinear;
  op.name = "fc";
  op.inputs = {"x"};
  op.output = "y";
  op.out_channels = static_cast<int64_t>(w.size()) / in_features;
  op.weight = {"", wdtype, {op.out_channels, in_features}, w};
  op.weight_qmin = wqmin;
  op.weight_qmax = wqmax;
  op.weight_scale = {1.0};
  op.weight_zero_point = {0};
  op.bias = {"", DType::kInt32, {op.out_channels}, std::vector<int32_t>(op.out_channels, bias)};
  op.multiplier = {quantize_multiplier(m)};
  op.out = yq;
  model.ops.push_back(op);
  model.outputs.push_back({"y", {}, {}});
  return model;
}

QuantParams qp(double scale, int32_t z, int32_t lo, int32_t hi) {
  QuantParams q;
  q.scale = scale, q.zero_point = z, q.qmin = lo, q.qmax = hi;
  return q;
}

// The engine's options as the CLI and Python spell them, parsed in one place.
TEST(Engine, EngineSpecParsesOrRefusesWithOneMessage) {
  EngineSpec spec;
  spec.acc_bits = 16;
  spec.overflow = "saturate";
  spec.mac = "gauss:sigma=2,seed=1";
  spec.threads = 2;
  const EngineOptions o = engine_options(spec);
  EXPECT_EQ(o.accumulator.bits, 16);
  EXPECT_EQ(o.accumulator.overflow, Overflow::kSaturate);
  ASSERT_TRUE(o.mac);
  EXPECT_EQ(o.threads, 2);
  EXPECT_EQ(o.path, KernelPath::kAuto);
  const EngineOptions exact = engine_options(EngineSpec{});
  EXPECT_EQ(exact.mac ? exact.mac->describe() : "exact", "exact");
  EXPECT_EQ(exact.accumulator.bits, 32);
  EXPECT_EQ(exact.accumulator.overflow, Overflow::kWrap);
  auto refused = [](EngineSpec s, const std::string& fragment) {
    try {
      engine_options(s);
      ADD_FAILURE() << "accepted; expected an error with '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  EngineSpec bad;
  bad.overflow = "clip";
  refused(bad, "wrap or saturate");
  bad = EngineSpec{};
  bad.threads = -1;
  refused(bad, "threads");
  bad = EngineSpec{};
  bad.acc_bits = 40;
  refused(bad, "accumulator");
  bad = EngineSpec{};
  bad.mac = "gauss:x";
  refused(bad, "gauss");
  bad = EngineSpec{};
  bad.reference_kernels = bad.per_dot_product = true;
  refused(bad, "two kernel paths");
}

TEST(Engine, HandComputedLinearFollowsTheIntegerFormula) {
  // acc = (10-2)*3 + (20-2)*(-1) + (2-2)*5 + 6 = 24 - 18 + 0 + 6 = 12;  y = 5 + 12 * 0.25 = 8
  const Model m = one_linear({3, -1, 5}, 3, 6, qp(0.1, 2, 0, 255), qp(0.2, 5, -128, 127), 0.25);
  Engine e(m);
  const auto y = e.run({Tensor::from_int32({1, 3}, {10, 20, 2})});
  EXPECT_EQ(y[0].data, std::vector<int32_t>{8});
  EXPECT_EQ(y[0].shape, (std::vector<int64_t>{1, 1}));
  EXPECT_TRUE(e.stats()[0].fast_path);
  EXPECT_EQ(e.stats()[0].dot_products, 1);
}

// 127 * 127 * 3 = 48387 does not fit a 16-bit accumulator.
TEST(Engine, PlantedOverflowWrapsOrSaturatesAsDeclaredAndIsCounted) {
  const Model m = one_linear({127, 127, 127}, 3, 0, qp(1, 0, -128, 127), qp(1, 0, -(1 << 30), 1 << 30), 1.0);
  const auto in = std::vector<Tensor>{Tensor::from_int8({1, 3}, {127, 127, 127})};
  Engine wide(m);
  EXPECT_EQ(wide.run(in)[0].data, std::vector<int32_t>{48387});
  EXPECT_EQ(wide.stats()[0].overflows, 0);
  Engine wrap(m, {{16, Overflow::kWrap}, nullptr, KernelPath::kAuto});
  EXPECT_EQ(wrap.run(in)[0].data, std::vector<int32_t>{48387 - 65536});
  EXPECT_EQ(wrap.stats()[0].overflows, 1);
  EXPECT_FALSE(wrap.stats()[0].fast_path);
  Engine sat(m, {{16, Overflow::kSaturate}, nullptr, KernelPath::kAuto});
  EXPECT_EQ(sat.run(in)[0].data, std::vector<int32_t>{32767});
  EXPECT_EQ(sat.run(in)[0].data, std::vector<int32_t>{32767});
  EXPECT_EQ(sat.stats()[0].overflows, 2);  // summed over runs
  sat.reset_stats();
  EXPECT_EQ(sat.stats()[0].overflows, 0);
}

TEST(Engine, ThirtyTwoBitLayerThatCouldOverflowLeavesTheFastPathAndStaysExact) {
  // int32 weights up to 2^20 on 16-bit activations: the bound exceeds int32, the data do not.
  std::mt19937_64 rng(5);
  std::vector<int32_t> w(4 * 64);
  for (auto& v : w) v = static_cast<int32_t>(uniform_int(rng, -(1 << 20), 1 << 20));
  const Model m = one_linear(w, 64, 0, qp(1, 0, -32768, 32767), qp(1, 0, -(1 << 30), 1 << 30), 1e-6,
                             DType::kInt32, -(1 << 20), 1 << 20);
  std::vector<int32_t> x(64);
  for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, -3, 3));
  const std::vector<Tensor> in = {Tensor::from_int32({1, 64}, x)};
  Engine e(m);
  EXPECT_FALSE(e.stats()[0].fast_path);
  EngineOptions ref;
  ref.path = KernelPath::kReference;
  EXPECT_EQ(e.run(in)[0].data, Engine(m, ref).run(in)[0].data);
  EXPECT_EQ(e.stats()[0].overflows, 0);
}

TEST(Engine, SixteenBitActivationsRunTheFastKernelWithInt32Operands) {
  std::mt19937_64 rng(6);
  std::vector<int32_t> w(5 * 7);
  for (auto& v : w) v = static_cast<int32_t>(uniform_int(rng, -128, 127));
  const Model m = one_linear(w, 7, 1000, qp(1, -30000, -32768, 32767), qp(1, 0, -(1 << 30), 1 << 30), 0.01);
  std::vector<int32_t> x(3 * 7);
  for (auto& v : x) v = static_cast<int32_t>(uniform_int(rng, -32768, 32767));
  const std::vector<Tensor> in = {Tensor::from_int32({3, 7}, x)};
  Engine e(m);
  EXPECT_TRUE(e.stats()[0].fast_path);
  EngineOptions ref;
  ref.path = KernelPath::kReference;
  EXPECT_EQ(e.run(in)[0].data, Engine(m, ref).run(in)[0].data);
}

TEST(Engine, ConvOutputIsTheFloatConvolutionToWithinOneStep) {
  // Dequantize inputs and weights, convolve in double, quantize with the output's
  // parameters: the integer result may differ only by the rounding of M.
  ModelBuilder b(21);
  const std::string x = b.input("x", {3, 7, 7}, testing::random_quant(b.rng));
  const std::string y = b.conv2d(x, 4, 3, 2, 1, 1, 1, false, true);
  b.output(y);
  const auto in = random_inputs(b, 1);
  Engine e(b.model);
  const Tensor out = e.run(in)[0];
  const Op& op = e.model().ops[0];
  const QuantParams xq = e.model().inputs[0].q;
  Conv2dGeometry g;
  g.in_channels = 3, g.in_h = g.in_w = 7, g.out_channels = 4, g.kernel_h = g.kernel_w = 3;
  g.stride_h = g.stride_w = 2, g.pad_h = g.pad_w = 1;
  std::vector<int64_t> acc(static_cast<size_t>(out.numel()));
  conv2d_int_reference(g, in[0].data.data(), xq.zero_point, op.weight.data.data(), op.weight_zero_point,
                       op.bias.data.data(), {}, acc.data(), nullptr);
  const int64_t P = g.out_h() * g.out_w();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const int64_t o = i / P;
    const double real = static_cast<double>(acc[i]) * xq.scale * op.weight_scale[o];  // bias scale s_x * s_w
    const double q = std::min<double>(op.out.qmax, std::max<double>(op.out.qmin, std::round(real / op.out.scale) + op.out.zero_point));
    ASSERT_LE(std::fabs(out.data[i] - q), 1.0) << i;
  }
}

// Each output is the real average of its window (of PyTorch's adaptive_avg_pool2d),
// quantized: y = clamp(z_y + round(s_x * mean(q - z_x) / s_y)), computed here in double, with
// windows of different sizes side by side. Only the rounding of each position's M can
// differ, on a value within 2^-31 of a tie.
TEST(Engine, AdaptiveAveragePoolIsTheRealAverageOfEachWindowQuantized) {
  const std::vector<std::array<int64_t, 4>> shapes = {
      {1, 1, 6, 6}, {13, 13, 6, 6}, {8, 8, 6, 6}, {7, 7, 3, 3}, {5, 5, 5, 5}, {11, 5, 4, 3}, {2, 9, 3, 5}};
  int64_t values = 0, equal = 0;
  for (size_t k = 0; k < shapes.size(); ++k) {
    const auto [ih, iw, oh, ow] = shapes[k];
    ModelBuilder b(40 + k);
    const std::string x = b.input("x", {3, ih, iw}, testing::random_quant(b.rng));
    b.output(b.adaptive_avgpool(x, oh, ow));
    const auto in = random_inputs(b, 2);
    Engine e(b.model);
    const Tensor out = e.run(in)[0];
    ASSERT_EQ(out.shape, (std::vector<int64_t>{2, 3, oh, ow}));
    const QuantParams xq = b.model.inputs[0].q, yq = e.model().ops[0].out;
    for (int64_t nc = 0; nc < 2 * 3; ++nc) {
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int64_t y0 = oy * ih / oh, y1 = ((oy + 1) * ih + oh - 1) / oh;
          const int64_t x0 = ox * iw / ow, x1 = ((ox + 1) * iw + ow - 1) / ow;
          double real = 0;
          for (int64_t iy = y0; iy < y1; ++iy)
            for (int64_t ix = x0; ix < x1; ++ix) real += (in[0].data[(nc * ih + iy) * iw + ix] - xq.zero_point) * xq.scale;
          real /= static_cast<double>((y1 - y0) * (x1 - x0));
          const double q = std::min<double>(yq.qmax, std::max<double>(yq.qmin, std::nearbyint(real / yq.scale) + yq.zero_point));
          const int32_t got = out.data[(nc * oh + oy) * ow + ox];
          ASSERT_LE(std::fabs(got - q), 1.0) << ih << "x" << iw << " -> " << oh << "x" << ow;
          equal += got == q;
          ++values;
        }
      }
    }
  }
  EXPECT_GE(equal, values - 2) << equal << " of " << values;
}


TEST(Engine, OneEngineRunsBatchesOfAnySizeInTurn) {
  ModelBuilder b = random_model(38);
  EngineOptions o;
  o.accumulator = {13, Overflow::kSaturate};
  o.threads = 3;
  Engine e(b.model, o);
  EngineOptions ref = o;
  ref.path = KernelPath::kReference;
  ref.threads = 1;
  std::vector<int64_t> overflows(b.model.ops.size(), 0);
  for (int64_t batch : {5, 1, 11, 2}) {
    const auto in = random_inputs(b, batch);
    std::map<std::string, Tensor> all;
    e.run(in, &all);
    std::vector<LayerStats> s;
    expect_same_tensors(all, run_all(b.model, ref, in, &s));
    for (size_t k = 0; k < s.size(); ++k) overflows[k] += s[k].overflows;
    // Without the tensor map, intermediate tensors hand their storage on; the outputs agree.
    const std::vector<Tensor> outputs = e.run(in);
    for (size_t j = 0; j < outputs.size(); ++j) EXPECT_EQ(outputs[j].data, all.at(b.model.outputs[j].name).data);
  }
  for (size_t k = 0; k < overflows.size(); ++k) EXPECT_EQ(e.stats()[k].overflows, 2 * overflows[k]) << k;
}

TEST(Engine, SavedAndReloadedModelRunsBitIdentically) {
  ModelBuilder b = random_model(34);
  TempDir dir("engine_roundtrip");
  save_model(b.model, dir.path());
  const auto in = random_inputs(b, 2);
  expect_same_tensors(run_all(b.model, {}, in), run_all(load_model(dir.path()), {}, in));
}

TEST(Engine, RunRejectsWrongCountsShapesAndOutOfRangeValues) {
  const Model m = one_linear({1, 2, 3}, 3, 0, qp(1, 0, 0, 15), qp(1, 0, -128, 127), 1.0);
  Engine e(m);
  auto error = [&](const std::vector<Tensor>& in) -> std::string {
    try {
      e.run(in);
    } catch (const Error& err) {
      return err.what();
    }
    return "(no error)";
  };
  EXPECT_NE(error({}).find("the model takes 1 inputs, got 0"), std::string::npos);
  EXPECT_NE(error({Tensor::from_int32({1, 4}, {0, 0, 0, 0})}).find("input 'x': expected shape [N,3], got [1,4]"),
            std::string::npos)
      << error({Tensor::from_int32({1, 4}, {0, 0, 0, 0})});
  EXPECT_NE(error({Tensor::from_int32({1, 3}, {0, 0})}).find("2 values for shape [1,3]"), std::string::npos);
  EXPECT_NE(error({Tensor::from_int32({1, 3}, {0, 16, 0})}).find("value 16 at index 1 is outside [qmin, qmax] = [0, 15]"),
            std::string::npos);
  EXPECT_EQ(error({Tensor::from_int32({2, 3}, {0, 1, 2, 3, 4, 5})}), "(no error)");
}

TEST(Engine, RejectsAnInvalidModelAnUnsupportedAccumulatorWidthAndANegativeThreadCount) {
  Model m = one_linear({1, 2, 3}, 3, 0, qp(1, 0, 0, 15), qp(1, 0, -128, 127), 1.0);
  EXPECT_THROW(Engine(m, {{7, Overflow::kWrap}, nullptr, KernelPath::kAuto}), Error);
  EXPECT_THROW(Engine(m, {{33, Overflow::kWrap}, nullptr, KernelPath::kAuto}), Error);
  EXPECT_THROW(Engine(m, {{32, Overflow::kWrap}, nullptr, KernelPath::kAuto, -1}), Error);
  m.ops[0].inputs = {"nope"};
  EXPECT_THROW(Engine{m}, Error);
}

TEST(Engine, ReluClampAndConcatWorkInTheIntegerDomain) {
  Model m;
  m.inputs.push_back({"a", {2}, qp(0.5, 3, 0, 15)});
  m.inputs.push_back({"b", {1}, qp(0.25, 0, -8, 7)});
  Op relu;
  relu.kind = OpKind::kRelu, relu.name = "relu", relu.inputs = {"a"}, relu.output = "r";
  Op clamp;
  clamp.kind = OpKind::kClamp, clamp.name = "clamp", clamp.inputs = {"r"}, clamp.output = "c";
  clamp.out.qmin = 0, clamp.out.qmax = 10;
  Op cat;
  cat.kind = OpKind::kConcat, cat.name = "cat", cat.inputs = {"c", "b"}, cat.output = "y";
  cat.out = qp(0.5, 0, -128, 127);
  cat.input_multipliers = {quantize_multiplier(1.0), quantize_multiplier(0.5)};
  m.ops = {relu, clamp, cat};
  m.outputs.push_back({"y", {}, {}});
  Engine e(m);
  std::map<std::string, Tensor> all;
  const auto y = e.run({Tensor::from_int32({2, 2}, {1, 14, 9, 2}), Tensor::from_int32({2, 1}, {-5, 6})}, &all);
  EXPECT_EQ(all.at("r").data, (std::vector<int32_t>{3, 14, 9, 3}));  // max(q, z = 3)
  EXPECT_EQ(all.at("c").data, (std::vector<int32_t>{3, 10, 9, 3}));
  // concat: (q - z) * M + z_out. For b, M = 0.5 is m0 = 2^30 with no shift, so -5 * 0.5 = -2.5
  // is rounded by SaturatingRoundingDoublingHighMul alone: ties towards +infinity, -2.
  EXPECT_EQ(y[0].data, (std::vector<int32_t>{0, 7, -2, 6, 0, 3}));
  EXPECT_EQ(y[0].shape, (std::vector<int64_t>{2, 3}));
}

TEST(Engine, QuantizeAndDequantizeTensorFollowTheDesignFormula) {
  const QuantParams q = qp(0.1, 5, 0, 255);
  const std::vector<float> x = {0.0f, 0.2f, 0.36f, -1.0f, 100.0f};
  const Tensor t = quantize_tensor(x.data(), {1, 5}, q);
  EXPECT_EQ(t.data, (std::vector<int32_t>{5, 7, 9, 0, 255}));
  const std::vector<float> back = dequantize_tensor(t, q);
  EXPECT_FLOAT_EQ(back[0], 0.0f);
  EXPECT_FLOAT_EQ(back[4], 25.0f);
}

TEST(Engine, StatsTableListsEveryAccumulatingLayer) {
  ModelBuilder b = random_model(35);
  Engine e(b.model, {{16, Overflow::kSaturate}, nullptr, KernelPath::kAuto});
  e.run(random_inputs(b, 1));
  const std::string table = format_stats(e.stats());
  for (const Op& op : b.model.ops) {
    const bool listed = table.find(op.name) != std::string::npos;
    const bool accumulates = op.kind == OpKind::kConv2d || op.kind == OpKind::kLinear ||
                             op.kind == OpKind::kAvgPool2d || op.kind == OpKind::kGlobalAvgPool ||
                             op.kind == OpKind::kAdaptiveAvgPool2d;
    EXPECT_EQ(listed, accumulates) << op.name << "\n" << table;
  }
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
