// Captures from a kept value equal captures from the model's input, refuse where a skip
// connection reaches back past the kept value, and a changed weight drops what it feeds.
#include "anybit/ptq/capture.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include <ATen/ATen.h>

#include "anybit/api/quantize.h"
#include "anybit/ptq/fold_bn.h"

namespace anybit {
namespace {
namespace jit = torch::jit;

// The inputs of the graph's convolutions and linear layers, forward order.
std::vector<jit::Value*> layer_inputs(jit::Graph& g) {
  std::vector<jit::Value*> out;
  for (jit::Node* n : g.nodes()) {
    const std::string k = n->kind().toQualString();
    if (k == "aten::conv2d" || k == "aten::_convolution" || k == "aten::linear") out.push_back(n->input(0));
  }
  return out;
}

jit::Node* layer_node(jit::Value* input) {
  for (const jit::Use& u : input->uses()) {
    const std::string k = u.user->kind().toQualString();
    if (u.offset == 0 && (k == "aten::conv2d" || k == "aten::_convolution" || k == "aten::linear")) return u.user;
  }
  return nullptr;
}

TEST(CaptureChain, EqualsCapturingFromTheModelInputOnScriptedAndTracedModels) {
  auto calib = open_data("fmnist::train:limit=96");
  for (const char* file : {"fmnist_resnet.pt", "fmnist_resnet_traced.pt"})
  for (bool fold : {true, false}) {
    SCOPED_TRACE(std::string(file) + (fold ? ", BatchNorm folded" : ""));
    Config c = parse_config_string(
        "calibrator: minmax\nrules:\n"
        "  - {kind: [conv, linear], role: weight, spec: 'int4:per_channel'}\n"
        "  - {kind: [relu, pool, add], spec: auto4}\n");
    QuantizeOptions o;
    o.progress = false;
    o.calib_batches = 1;
    o.batch_size = 32;
    ModelGraph m = load_model(std::string(ANYBIT_SOURCE_DIR) + "/models/" + file);
    if (fold) fold_batch_norm(m);
    QuantizeResult q = quantize(std::move(m), c, calib.get(), o);
    ModelGraph& g = q.model;
    const std::vector<jit::Value*> in = layer_inputs(*g.graph);
    ASSERT_GE(in.size(), 10u);
    // batches of 40 over 96 samples: the last batch is short
    const std::vector<at::Tensor> full = capture_values(g, in, *calib, 96, 40);
    CaptureChain chain(g, *calib, 96, 40);
    for (size_t i = 0; i < in.size(); ++i) EXPECT_TRUE(at::equal(chain.get(in[i]), full[i])) << "layer input " << i;
    // scripted BatchNorm's batch_norm op may write its running statistics (a module
    // attribute), so no op before it is dead: unfolded, those captures run from the
    // model's input (the chain above checks both ways)
    if (!fold) continue;

    // a layer input from the previous layer's input: only the part between them runs
    auto from = capture_values_from(g, in[1], full[1], {in[2]}, 40);
    ASSERT_TRUE(from.has_value());
    EXPECT_TRUE(at::equal((*from)[0], full[2]));
    // the input of the second residual block needs the first block's input (its skip
    // connection) besides the first block's second conv's input
    EXPECT_FALSE(capture_values_from(g, in[2], full[2], {in[3]}, 40).has_value());

    // a weight changes: what it feeds is captured again, with the new weight
    jit::Node* conv = layer_node(in[1]);
    ASSERT_NE(conv, nullptr);
    EXPECT_TRUE(depends_on(in[2], conv));
    EXPECT_FALSE(depends_on(in[1], conv));
    CaptureChain chain2(g, *calib, 96, 40);
    (void)chain2.get(in[1]);
    (void)chain2.get(in[2]);
    at::Tensor w = g.module.attr("layer1").toModule().attr("conv1").toModule().attr("weight").toTensor();
    const at::Tensor saved = w.clone();
    {
      torch::NoGradGuard no_grad;
      w.mul_(-1);
    }
    chain2.changed(conv);
    const at::Tensor again = chain2.get(in[2]);
    EXPECT_FALSE(at::equal(again, full[2]));
    EXPECT_TRUE(at::equal(again, capture_values(g, {in[2]}, *calib, 96, 40)[0]));
    torch::NoGradGuard no_grad;
    w.copy_(saved);
  }
}

// In torchvision's ResNet-18, traced, the layers' inputs are outputs of in-place ReLUs
// (relu_): the chain computes from them too, with the numbers of captures from the model's input.
TEST(CaptureChain, ComputesFromInPlaceOpOutputsOfATracedFloatModel) {
  at::manual_seed(0);
  auto calib = tensor_data(at::rand({64, 3, 64, 64}), at::zeros({64}, at::kLong), "random images");
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  ModelGraph g = load_model(std::string(dir ? dir : "fixtures") + "/resnet18_trace.pt");  // torchvision's
  fold_batch_norm(g);
  const std::vector<jit::Value*> in = layer_inputs(*g.graph);
  ASSERT_GE(in.size(), 4u);
  bool in_place = false;
  for (jit::Value* v : in) in_place |= v->node()->kind().toQualString() == std::string("aten::relu_");
  ASSERT_TRUE(in_place) << "the traced model's layer inputs should include relu_ outputs";
  const std::vector<at::Tensor> full = capture_values(g, in, *calib, 64, 24);
  CaptureChain chain(g, *calib, 64, 24);
  for (size_t i = 0; i < in.size(); ++i) EXPECT_TRUE(at::equal(chain.get(in[i]), full[i])) << "layer input " << i;
  auto from = capture_values_from(g, in[1], full[1], {in[2]}, 24);
  ASSERT_TRUE(from.has_value());
  EXPECT_TRUE(at::equal((*from)[0], full[2]));
}

TEST(ModulesOnDevice, FindsTheModulesDeviceAndMovesNothingOnTheCpu) {
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  ModelGraph g = load_model(std::string(dir ? dir : "fixtures") + "/resnet18_trace.pt");
  EXPECT_TRUE(module_device(g.module).is_cpu());
  const at::Tensor before = (*g.module.parameters().begin());
  {
    ModulesOnDevice guard({g.module}, c10::kCPU);
    EXPECT_EQ((*g.module.parameters().begin()).data_ptr(), before.data_ptr());
  }
  EXPECT_EQ((*g.module.parameters().begin()).data_ptr(), before.data_ptr());
  // a module without parameters or buffers (the data goes to the CPU)
  jit::Module empty("empty");
  EXPECT_TRUE(module_device(empty).is_cpu());
}

}  // namespace
}  // namespace anybit
