// The quantizer node contract (node.h): the table's input indices are those of the ops'
// registered schemas, graph nodes are recognized by op, and parameter names round-trip.
#include "anybit/quant/node.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/irparser.h>

#include <string>

namespace anybit {
namespace {

using qnode::Op;

// The name of argument i of the op's registered schema.
std::string arg(const qnode::OpInfo& i, int index) {
  const std::string full = i.name;
  const auto op = c10::Dispatcher::singleton().findSchema({full, ""});
  EXPECT_TRUE(op.has_value()) << full;
  if (!op) return "";
  const auto& args = op->schema().arguments();
  EXPECT_LT(static_cast<size_t>(index), args.size()) << full;
  return static_cast<size_t>(index) < args.size() ? args[index].name() : "";
}

TEST(QuantizerNode, TheTableNamesTheInputsTheSchemasHave) {
  const Op ops[] = {Op::kAffine, Op::kPact, Op::kLog, Op::kBinary, Op::kTernary, Op::kAtenPerTensor,
                    Op::kAtenPerChannel, Op::kMinifloat, Op::kMx, Op::kNvfp4,
                    Op::kLut};
  for (Op op : ops) {
    const qnode::OpInfo& i = qnode::info(op);
    EXPECT_EQ(i.op, op);
    if (i.scale >= 0) EXPECT_EQ(arg(i, i.scale), "scale") << i.name;
    if (i.zero_point >= 0) EXPECT_EQ(arg(i, i.zero_point), "zero_point") << i.name;
    if (i.axis >= 0) EXPECT_EQ(arg(i, i.axis), "axis") << i.name;
    if (i.group >= 0) EXPECT_EQ(arg(i, i.group), "group_size") << i.name;
    if (i.qmin >= 0) EXPECT_EQ(arg(i, i.qmin), "quant_min") << i.name;
    if (i.qmax >= 0) EXPECT_EQ(arg(i, i.qmax), "quant_max") << i.name;
    if (i.bits >= 0) EXPECT_EQ(arg(i, i.bits), "bits") << i.name;
    if (i.rounding >= 0) EXPECT_EQ(arg(i, i.rounding), "rounding") << i.name;
  }
  // the ranges BatchNorm folding rescales
  EXPECT_EQ(arg(qnode::info(Op::kBinary), 1), "alpha");
  EXPECT_EQ(arg(qnode::info(Op::kTernary), 2), "delta");
  EXPECT_EQ(qnode::info(Op::kTernary).ranges, 2);
}

TEST(QuantizerNode, NodesAreRecognizedByTheirOp) {
  auto g = std::make_shared<torch::jit::Graph>();
  torch::jit::parseIR(R"IR(
graph(%x : Tensor, %s : Tensor, %z : Tensor):
  %a : int = prim::Constant[value=-1]()
  %q0 : int = prim::Constant[value=0]()
  %lo : int = prim::Constant[value=-8]()
  %hi : int = prim::Constant[value=7]()
  %f : float = prim::Constant[value=1.0]()
  %y : Tensor = anybit::fake_quant_affine(%x, %s, %z, %a, %q0, %lo, %hi, %q0, %f)
  %w : Tensor = aten::fake_quantize_per_channel_affine(%y, %s, %z, %q0, %lo, %hi)
  %r : Tensor = aten::relu(%w)
  return (%r)
)IR",
                         g.get());
  std::vector<Op> found;
  for (const torch::jit::Node* n : g->nodes())
    if (qnode::is_quantizer(n)) found.push_back(qnode::op_of(n));
  EXPECT_EQ(found, (std::vector<Op>{Op::kAffine, Op::kAtenPerChannel}));
}

TEST(QuantizerNode, ParameterNamesRoundTrip) {
  const std::string s = qnode::attribute("layer1.0:add:out", "scale");
  EXPECT_EQ(s, "anybit__layer1_0_add_out__scale");
  EXPECT_EQ(qnode::what_of(s), "scale");
  EXPECT_EQ(qnode::sibling(s, "zero_point"), "anybit__layer1_0_add_out__zero_point");
  EXPECT_EQ(qnode::what_of("sub.anybit__fc_weight__alpha"), "alpha");  // with a module path
  EXPECT_TRUE(qnode::is_range_parameter("anybit__x__clip"));
  EXPECT_FALSE(qnode::is_range_parameter("anybit__x__zero_point"));
  EXPECT_FALSE(qnode::is_range_parameter("layer1.0.conv1.weight"));
  EXPECT_EQ(qnode::what_of("fc.bias"), "");
  EXPECT_EQ(qnode::what_of("anybit__"), "");
  EXPECT_EQ(qnode::sibling("fc.weight", "scale"), "");
  // a point name ending in '_' keeps its parameter readable
  EXPECT_EQ(qnode::what_of(qnode::attribute("x_", "delta")), "delta");
}

}  // namespace
}  // namespace anybit
