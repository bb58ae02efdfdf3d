// The fused oneDNN evaluator against its plain twin, the TorchScript interpreter running
// the same frozen graph: small models written here exercise each lowered op and each
// fallback path; the shipped model checks a whole quantized network.
#include "anybit/runtime/fused_eval.h"

#include <gtest/gtest.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/script.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "anybit/api/quantize.h"

namespace anybit {
namespace {

// torch.X is aten::X (as in the native resolver), anybit.X is anybit's op X
struct OpsResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "anybit") return std::make_shared<torch::jit::BuiltinModule>("anybit");
    return nullptr;
  }
  c10::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override { return nullptr; }
};

torch::jit::Module frozen(const std::string& forward, const std::vector<std::pair<std::string, at::Tensor>>& buffers) {
  torch::jit::Module m("Net");
  for (const auto& [name, t] : buffers) m.register_buffer(name, t);
  m.define(forward, std::make_shared<OpsResolver>());
  m.eval();
  return torch::jit::freeze(m);
}

struct Match {
  double equal = 0;     // share of output elements bit-identical to the interpreter's
  double max_diff = 0;  // largest absolute difference
};
Match compare(torch::jit::Module& m, FusedModel& f, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  const at::Tensor want = m.forward({x}).toTensor();
  const at::Tensor got = f.forward(x);
  EXPECT_EQ(got.sizes(), want.sizes());
  if (got.sizes() != want.sizes()) return {};
  return {(got == want).to(at::kDouble).mean().item<double>(), (got - want).abs().max().item<double>()};
}

std::unique_ptr<FusedModel> compile_or_fail(torch::jit::Module& m) {
  std::string why;
  auto f = FusedModel::compile(m, &why);
  EXPECT_TRUE(f) << why;
  return f;
}

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn(shape);
}

// Compiles m and checks that its forward on x equals the interpreter's to float rounding,
// twice (the second forward runs on the plan's buffers as they are after the first).
std::unique_ptr<FusedModel> compiled_matching(torch::jit::Module& m, const at::Tensor& x) {
  auto f = compile_or_fail(m);
  if (!f) return f;
  torch::NoGradGuard no_grad;
  const at::Tensor want = m.forward({x}).toTensor();
  EXPECT_TRUE(at::allclose(f->forward(x), want, 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(f->forward(x), want, 1e-4, 1e-4));
  return f;
}

// A conv block as a quantized model has it: conv -> fq -> BatchNorm -> fq -> ReLU -> fq,
// per-tensor and per-channel quantizers, a residual add, global pooling, a linear layer.
const char* kQuantizedBlock = R"(
def forward(self, x):
    y = torch.conv2d(x, self.w1, self.b1, [1, 1], [1, 1], [1, 1], 1)
    y = anybit.fake_quant_affine(y, self.s1, self.z1, -1, 0, 0, 15, 0, 1.0)
    y = torch.batch_norm(y, self.g, self.beta, self.mean, self.var, False, 0.1, 1e-5, False)
    y = anybit.fake_quant_affine(y, self.sc, self.zc, 1, 0, -8, 7, 0, 1.0)
    y = torch.relu(y)
    y = anybit.fake_quant_affine(y, self.s2, self.z2, -1, 0, 0, 255, 0, 1.0)
    r = torch.conv2d(y, self.w2, None, [1, 1], [1, 1], [1, 1], 1)
    r = anybit.fake_quant_affine(r, self.s3, self.z3, -1, 0, -128, 127, 0, 1.0)
    y = y + r
    y = torch.hardtanh(y, 0.0, 4.0)
    y = anybit.fake_quant_affine(y, self.s4, self.z4, -1, 0, 0, 15, 0, 1.0)
    y = torch.adaptive_avg_pool2d(y, [1, 1])
    y = torch.flatten(y, 1)
    y = torch.linear(y, self.wl, self.bl)
    return anybit.fake_quant_affine(y, self.s5, self.z5, -1, 0, -128, 127, 0, 1.0)
)";

std::vector<std::pair<std::string, at::Tensor>> block_buffers(int64_t cin, int64_t c) {
  at::manual_seed(3);
  return {{"w1", at::randn({c, cin, 3, 3}) * 0.3}, {"b1", at::randn({c}) * 0.1},
          {"s1", at::full({1}, 0.25)},             {"z1", at::full({1}, 8.0)},
          {"g", at::rand({c}) + 0.5},              {"beta", at::randn({c}) * 0.1},
          {"mean", at::randn({c}) * 0.2},          {"var", at::rand({c}) + 0.5},
          {"sc", at::rand({c}) * 0.2 + 0.05},      {"zc", at::zeros({c})},
          {"s2", at::full({1}, 0.02)},             {"z2", at::zeros({1})},
          {"w2", at::randn({c, c, 3, 3}) * 0.1},   {"s3", at::full({1}, 0.03)},
          {"z3", at::zeros({1})},                  {"s4", at::full({1}, 0.25)},
          {"z4", at::zeros({1})},                  {"wl", at::randn({10, c}) * 0.5},
          {"bl", at::randn({10}) * 0.1},           {"s5", at::full({1}, 0.01)},
          {"z5", at::zeros({1})}};
}

TEST(FusedEval, AQuantizedBlockMatchesTheInterpreter) {
  for (int64_t cin : {1, 3}) {  // one input channel reads NCHW in place; three reorder to NHWC
    torch::jit::Module m = frozen(kQuantizedBlock, block_buffers(cin, 16));
    auto f = compile_or_fail(m);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->primitives(), 4);  // two convs, the pooling, the linear layer
    // after conv 1: fq, BatchNorm, fq, ReLU, fq; after conv 2: fq, the add, hardtanh, fq;
    // after the linear layer: fq
    EXPECT_EQ(f->fused_ops(), 10);
    const Match r = compare(m, *f, randn({8, cin, 12, 12}, 7));
    RecordProperty("equal_cin" + std::to_string(cin), std::to_string(r.equal));
    EXPECT_GE(r.equal, 0.95) << "cin " << cin;
    EXPECT_LE(r.max_diff, 0.01 + 1e-6) << "cin " << cin;  // at most one step of the output quantizer
  }
}

TEST(FusedEval, AConvBetweenQuantizersRunsInInt8AndAgreesWithTheFloatConv) {
  auto buffers = block_buffers(1, 16);
  at::manual_seed(9);
  for (auto& [name, t] : buffers)  // conv 2's weights on a 4-bit grid of step 0.05
    if (name == "w2") t = at::round(at::randn({16, 16, 3, 3}) * 3).clamp(-8, 7) * 0.05;
  torch::jit::Module m = frozen(kQuantizedBlock, buffers);
  const at::Tensor x = randn({8, 1, 12, 12}, 7);
  for (bool int8 : {true, false}) {
    std::string why;
    auto f = FusedModel::compile(m, &why, int8);
    ASSERT_TRUE(f) << why;
    const Match r = compare(m, *f, x);
    // conv 2 reads the uint8 ReLU quantizer's integers and the weights' integers; conv 1
    // reads the float input and stays float (all float where the CPU has no VNNI)
    EXPECT_EQ(f->int8_layers(x), int8 && FusedModel::int8_exact_here() ? 1 : 0) << f->summary(x);
    EXPECT_EQ(f->summary(x).find("int8 off: this CPU has no VNNI") != std::string::npos,
              int8 && !FusedModel::int8_exact_here()) << f->summary(x);
    EXPECT_GE(r.equal, 0.95) << "int8 " << int8;
    EXPECT_LE(r.max_diff, 0.01 + 1e-6) << "int8 " << int8;
  }
}

// A linear layer between a per-tensor int8 quantizer and weights on an integer grid runs
// in int8 (its bias added after the output scale, along the last dim), on [N, F] and on
// [N, T, F] (a transformer's tokens) alike, where the CPU has VNNI (float, and as close,
// where it has not).
TEST(FusedEval, ALinearLayerBetweenQuantizersRunsInInt8) {
  at::manual_seed(12);
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = anybit.fake_quant_affine(torch.layer_norm(x, [16], None, None, 1e-5), self.s, self.z, -1, 0, -128, 127, 0, 1.0)
    y = torch.linear(y, self.w, self.b)
    return anybit.fake_quant_affine(y, self.s2, self.z, -1, 0, -128, 127, 0, 1.0)
)",
                                {{"s", at::full({1}, 0.03)},
                                 {"z", at::zeros({1})},
                                 {"w", at::round(at::randn({12, 16}) * 20).clamp(-127, 127) * 0.01},
                                 {"b", at::randn({12}) * 0.1},
                                 {"s2", at::full({1}, 0.05)}});
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{6, 16}, std::vector<int64_t>{3, 5, 16}}) {
    auto f = compile_or_fail(m);
    ASSERT_TRUE(f);
    const at::Tensor x = randn(shape, 13);
    const Match r = compare(m, *f, x);
    EXPECT_EQ(f->int8_layers(x), FusedModel::int8_exact_here() ? 1 : 0) << f->summary(x);
    EXPECT_GE(r.equal, 0.95);
    EXPECT_LE(r.max_diff, 0.05 + 1e-6);  // at most one step of the output quantizer
  }
}

TEST(FusedEval, WeightsOffAnIntegerGridStayFloat) {
  torch::jit::Module m = frozen(kQuantizedBlock, block_buffers(1, 16));  // random float weights
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  const at::Tensor x = randn({2, 1, 8, 8}, 1);
  f->forward(x);
  EXPECT_EQ(f->int8_layers(x), 0);
}

TEST(FusedEval, EveryBatchSizeGetsItsOwnPlan) {
  torch::jit::Module m = frozen(kQuantizedBlock, block_buffers(1, 8));
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  for (int64_t n : {5, 1, 5, 13}) {
    const Match r = compare(m, *f, randn({n, 1, 10, 10}, 100 + n));
    EXPECT_GE(r.equal, 0.95) << n;
  }
}

TEST(FusedEval, AFloatModelWithPoolingAndFlatteningMatchesToRounding) {
  // max and average pooling, a flatten of H x W > 1 (NHWC back to torch's NCHW order),
  // an add whose open operand is the second, relu6, dropout in eval mode
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    a = torch.conv2d(x, self.w1, self.b1, [1, 1], [0, 0], [1, 1], 1)
    a = torch.max_pool2d(a, [2, 2], [2, 2], [0, 0], [1, 1], False)
    b = torch.conv2d(a, self.w2, None, [1, 1], [1, 1], [1, 1], 2)
    c = a + torch.relu6(b)
    c = torch.avg_pool2d(c, [2, 2], [1, 1], [1, 1], False, True, None)
    c = torch.dropout(c, 0.5, False)
    c = torch.flatten(c, 1)
    return torch.linear(c, self.wl, None)
)",
                                {{"w1", at::randn({6, 3, 3, 3})},
                                 {"b1", at::randn({6})},
                                 {"w2", at::randn({6, 3, 3, 3})},
                                 {"wl", at::randn({4, 6 * 7 * 7}) * 0.1}});
  EXPECT_TRUE(compiled_matching(m, randn({3, 3, 14, 14}, 11)));
}

TEST(FusedEval, LayerOutputsShareBuffersOnceNothingReadsThem) {
  // eight convs of one shape in a chain: each output is read by the next conv only, so
  // two buffers take turns (and the model's output has its own)
  std::string body = "def forward(self, x):\n    a = x\n";
  std::vector<std::pair<std::string, at::Tensor>> w;
  for (int i = 0; i < 8; ++i) {
    body += "    a = torch.relu(torch.conv2d(a, self.w" + std::to_string(i) + ", None, [1, 1], [1, 1], [1, 1], 1))\n";
    w.push_back({"w" + std::to_string(i), at::randn({8, 8, 3, 3}) * 0.2});
  }
  body += "    return a\n";
  torch::jit::Module m = frozen(body, w);
  const at::Tensor x = randn({2, 8, 10, 10}, 3);
  auto f = compiled_matching(m, x);
  ASSERT_TRUE(f);
  const int64_t one = x.numel() * 4;  // bytes of one layer's output
  EXPECT_LE(f->buffer_bytes(x), 3 * one);
  EXPECT_GE(f->buffer_bytes(x), 2 * one);
}

TEST(FusedEval, AViewOfALayersOutputKeepsItsBufferUntilItsLastRead) {
  // t is ATen's view of a's oneDNN buffer; a itself is last read by the second conv, but
  // the buffer must not take c or d while t is still to be read
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    a = torch.conv2d(x, self.w1, None, [1, 1], [1, 1], [1, 1], 1)
    t = a.transpose(2, 3)
    b = torch.relu(torch.conv2d(a, self.w2, None, [1, 1], [1, 1], [1, 1], 1))
    c = torch.relu(torch.conv2d(b, self.w3, None, [1, 1], [1, 1], [1, 1], 1))
    d = torch.relu(torch.conv2d(c, self.w4, None, [1, 1], [1, 1], [1, 1], 1))
    return torch.cat([d, t.transpose(2, 3)], 1)
)",
                                {{"w1", at::randn({4, 3, 3, 3})},
                                 {"w2", at::randn({4, 4, 3, 3})},
                                 {"w3", at::randn({4, 4, 3, 3})},
                                 {"w4", at::randn({4, 4, 3, 3})}});
  EXPECT_TRUE(compiled_matching(m, randn({2, 3, 6, 6}, 5)));
}

TEST(FusedEval, ChainsWithoutALayerRunAsPlainLoops) {
  // a quantizer on the input itself and an add of two values that are both read again:
  // no primitive carries them, the plain post-op loops do
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    x = anybit.fake_quant_affine(x, self.s, self.z, -1, 0, 0, 255, 0, 1.0)
    a = torch.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1)
    b = torch.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1)
    c = a + b
    d = torch.relu(c + a)
    return torch.flatten(torch.adaptive_avg_pool2d(d + b, [1, 1]), 1)
)",
                                {{"s", at::full({1}, 1.0 / 255)}, {"z", at::zeros({1})}, {"w", at::randn({4, 2, 3, 3})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  const at::Tensor x = randn({2, 2, 6, 6}, 5).abs();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(f->forward(x), m.forward({x}).toTensor(), 1e-4, 1e-5));
}

TEST(FusedEval, ALoopComputingTensorsIsNotCompiledAndSaysWhich) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, None, [1, 1], [0, 0], [1, 1], 1)
    for i in range(x.size(0)):
        y = y + 1.0
    return y
)",
                                {{"w", at::randn({2, 1, 1, 1})}});
  std::string why;
  EXPECT_FALSE(FusedModel::compile(m, &why));
  EXPECT_NE(why.find("prim::Loop"), std::string::npos) << why;
}

double max_rel_diff(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item<double>();
}

// SiLU, Hardswish, sigmoid, Hardsigmoid and GELU (both forms) after convs and a linear
// layer: post-ops of oneDNN's layers, nothing through ATen. Hardsigmoid is the same float
// operations as ATen's; the others are oneDNN's own kernels, within a few ulps.
TEST(FusedEval, ModernActivationsArePostOpsAndMatchTheInterpreter) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.silu(torch.conv2d(x, self.w1, self.b1, [1, 1], [1, 1], [1, 1], 1))
    y = torch.hardswish(torch.conv2d(y, self.w2, None, [1, 1], [1, 1], [1, 1], 1))
    g = torch.hardsigmoid(torch.conv2d(y, self.w2, None, [1, 1], [1, 1], [1, 1], 1))
    y = torch.sigmoid(torch.conv2d(y, self.w3, None, [1, 1], [1, 1], [1, 1], 1)) + g
    y = torch.flatten(torch.adaptive_avg_pool2d(y, [1, 1]), 1)
    y = torch.gelu(torch.linear(y, self.wl, None))
    return torch.gelu(torch.linear(y, self.wl, None), approximate='tanh')
)",
                                {{"w1", at::randn({8, 3, 3, 3}) * 0.5},
                                 {"b1", at::randn({8}) * 0.1},
                                 {"w2", at::randn({8, 8, 3, 3}) * 0.3},
                                 {"w3", at::randn({8, 8, 3, 3}) * 0.3},
                                 {"wl", at::randn({8, 8})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->aten_ops().empty()) << f->summary(at::zeros({1}));
  EXPECT_EQ(f->fused_ops(), 7);  // the six activations and the add
  const at::Tensor x = randn({4, 3, 10, 10}, 31);
  torch::NoGradGuard no_grad;
  const at::Tensor want = m.forward({x}).toTensor(), got = f->forward(x);
  EXPECT_LE(max_rel_diff(got, want), 1e-5);
}

// The squeeze-excite gate: global pooling, two 1x1 convs, a sigmoid gate multiplied back
// onto the feature map (a oneDNN binary op broadcasting [N, C, 1, 1]), then a quantizer.
TEST(FusedEval, ASqueezeExciteGateRunsOnOneDnnAndMatchesTheInterpreter) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1))
    s = torch.adaptive_avg_pool2d(y, [1, 1])
    s = torch.relu(torch.conv2d(s, self.wr, self.br, [1, 1], [0, 0], [1, 1], 1))
    s = torch.sigmoid(torch.conv2d(s, self.we, self.be, [1, 1], [0, 0], [1, 1], 1))
    y = anybit.fake_quant_affine(s * y, self.s, self.z, -1, 0, 0, 255, 0, 1.0)
    return torch.conv2d(y, self.w2, None, [1, 1], [0, 0], [1, 1], 1)
)",
                                {{"w", at::randn({8, 3, 3, 3}) * 0.5},
                                 {"wr", at::randn({2, 8, 1, 1})},
                                 {"br", at::randn({2}) * 0.1},
                                 {"we", at::randn({8, 2, 1, 1})},
                                 {"be", at::randn({8}) * 0.1},
                                 {"s", at::full({1}, 0.02)},
                                 {"z", at::zeros({1})},
                                 {"w2", at::randn({4, 8, 1, 1})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->aten_ops().empty()) << f->summary(at::zeros({1}));
  const Match r = compare(m, *f, randn({3, 3, 9, 9}, 32));
  EXPECT_GE(r.equal, 0.9);
  EXPECT_LE(r.max_diff, 1e-3);
}

// A transformer block on [N, T, F]: linear layers (on oneDNN, over the last dim) around
// layer_norm, matmul, softmax, transpose and reshape (through ATen, as the interpreter
// calls them), the residual adds, GELU.
TEST(FusedEval, TransformerOpsRunThroughATenBetweenOneDnnLayers) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    h = torch.linear(x, self.we, self.be)
    n = torch.layer_norm(h, [16], self.g, self.b, 1e-5)
    q = torch.linear(n, self.wq, None).reshape(x.size(0), x.size(1), 2, 8).transpose(1, 2)
    k = torch.linear(n, self.wk, None).reshape(x.size(0), x.size(1), 2, 8).transpose(1, 2)
    a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * 0.35, -1)
    o = torch.matmul(a, q).transpose(1, 2).reshape(x.size(0), x.size(1), 16)
    h = h + torch.linear(o, self.wo, None)
    h = h + torch.linear(torch.gelu(torch.linear(h, self.w1, None)), self.w2, None)
    return torch.linear(torch.mean(h, [1]), self.wh, None)
)",
                                {{"we", at::randn({16, 6}) * 0.4}, {"be", at::randn({16}) * 0.1},
                                 {"g", at::rand({16}) + 0.5},       {"b", at::randn({16}) * 0.1},
                                 {"wq", at::randn({16, 16}) * 0.25}, {"wk", at::randn({16, 16}) * 0.25},
                                 {"wo", at::randn({16, 16}) * 0.25}, {"w1", at::randn({32, 16}) * 0.25},
                                 {"w2", at::randn({16, 32}) * 0.2},  {"wh", at::randn({5, 16}) * 0.3}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  const auto aten = f->aten_ops();
  for (const char* op : {"aten::layer_norm", "aten::matmul", "aten::softmax", "aten::transpose"})
    EXPECT_TRUE(aten.count(op)) << op << ": " << f->summary(at::zeros({1}));
  EXPECT_FALSE(aten.count("aten::linear")) << f->summary(at::zeros({1}));
  for (int64_t n : {4, 1}) {
    const at::Tensor x = randn({n, 7, 6}, 33 + n);
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_rel_diff(f->forward(x), m.forward({x}).toTensor()), 1e-5) << n;
  }
}

// Shapes read from a oneDNN value (ListUnpack of its size), a view() of an NHWC buffer
// (ATen gets the interpreter's contiguous tensor), a branch on the input's size, a list
// written in place inside a branch (swin's shift sizes) and an in-place fill of a slice of
// a tensor ATen made (an attention mask) added with broadcasting: each input size takes
// other branches, and each matches the interpreter.
TEST(FusedEval, BranchesListsAndInPlaceOpsRunAsTheInterpreterRunsThem) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1)
    n, c, h, w = y.shape
    shift = [1, 1]
    if h > 6:
        shift[0] = 2
        y = torch.relu(y)
    else:
        y = torch.sigmoid(y) * 2.0
    mask = torch.zeros([1, c, 1, 1])
    mask[:, 0:2].fill_(-1.0)
    y = y + mask * float(shift[0])
    z = y.view(n, c * h * w)
    return torch.linear(z, self.wl[:, 0:c * h * w], None)
)",
                                {{"w", at::randn({4, 2, 3, 3})}, {"wl", at::randn({3, 4 * 8 * 8})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  for (int64_t size : {8, 5}) {
    const at::Tensor x = randn({2, 2, size, size}, 40 + size);
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_rel_diff(f->forward(x), m.forward({x}).toTensor()), 1e-5) << size;
  }
}

// Adaptive average pooling to a size that divides the input is a oneDNN pooling; to one
// that does not (VGG's 7x7 from 2x2, AlexNet's 6x6 from 1x1: windows of different sizes) it
// is ATen's own kernel, with the quantizer after it still fused.
TEST(FusedEval, AdaptivePoolingToAnySizeMatchesTheInterpreter) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.adaptive_avg_pool2d(torch.conv2d(x, self.w, None, [1, 1], [0, 0], [1, 1], 1), [2, 2])
    return anybit.fake_quant_affine(y, self.s, self.z, -1, 0, -128, 127, 0, 1.0)
)",
                                {{"w", at::randn({2, 1, 1, 1})}, {"s", at::full({1}, 0.01)}, {"z", at::zeros({1})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{1, 1, 6, 4}, std::vector<int64_t>{2, 1, 5, 4},
                                           std::vector<int64_t>{2, 1, 1, 1}}) {
    const Match r = compare(m, *f, randn(shape, 3));
    EXPECT_GE(r.equal, 0.99) << shape[2] << "x" << shape[3];
    EXPECT_LE(r.max_diff, 1e-6) << shape[2] << "x" << shape[3];
  }
}

// A shape read (size(), dim(): the shape checks of a scripted model) of a conv output that
// the ReLU after it was fused into reads the chain's value, which has its shape.
TEST(FusedEval, AShapeCheckOfAFusedValueReadsTheChainsValue) {
  torch::jit::Module m = frozen(R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1)
    n = y.size(0)
    y = torch.relu(y)
    return torch.reshape(torch.adaptive_avg_pool2d(y, [1, 1]), [n, -1])
)",
                                {{"w", at::randn({3, 2, 3, 3})}});
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->fused_ops(), 1);  // the ReLU
  const Match r = compare(m, *f, randn({2, 2, 5, 5}, 4));
  EXPECT_LE(r.max_diff, 1e-5);
}

TEST(FusedEval, AnInputTheLayersCannotTakeIsOneClearError) {
  torch::jit::Module m = frozen(kQuantizedBlock, block_buffers(1, 8));
  auto f = compile_or_fail(m);
  ASSERT_TRUE(f);
  try {
    f->forward(at::zeros({2, 3, 10, 10}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input channels"), std::string::npos) << e.what();
  }
}

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  return std::string(dir ? dir : "fixtures") + "/" + name;
}

// torchvision's models, scripted and traced, float and quantized at W8A8: each compiles
// (or, with an op outside the lowered set, says which) and matches the interpreter.
TEST(FusedEval, TorchvisionModelsCompileAndMatchTheInterpreter) {
  const at::Tensor x = randn({2, 3, 224, 224}, 21);
  auto calib = tensor_data(randn({4, 3, 224, 224}, 22), at::zeros({4}, at::kLong), "random.npy");
  Config w8a8 = parse_config_string(
      "rules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int8:per_channel'}\n"
      "  - {kind: [relu, pool, add], spec: int8}\n");
  for (const std::string model : {"resnet18", "mobilenet_v2", "alexnet"})
    for (const std::string form : {"script", "trace"})
      for (bool quantized : {false, true}) {
        const std::string what = model + "_" + form + (quantized ? " W8A8" : " float");
        torch::jit::Module m = load_module(fixture(model + "_" + form + ".pt"));
        if (quantized) {
          QuantizeOptions qo;
          qo.progress = false;
          qo.batch_size = 2;
          qo.calib_batches = 2;
          m = quantize(load_model(fixture(model + "_" + form + ".pt")), w8a8, calib.get(), qo).model.module;
        }
        m.eval();
        torch::jit::Module f = torch::jit::freeze(m.clone());
        std::string why;
        auto fused = FusedModel::compile(f, &why);
        ASSERT_TRUE(fused) << what << ": " << why;
        torch::NoGradGuard no_grad;
        const at::Tensor want = f.forward({x}).toTensor();
        at::Tensor got;
        try {
          got = fused->forward(x);
        } catch (const std::exception& e) {
          FAIL() << what << ": " << e.what();
        }
        ASSERT_EQ(got.sizes(), want.sizes()) << what;
        EXPECT_TRUE(at::equal(got.argmax(1), want.argmax(1))) << what;
        const double scale = want.abs().max().item<double>();
        EXPECT_LE((got - want).abs().max().item<double>(), (quantized ? 0.05 : 1e-3) * scale) << what;
      }
}

TEST(FusedEval, EvaluateRunsTheShippedModelOnOneDnnWithTheInterpretersAccuracy) {
  auto train = open_data("fmnist:/usr/share/datasets/fashion-mnist:train");
  auto test = open_data("fmnist:/usr/share/datasets/fashion-mnist:test");
  // a quantizer after every module, as the stock PyTorch recipe places them
  Config c = parse_config_string(
      "calibrator: mse\n"
      "rules:\n"
      "  - {kind: [conv, linear], role: weight, spec: int4}\n"
      "  - {kind: [conv, bn, relu, pool, linear, add], role: activation, spec: 'uint4:asym'}\n");
  QuantizeOptions qo;
  qo.progress = false;
  qo.calib_batches = 2;
  QuantizeResult q = quantize(load_model(std::string(ANYBIT_SOURCE_DIR) + "/models/fmnist_resnet.pt"), c, train.get(), qo);
  EvalOptions eo;
  eo.progress = false;
  EvalResult fused = evaluate(q.model.module, *test, eo);
  eo.fused = false;
  EvalResult interp = evaluate(q.model.module, *test, eo);
  EXPECT_EQ(fused.runtime, "onednn") << fused.runtime_note;
  EXPECT_NE(fused.runtime_note.find("int8"), std::string::npos) << fused.runtime_note;
  EXPECT_EQ(interp.runtime, "torchscript");
  EXPECT_EQ(fused.samples, 10000);
  EXPECT_NEAR(fused.top1, interp.top1, 0.05);
  EXPECT_NEAR(fused.loss, interp.loss, 1e-3);
}

}  // namespace
}  // namespace anybit
