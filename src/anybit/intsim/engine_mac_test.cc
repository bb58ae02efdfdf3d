// The engine with MAC models: the sum-perturbing noise models (gauss, adc) on the fast path
// give the per-dot-product numbers at any thread count and batch, are reproducible under a
// seed and report their error; plug-ins see every dot product, in the documented order.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "anybit/intsim/engine.h"
#include "anybit/intsim/engine_test_util.h"
#include "anybit/intsim/mac.h"

namespace anybit {
namespace intsim {
namespace {

using testing::expect_same_tensors;
using testing::ModelBuilder;
using testing::random_inputs;
using testing::random_model;
using testing::run_all;

TEST(Engine, GaussWithSigmaZeroMatchesExactAndReportsZeroError) {
  ModelBuilder b = random_model(31);
  const auto in = random_inputs(b, 1);
  EngineOptions g;
  g.mac = parse_mac_model("gauss:sigma=0,seed=4");
  std::vector<LayerStats> stats;
  expect_same_tensors(run_all(b.model, {}, in), run_all(b.model, g, in, &stats));
  for (const LayerStats& s : stats) {
    EXPECT_EQ(s.sum_abs_error, 0.0) << s.name;
    if (s.op == "conv2d" || s.op == "linear") EXPECT_TRUE(s.fast_path) << s.name;  // sum-perturbing
  }
}

TEST(Engine, GaussianMacIsReproducibleUnderASeedAndReportsItsError) {
  ModelBuilder b = random_model(32);
  const auto in = random_inputs(b, 2);
  auto noisy = [&](const std::string& spec, std::vector<LayerStats>* stats) {
    EngineOptions o;
    o.mac = parse_mac_model(spec);
    return run_all(b.model, o, in, stats);
  };
  std::vector<LayerStats> stats;
  const auto a = noisy("gauss:sigma=300,seed=1", &stats);
  expect_same_tensors(a, noisy("gauss:sigma=300,seed=1", nullptr));
  const auto exact = run_all(b.model, {}, in);
  EXPECT_NE(a.at(b.model.outputs[0].name).data, exact.at(b.model.outputs[0].name).data);
  EXPECT_NE(a.at(b.model.outputs[0].name).data, noisy("gauss:sigma=300,seed=2", nullptr).at(b.model.outputs[0].name).data);
  for (const LayerStats& s : stats) {
    if (s.op != "conv2d" && s.op != "linear") continue;
    EXPECT_GT(s.dot_products, 0);
    if (s.dot_products < 100) continue;  // too few samples for the statistics below
    EXPECT_NEAR(s.mean_abs_error(), 300 * std::sqrt(2 / std::acos(-1.0)), 60) << s.name;  // E|N(0, 300^2)|
    EXPECT_GT(s.max_abs_error, 300);
  }
}

class CountingMac : public MacModel {
 public:
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override {
    ++calls[std::string(ctx.layer)];
    last_op = std::string(ctx.op);
    return dot_exact(x, w, n, *ctx.acc);
  }
  std::string describe() const override { return "counting"; }
  std::map<std::string, int64_t> calls;
  std::string last_op;
};

// Records where every dot product was asked for.
class OrderMac : public MacModel {
 public:
  struct Call {
    std::string layer;
    int64_t batch, channel, y, x;
  };
  int64_t dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) override {
    calls.push_back({std::string(ctx.layer), ctx.batch, ctx.channel, ctx.y, ctx.x});
    return dot_exact(x, w, n, *ctx.acc);
  }
  std::string describe() const override { return "order"; }
  std::vector<Call> calls;
};

TEST(Engine, MacPluginIsCalledInTheDocumentedOrderWhateverTheThreadCount) {
  ModelBuilder b = random_model(36);
  const auto in = random_inputs(b, 3);
  auto order = std::make_shared<OrderMac>();
  EngineOptions o;
  o.mac = order;
  o.threads = 4;
  Engine e(b.model, o);
  std::map<std::string, Tensor> all;
  e.run(in, &all);
  // Layer after layer in model order; within a layer image, output channel, row, column.
  size_t i = 0;
  for (const Op& op : e.model().ops) {
    if (op.kind != OpKind::kConv2d && op.kind != OpKind::kLinear) continue;
    const std::vector<int64_t>& shape = all.at(op.output).shape;  // [N, O] or [N, O, H, W]
    const int64_t H = shape.size() == 4 ? shape[2] : 1, W = shape.size() == 4 ? shape[3] : 1;
    for (int64_t n = 0; n < shape[0]; ++n)
      for (int64_t c = 0; c < shape[1]; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x, ++i) {
            ASSERT_LT(i, order->calls.size());
            const OrderMac::Call& call = order->calls[i];
            ASSERT_EQ(call.layer, op.name);
            ASSERT_EQ(call.batch, n);
            ASSERT_EQ(call.channel, c);
            ASSERT_EQ(call.y, y);
            ASSERT_EQ(call.x, x);
          }
  }
  EXPECT_EQ(i, order->calls.size());
}

TEST(Engine, SeededNoisyMacGivesTheSameRunOnAnyThreadCount) {
  ModelBuilder b = random_model(37);
  const auto in = random_inputs(b, 5);
  auto noisy = [&](int threads) {
    EngineOptions o;
    o.mac = parse_mac_model("bitflip:rate=0.01,seed=9");
    o.threads = threads;
    return run_all(b.model, o, in);
  };
  expect_same_tensors(noisy(1), noisy(4));
}

// The sum-perturbing models run on the fast kernels and give the numbers of the
// per-dot-product path (MacModel::dot), with the same statistics, at any thread count and
// batch size: their draws are keyed by image and element, not by order. gauss without rel
// takes the additive path at 32 bits (its noise added inside the convolution kernel),
// bitflip at rate 0.001 the sparse one (the exact run, then the few flipped elements redone);
// at 14 bits, and bitflip at rate 0.02, the steps.
TEST(Engine, SumPerturbingModelsGiveThePerDotProductNumbersAtAnyThreadCountAndBatch) {
  for (const std::string spec : {"gauss:sigma=40,seed=3", "gauss:rel=0.05,seed=1", "gauss:fs=0.002,sigma=3",
                                 "adc:bits=5,fs=0.05", "adc:bits=6,range=300", "bitflip:rate=0.02,seed=2",
                                 "bitflip:rate=0.003,seed=5",
                                 "wnoise:rel=0.2,seed=6"}) {
    for (AccumulatorSpec acc : {AccumulatorSpec{32, Overflow::kWrap}, AccumulatorSpec{14, Overflow::kSaturate}}) {
      SCOPED_TRACE(spec + " acc " + std::to_string(acc.bits));
      ModelBuilder b = random_model(41);
      const auto in = random_inputs(b, 5);
      EngineOptions fast;
      fast.mac = parse_mac_model(spec);
      fast.accumulator = acc;
      fast.threads = 3;
      EngineOptions slow = fast;
      slow.path = KernelPath::kPerDotProduct;
      slow.threads = 1;
      std::vector<LayerStats> s_fast, s_slow;
      const auto a = run_all(b.model, fast, in, &s_fast);
      expect_same_tensors(a, run_all(b.model, slow, in, &s_slow));
      ASSERT_EQ(s_fast.size(), s_slow.size());
      bool perturbed = false;
      for (size_t k = 0; k < s_fast.size(); ++k) {
        if (s_fast[k].op != "conv2d" && s_fast[k].op != "linear") continue;
        EXPECT_EQ(s_fast[k].overflows, s_slow[k].overflows) << s_fast[k].name;
        EXPECT_EQ(s_fast[k].sum_abs_error, s_slow[k].sum_abs_error) << s_fast[k].name;
        EXPECT_EQ(s_fast[k].max_abs_error, s_slow[k].max_abs_error) << s_fast[k].name;
        EXPECT_EQ(s_fast[k].clipped, s_slow[k].clipped) << s_fast[k].name;
        perturbed = perturbed || s_fast[k].sum_abs_error > 0;
      }
      if (spec.rfind("wnoise", 0) != 0) EXPECT_TRUE(perturbed);  // wnoise: exact sums of other weights
      // the noise reaches the output (a rare bit flip may not: its sums' errors above show it)
      if (spec.rfind("bitflip:rate=0.003", 0) != 0)
        EXPECT_NE(a.at(b.model.outputs[0].name).data, run_all(b.model, {acc, nullptr}, in).at(b.model.outputs[0].name).data);
      // the same images in two runs of one engine: the same numbers, image by image
      Engine e(b.model, fast);
      std::vector<Tensor> first(in.size()), second(in.size());
      for (size_t i = 0; i < in.size(); ++i) {
        const int64_t per = in[i].numel() / 5;
        first[i].shape = second[i].shape = in[i].shape;
        first[i].shape[0] = 2, second[i].shape[0] = 3;
        first[i].data.assign(in[i].data.begin(), in[i].data.begin() + 2 * per);
        second[i].data.assign(in[i].data.begin() + 2 * per, in[i].data.end());
      }
      const std::vector<Tensor> y1 = e.run(first), y2 = e.run(second);
      EXPECT_EQ(e.next_image(), 5);
      for (size_t j = 0; j < y1.size(); ++j) {
        std::vector<int32_t> joined = y1[j].data;
        joined.insert(joined.end(), y2[j].data.begin(), y2[j].data.end());
        EXPECT_EQ(joined, a.at(b.model.outputs[j].name).data) << j;
      }
    }
  }
}

TEST(Engine, AdcRangeAutoIsCalibratedPerLayerAndNeedsCalibrationData) {
  ModelBuilder b = random_model(43);
  const auto calib = random_inputs(b, 6);
  const auto in = random_inputs(b, 4);
  EngineOptions o;
  o.mac = parse_mac_model("adc:bits=6,range=auto,pct=99");
  o.threads = 2;
  Engine e(b.model, o);
  try {
    e.run(in);
    FAIL() << "ran without calibration";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("needs calibration data"), std::string::npos) << err.what();
  }
  e.calibrate(calib);
  EXPECT_EQ(e.next_image(), 0);  // calibration images are not counted
  for (const MacLayer& l : e.mac_layers()) EXPECT_GE(l.calibrated, 0) << l.name;
  // the same on one thread and on the per-dot-product path
  EngineOptions one = o;
  one.threads = 1;
  one.path = KernelPath::kPerDotProduct;
  Engine e1(b.model, one);
  e1.calibrate(calib);
  for (size_t i = 0; i < e.mac_layers().size(); ++i)
    EXPECT_EQ(e.mac_layers()[i].calibrated, e1.mac_layers()[i].calibrated) << e.mac_layers()[i].name;
  std::map<std::string, Tensor> a, b1;
  e.run(in, &a);
  e1.run(in, &b1);
  expect_same_tensors(a, b1);
  // a layer's calibrated range against its |exact| sums computed here from the reference
  const MacLayer& first = e.mac_layers()[0];
  const Op* op = nullptr;
  for (const Op& cand : b.model.ops)
    if (cand.name == first.name) op = &cand;
  ASSERT_NE(op, nullptr);
  std::map<std::string, Tensor> ref_all;
  EngineOptions ref;
  ref.path = KernelPath::kReference;
  Engine r(b.model, ref);
  r.run(calib, &ref_all);
  const Tensor& x = ref_all.at(op->inputs[0]);
  const TensorInfo xi = validate_model(b.model, "m").at(op->inputs[0]);
  Conv2dGeometry g;
  g.batch = x.shape[0], g.in_channels = x.shape[1], g.in_h = x.shape[2], g.in_w = x.shape[3];
  g.out_channels = op->out_channels, g.kernel_h = op->kernel[0], g.kernel_w = op->kernel[1];
  g.stride_h = op->stride[0], g.stride_w = op->stride[1], g.pad_h = op->padding[0], g.pad_w = op->padding[1];
  g.dilation_h = op->dilation[0], g.dilation_w = op->dilation[1], g.groups = op->groups;
  std::vector<int64_t> sums(static_cast<size_t>(g.batch * g.out_channels * g.out_h() * g.out_w()));
  conv2d_int_reference(g, x.data.data(), xi.q.zero_point, op->weight.data.data(), op->weight_zero_point, nullptr,
                       {32, Overflow::kWrap}, sums.data(), nullptr);
  for (int64_t& v : sums) v = std::llabs(v);
  std::sort(sums.begin(), sums.end());
  const size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(sums.size())));
  EXPECT_EQ(first.calibrated, static_cast<double>(sums[rank - 1]));
}

TEST(Engine, MacPluginSeesEveryDotProductWithItsLayerName) {
  ModelBuilder b = random_model(33);
  const auto in = random_inputs(b, 3);
  auto counting = std::make_shared<CountingMac>();
  EngineOptions o;
  o.mac = counting;
  Engine e(b.model, o);
  std::map<std::string, Tensor> all;
  e.run(in, &all);
  expect_same_tensors(all, run_all(b.model, {}, in));
  for (const Op& op : e.model().ops) {
    if (op.kind != OpKind::kConv2d && op.kind != OpKind::kLinear) continue;
    EXPECT_EQ(counting->calls[op.name], all.at(op.output).numel()) << op.name;
  }
  EXPECT_EQ(counting->last_op, "linear");
}

}  // namespace
}  // namespace intsim
}  // namespace anybit
