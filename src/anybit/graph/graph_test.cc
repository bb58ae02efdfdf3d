// Points, rules and rewriting on models nobody here wrote: torchvision's AlexNet,
// ResNet-18 and MobileNetV2, scripted and traced (exported by tests/export_torchvision.py
// into $ANYBIT_FIXTURES before this test runs).
#include <gtest/gtest.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/script.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "anybit/api/quantize.h"
#include "anybit/graph/graph.h"
#include "anybit/graph/rules.h"
#include "anybit/quant/fake_quant.h"

namespace anybit {
namespace {

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("ANYBIT_FIXTURES");
  return std::string(dir ? dir : "fixtures") + "/" + name;
}

std::vector<std::string> names(const ModelGraph& g) {
  std::vector<std::string> out;
  for (const auto& p : g.points) out.push_back(p.name);
  return out;
}

// Runs the rewritten graph on x and returns the output of every anybit/aten quantizer
// node, keyed by the name of the point it was inserted for (recovered from order).
std::vector<std::pair<std::string, at::Tensor>> quantizer_outputs(ModelGraph& g, const at::Tensor& x) {
  auto graph = g.graph->copy();
  std::vector<torch::jit::Value*> outs;
  std::vector<std::string> kinds;
  for (torch::jit::Node* n : graph->nodes()) {
    const std::string k = n->kind().toQualString();
    if (k.rfind("anybit::fake_quant", 0) == 0 || k.rfind("aten::fake_quantize", 0) == 0) {
      outs.push_back(n->output());
      kinds.push_back(k);
    }
  }
  graph->eraseOutput(0);
  graph->registerOutput(graph->insertNode(graph->createTuple(outs))->output());
  torch::jit::GraphFunction fn("probe", graph, nullptr);
  torch::jit::Stack stack{g.module._ivalue(), x};
  torch::NoGradGuard ng;
  fn.run(stack);
  auto elems = stack.back().toTuple()->elements();
  std::vector<std::pair<std::string, at::Tensor>> r;
  for (size_t i = 0; i < outs.size(); ++i) r.push_back({kinds[i], elems[i].toTensor()});
  return r;
}

int64_t distinct(const at::Tensor& t) { return std::get<0>(at::_unique(t.flatten())).numel(); }

TEST(Points, ResNet18ScriptedAndTracedGiveTheSameNamesInForwardOrder) {
  ModelGraph s = load_model(fixture("resnet18_script.pt"));
  ModelGraph t = load_model(fixture("resnet18_trace.pt"));
  EXPECT_EQ(names(s), names(t));
  std::vector<std::string> n = names(s);
  auto at = [&](const std::string& x) { return std::find(n.begin(), n.end(), x) - n.begin(); };
  for (const char* want : {"input.0", "conv1.weight", "bn1:out", "relu:out", "layer1.0.conv1.weight",
                           "layer1.0:add:out", "layer1.0.relu:out", "layer1.0.relu:out2",
                           "layer4.1.conv2.weight", "fc.weight", "fc.bias", "fc:out"})
    EXPECT_LT(at(want), static_cast<long>(n.size())) << want;
  EXPECT_LT(at("conv1.weight"), at("layer1.0.conv1.weight"));
  EXPECT_LT(at("layer1.0.relu:out"), at("layer1.0:add:out"));
  EXPECT_LT(at("layer1.0:add:out"), at("layer1.0.relu:out2"));
  EXPECT_EQ(s.find("conv1.weight")->shape, (std::vector<int64_t>{64, 3, 7, 7}));
}

TEST(Points, MobileNetV2ResidualBlocksAreFoundThroughTheirFixedBranches) {
  ModelGraph s = load_model(fixture("mobilenet_v2_script.pt"));
  ModelGraph t = load_model(fixture("mobilenet_v2_trace.pt"));
  EXPECT_EQ(names(s), names(t));
  EXPECT_NE(s.find("features.3:add:out"), nullptr);
  EXPECT_NE(s.find("features.17.conv.2.weight"), nullptr);
  int convs = 0;
  for (const auto& p : s.points) convs += p.role == Role::kWeight && p.kind == "conv";
  EXPECT_EQ(convs, 52);
}

Config story1_config(bool log_weights) {
  std::string w = log_weights ? "log" : "int";
  return parse_config_string(
      "rules:\n"
      "  - {kind: conv, role: weight, spec: " + w + "11}\n"
      "  - {match: classifier.1.weight, spec: int10}\n"
      "  - {match: classifier.4.weight, spec: int9}\n"
      "  - {match: classifier.6.weight, spec: int9}\n"
      "  - {match: 'features.1:out', spec: uint9}\n"
      "  - {match: 'features.4:out', spec: uint8}\n"
      "  - {match: 'features.7:out', spec: uint5}\n"
      "  - {match: 'features.9:out', spec: uint5}\n"
      "  - {match: 'features.11:out', spec: uint7}\n",
      "story1.yaml");
}

class Story1 : public ::testing::TestWithParam<std::string> {};

TEST_P(Story1, AlexNetGetsExactlyTheRequestedBitsPerLayer) {
  ModelGraph g = load_model(fixture("alexnet_" + GetParam() + ".pt"));
  at::manual_seed(0);
  at::Tensor calib_x = at::rand({4, 3, 224, 224});
  auto data = tensor_data(calib_x, at::zeros({4}, at::kLong), "random");
  QuantizeOptions opt;
  opt.calib_batches = 1;
  opt.batch_size = 4;
  opt.progress = false;
  QuantizeResult q = quantize(std::move(g), story1_config(false), data.get(), opt);
  std::map<std::string, int> want_bits = {
      {"features.0.weight", 11}, {"features.3.weight", 11}, {"features.6.weight", 11},
      {"features.8.weight", 11}, {"features.10.weight", 11}, {"classifier.1.weight", 10},
      {"classifier.4.weight", 9}, {"classifier.6.weight", 9}, {"features.1:out", 9},
      {"features.4:out", 8}, {"features.7:out", 5}, {"features.9:out", 5}, {"features.11:out", 7}};
  int quantized = 0;
  for (const auto& r : q.points) {
    auto it = want_bits.find(r.point.name);
    if (it == want_bits.end()) {
      EXPECT_TRUE(r.assignment.spec.is_float()) << r.point.name;
      continue;
    }
    ++quantized;
    EXPECT_EQ(r.assignment.spec.bits, it->second) << r.point.name;
  }
  EXPECT_EQ(quantized, 13);
  // The graph: count levels of what every quantizer node outputs on a real forward.
  auto outs = quantizer_outputs(q.model, at::rand({2, 3, 224, 224}));
  ASSERT_EQ(outs.size(), 13u);
  // Forward order: features.0.weight, features.1:out, features.3.weight, features.4:out, ...
  const std::vector<int> order_bits = {11, 9, 11, 8, 11, 5, 11, 5, 11, 7, 10, 9, 9};
  for (size_t i = 0; i < outs.size(); ++i) {
    EXPECT_LE(distinct(outs[i].second), int64_t{1} << order_bits[i]) << "quantizer #" << i;
    EXPECT_GT(distinct(outs[i].second), int64_t{1} << (order_bits[i] - 3)) << "quantizer #" << i
                                                                          << " uses too few levels";
  }
}

INSTANTIATE_TEST_SUITE_P(ScriptedAndTraced, Story1, ::testing::Values("script", "trace"));

TEST(Rewrite, WeightsLandExactlyOnTheSpecGridPerChannel) {
  ModelGraph g = load_model(fixture("resnet18_script.pt"));
  Config c = parse_config_string("rules: [{kind: conv, role: weight, spec: 'int4:per_channel'}]");
  QuantizeOptions opt;
  opt.progress = false;
  QuantizeResult q = quantize(std::move(g), c, nullptr, opt);
  at::Tensor w = q.model.module.attr("layer2").toModule().attr("0").toModule().attr("conv1").toModule().attr("weight").toTensor();
  at::Tensor s = q.model.module.attr("anybit__layer2_0_conv1_weight__scale").toTensor();
  ASSERT_EQ(s.numel(), 128);
  at::Tensor wq = fake_quant_affine_forward(w, s, at::zeros_like(s), 0, 0, -8, 7, 0);
  at::Tensor k = wq / s.view({-1, 1, 1, 1});
  EXPECT_TRUE(at::allclose(k, k.round(), 0, 1e-4));
  EXPECT_LE(k.round().max().item<float>(), 7.0f);
  EXPECT_GE(k.round().min().item<float>(), -8.0f);
  for (int64_t c2 = 0; c2 < 128; c2 += 31) EXPECT_LE(distinct(wq[c2]), 16);
}

TEST(Rewrite, FloatPointsAreUntouchedAndAllFloatConfigChangesNothing) {
  ModelGraph ref = load_model(fixture("resnet18_trace.pt"));
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  Config c = parse_config_string("rules: [{kind: any, spec: float}]");
  QuantizeOptions opt;
  opt.progress = false;
  QuantizeResult q = quantize(std::move(g), c, nullptr, opt);
  at::Tensor x = at::randn({1, 3, 224, 224});
  EXPECT_TRUE(at::equal(q.model.module.forward({x}).toTensor(), ref.module.forward({x}).toTensor()));
}

TEST(Rewrite, InPlaceReluOutputsFeedTheNextConvQuantized) {
  // torchvision's ResNet uses ReLU(inplace=True): aten::relu_ aliases its input.
  ModelGraph g = load_model(fixture("resnet18_script.pt"));
  at::Tensor x = at::rand({2, 3, 64, 64});
  auto data = tensor_data(x, at::zeros({2}, at::kLong), "x");
  Config c = parse_config_string("rules: [{match: 'relu:out', spec: uint2}]");
  QuantizeOptions opt;
  opt.progress = false;
  opt.batch_size = 2;
  QuantizeResult q = quantize(std::move(g), c, data.get(), opt);
  torch::jit::Node* fq = nullptr;
  for (auto* n : q.model.graph->nodes())
    if (std::string(n->kind().toQualString()) == "anybit::fake_quant_affine") fq = n;
  ASSERT_NE(fq, nullptr);
  // the max-pool that follows reads the quantized value, not the aliased relu_ input
  bool pool_reads_q = false;
  for (const auto& use : fq->output()->uses())
    pool_reads_q = pool_reads_q || std::string(use.user->kind().toQualString()) == "aten::max_pool2d";
  EXPECT_TRUE(pool_reads_q);
  auto outs = quantizer_outputs(q.model, x);
  EXPECT_LE(distinct(outs[0].second), 4);
}

TEST(Rewrite, SaveLoadGivesTheSameOutputsBitForBit) {
  ModelGraph g = load_model(fixture("mobilenet_v2_trace.pt"));
  at::manual_seed(1);
  at::Tensor x = at::rand({2, 3, 96, 96});
  auto data = tensor_data(x, at::zeros({2}, at::kLong), "x");
  Config c = parse_config_string(
      "rules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int4:per_channel'}\n"
      "  - {kind: [relu, add], spec: int6}\n"
      "  - {role: input, spec: 'int8:asym'}\n"
      "  - {kind: conv, role: weight, position: first, spec: log5}\n"
      "  - {kind: conv, role: weight, position: 3, spec: ternary}\n"
      "  - {kind: conv, role: weight, position: last, spec: binary}\n");
  QuantizeOptions opt;
  opt.progress = false;
  opt.batch_size = 2;
  QuantizeResult q = quantize(std::move(g), c, data.get(), opt);
  at::Tensor y1 = q.model.module.forward({x}).toTensor();
  const std::string path = ::testing::TempDir() + "/anybit_saveload.pt";
  save_module(q.model.module, path);
  torch::jit::Module back = torch::jit::load(path);
  at::Tensor y2 = back.forward({x}).toTensor();
  EXPECT_TRUE(at::equal(y1, y2));
  std::remove(path.c_str());
}

TEST(Rewrite, PortableSaveLoadsWithStockOpsOnly) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  at::Tensor x = at::rand({1, 3, 64, 64});
  auto data = tensor_data(x, at::zeros({1}, at::kLong), "x");
  Config c = parse_config_string(
      "rules:\n"
      "  - {kind: [conv, linear], role: weight, spec: 'int8:per_channel'}\n"
      "  - {kind: relu, spec: uint8}\n");
  QuantizeOptions opt;
  opt.progress = false;
  opt.batch_size = 1;
  opt.portable = true;
  QuantizeResult q = quantize(std::move(g), c, data.get(), opt);
  for (auto* n : q.model.graph->nodes())
    EXPECT_NE(std::string(n->kind().ns().toUnqualString()), "anybit") << *n;
  // and the portable graph computes what the anybit ops compute
  ModelGraph g2 = load_model(fixture("resnet18_trace.pt"));
  opt.portable = false;
  QuantizeResult q2 = quantize(std::move(g2), c, data.get(), opt);
  EXPECT_TRUE(at::equal(q.model.module.forward({x}).toTensor(), q2.model.module.forward({x}).toTensor()));
}

TEST(Rewrite, PortableRejectsSpecsStockOpsCannotExpress) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  Config c = parse_config_string("rules: [{match: conv1.weight, spec: log4}]");
  QuantizeOptions opt;
  opt.progress = false;
  opt.portable = true;
  try {
    quantize(std::move(g), c, nullptr, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv1.weight"), std::string::npos) << e.what();
  }
}

TEST(Rewrite, GradientsFlowThroughTheQuantizedModel) {
  ModelGraph g = load_model(fixture("resnet18_script.pt"));
  Config c = parse_config_string("rules: [{kind: conv, role: weight, spec: 'int4:per_channel:lsq'}]");
  QuantizeOptions opt;
  opt.progress = false;
  QuantizeResult q = quantize(std::move(g), c, nullptr, opt);
  q.model.module.train();
  at::Tensor y = q.model.module.forward({at::randn({2, 3, 64, 64})}).toTensor();
  y.sum().backward();
  at::Tensor sg = q.model.module.attr("anybit__conv1_weight__scale").toTensor().grad();
  ASSERT_TRUE(sg.defined());
  EXPECT_GT(sg.abs().sum().item<double>(), 0);
  at::Tensor wg = q.model.module.attr("conv1").toModule().attr("weight").toTensor().grad();
  ASSERT_TRUE(wg.defined());
}

TEST(Rules, ARuleMatchingNothingIsAnErrorNamingTheRule) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  Config c = parse_config_string("rules:\n  - {kind: conv, spec: int8}\n  - {match: 'layer9.*', spec: int4}\n",
                                 "typo.yaml");
  try {
    plan(g, c);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("typo.yaml:3: rules[1]"), std::string::npos) << m;
    EXPECT_NE(m.find("layer9.*"), std::string::npos) << m;
  }
}

TEST(Rules, LaterRulesOverrideEarlierOnesAndPositionPicksAmongSelected) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  Config c = parse_config_string(
      "rules:\n"
      "  - {kind: conv, role: weight, spec: binary}\n"
      "  - {kind: conv, role: weight, position: first, spec: int8}\n"
      "  - {role: input, spec: int8}\n"
      "  - {match: 'layer4.*', role: weight, spec: float}\n"
      "  - {match: 'layer2.0.*', role: [activation, weight], spec: int6}\n");
  auto pts = plan(g, c);
  std::map<std::string, std::string> got;
  for (const auto& r : pts) got[r.point.name] = r.assignment.spec.str();
  EXPECT_EQ(got["conv1.weight"], "int8");
  EXPECT_EQ(got["input.0"], "int8");
  EXPECT_EQ(got["layer1.0.conv1.weight"], "binary");
  EXPECT_EQ(got["layer4.0.conv1.weight"], "float");
  EXPECT_EQ(got["fc.weight"], "float");
  // a list of roles selects each of them
  int weights = 0, activations = 0;
  for (const auto& r : pts) {
    if (r.point.name.rfind("layer2.0.", 0) != 0) continue;
    const bool listed = r.point.role == Role::kWeight || r.point.role == Role::kActivation;
    EXPECT_EQ(r.assignment.spec.str() == "int6", listed) << r.point.name;
    weights += r.point.role == Role::kWeight;
    activations += r.point.role == Role::kActivation;
  }
  EXPECT_GT(weights, 0);
  EXPECT_GT(activations, 0);
}

// feeds: the activations a conv or linear reads, whatever made them
TEST(Rules, FeedsSelectsWhatConvAndLinearLayersRead) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  auto pts = plan(g, parse_config_string("rules: [{role: [input, activation], feeds: conv, spec: int6}]"));
  std::map<std::string, std::vector<std::string>> feeds;
  int selected = 0;
  for (const auto& r : pts) {
    feeds[r.point.name] = r.point.feeds;
    const bool reads = std::find(r.point.feeds.begin(), r.point.feeds.end(), "conv") != r.point.feeds.end();
    EXPECT_EQ(r.assignment.spec.str() == "int6", reads) << r.point.name;
    selected += reads;
  }
  EXPECT_EQ(feeds["input.0"], std::vector<std::string>{"conv"});
  EXPECT_EQ(feeds["maxpool:out"], std::vector<std::string>{"conv"});
  EXPECT_EQ(feeds["avgpool:out"], std::vector<std::string>{"linear"});  // through flatten
  EXPECT_TRUE(feeds["conv1:out"].empty());  // read by the BatchNorm, not a conv
  EXPECT_TRUE(feeds["fc:out"].empty());
  EXPECT_EQ(feeds.count("conv1.weight"), 1u);
  EXPECT_TRUE(feeds["conv1.weight"].empty());  // a weight feeds nothing as data
  // the input, the max pooling and the ReLU outputs that the convs read
  EXPECT_GE(selected, 10);
  try {
    parse_config_string("rules: [{feeds: bn, spec: int8}]", "c.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("feeds: unknown kind 'bn'"), std::string::npos) << e.what();
  }
}

// the note quantize() returns: layer inputs left float while other activations are quantized
TEST(Rules, FloatLayerInputsListsWhatLayersReadInFloat) {
  ModelGraph g = load_model(fixture("resnet18_trace.pt"));
  const auto relus_only = float_layer_inputs(plan(g, parse_config_string("rules: [{kind: relu, spec: uint8}]")));
  auto has = [&](const std::string& s) { return std::find(relus_only.begin(), relus_only.end(), s) != relus_only.end(); };
  EXPECT_TRUE(has("input.0 (input)"));
  EXPECT_TRUE(has("maxpool:out (pool)"));
  EXPECT_TRUE(has("avgpool:out (pool)"));
  for (const auto& s : relus_only) EXPECT_EQ(s.find("relu"), std::string::npos) << s;
  const std::string note = float_layer_inputs_note(relus_only);
  EXPECT_EQ(note.rfind(std::to_string(relus_only.size()) + " activations that conv", 0), 0u) << note;
  EXPECT_NE(note.find("feeds: [conv, linear, matmul]"), std::string::npos) << note;
  // weights only, or the input only: float activations are what the config means
  EXPECT_TRUE(float_layer_inputs(plan(g, parse_config_string("rules: [{role: weight, spec: int4}]"))).empty());
  EXPECT_TRUE(float_layer_inputs(plan(g, parse_config_string("rules: [{role: input, spec: int8}]"))).empty());
  // the sweep's rule covers them all
  EXPECT_TRUE(float_layer_inputs(plan(g, parse_config_string("rules: [{kind: relu, spec: uint8}, "
                                                             "{role: [input, activation], feeds: [conv, linear], spec: int8}]")))
                  .empty());
}

TEST(Rules, ConfigErrorsNameTheFileLineAndKey) {
  auto expect_error = [](const std::string& text, const std::string& fragment) {
    try {
      parse_config_string(text, "c.yaml");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("rules:\n  - {kind: conv, spc: int8}\n", "c.yaml:2: rules[0]: unknown key 'spc'");
  expect_error("rules:\n  - {kind: convv, spec: int8}\n", "unknown kind 'convv'");
  expect_error("rules:\n  - {kind: conv, spec: int0}\n", "outside 1..16");
  expect_error("rulez: []\n", "unknown key 'rulez'");
  expect_error("rules: [{kind: conv}]\n", "neither 'spec' nor 'calibrator'");
  expect_error("rules: [{kind: conv, spec: int8, position: middle}]\n", "position must be");
  expect_error("rules: [ {kind: conv\n", "not valid YAML");
  expect_error("rules: [{kind: conv, spec: [int8, int4]}]\n", "rules[0]: 'spec' must be a single value");
  expect_error("rules: [{kind: conv, role: [weight, wieght], spec: int8}]\n", "unknown role 'wieght'");
  expect_error("calibrator: [mse]\nrules: [{kind: conv, spec: int8}]\n", "c.yaml:1: 'calibrator' must be one");
  // JSON is accepted
  Config j = parse_config_string(R"({"rules": [{"kind": "conv", "spec": "int4"}]})");
  EXPECT_EQ(j.rules.size(), 1u);
}

TEST(Load, MissingAndCorruptModelFilesGiveOneClearMessage) {
  try {
    load_model("/nonexistent/model.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.pt"), std::string::npos);
  }
  const std::string bad = ::testing::TempDir() + "/corrupt.pt";
  {
    FILE* f = std::fopen(bad.c_str(), "wb");
    std::fputs("not a zip file at all", f);
    std::fclose(f);
  }
  try {
    load_model(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a TorchScript model"), std::string::npos) << e.what();
  }
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace anybit
