// The quantizer node contract; see node.h. The input indices follow the op schemas in
// quant/ops.cc and PyTorch's aten::fake_quantize_per_{tensor,channel}_affine.
#include "anybit/quant/node.h"

#include <torch/csrc/jit/ir/ir.h>

#include <array>
#include <cctype>

namespace anybit {
namespace qnode {
namespace {

OpInfo make(Op op, const char* name) {
  OpInfo i;
  i.op = op;
  i.name = name;
  return i;
}

const std::array<OpInfo, 12>& table() {
  static const std::array<OpInfo, 12> t = [] {
    std::array<OpInfo, 12> a;
    a[0] = make(Op::kNone, "");
    // fake_quant_affine(x, scale, zero_point, axis, group_size, qmin, qmax, rounding, grad_factor)
    OpInfo& affine = a[1] = make(Op::kAffine, "anybit::fake_quant_affine");
    affine.scale = 1, affine.zero_point = 2, affine.axis = 3, affine.group = 4, affine.qmin = 5, affine.qmax = 6;
    affine.rounding = 7, affine.ranges = 1, affine.uniform = true, affine.integer = IntegerForm::kUniform;
    // fake_quant_pact(x, alpha, bits, rounding)
    OpInfo& pact = a[2] = make(Op::kPact, "anybit::fake_quant_pact");
    pact.bits = 2, pact.rounding = 3, pact.integer = IntegerForm::kPact;
    // fake_quant_log(x, hi, num_exponents, axis)
    OpInfo& log = a[3] = make(Op::kLog, "anybit::fake_quant_log");
    log.axis = 3;
    log.no_integer = "logarithmic levels have no integer export: integer hardware needs uniform "
                     "(int/uint/fixed), binary or ternary weights";
    // fake_quant_binary(x, alpha, axis, ste_clip, grad_factor)
    OpInfo& binary = a[4] = make(Op::kBinary, "anybit::fake_quant_binary");
    binary.axis = 2, binary.ranges = 1, binary.integer = IntegerForm::kSign;
    // fake_quant_ternary(x, alpha, delta, axis, ste_clip, grad_factor)
    OpInfo& ternary = a[5] = make(Op::kTernary, "anybit::fake_quant_ternary");
    ternary.axis = 3, ternary.ranges = 2, ternary.integer = IntegerForm::kSign;
    // fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)
    OpInfo& pt = a[6] = make(Op::kAtenPerTensor, "aten::fake_quantize_per_tensor_affine");
    pt.scale = 1, pt.zero_point = 2, pt.qmin = 3, pt.qmax = 4, pt.uniform = true;
    pt.integer = IntegerForm::kUniform;
    // fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)
    OpInfo& pc = a[7] = make(Op::kAtenPerChannel, "aten::fake_quantize_per_channel_affine");
    pc.scale = 1, pc.zero_point = 2, pc.axis = 3, pc.qmin = 4, pc.qmax = 5, pc.ranges = 1, pc.uniform = true;
    pc.integer = IntegerForm::kUniform;
    // fake_quant_minifloat(x, scale, axis, group_size, exp_bits, man_bits, grad_factor)
    OpInfo& mf = a[8] = make(Op::kMinifloat, "anybit::fake_quant_minifloat");
    mf.scale = 1, mf.axis = 2, mf.group = 3, mf.ranges = 1;
    mf.no_integer = "minifloat values have no integer export: the integer engine computes on integer grids "
                    "(int/uint/fixed, binary, ternary)";
    // fake_quant_mx(x, format, axis): scales computed from each block; format [block, exp, man]
    OpInfo& mx = a[9] = make(Op::kMx, "anybit::fake_quant_mx");
    mx.axis = 2;
    mx.integer = IntegerForm::kBinaryGrid;
    mx.no_integer = "MX activations have no integer export: their scales follow each block of the data at run "
                    "time, and the integer engine has one scale per tensor (MX weights export)";
    // fake_quant_nvfp4(x, scale, axis, block): the tensor scale, block scales from each block
    OpInfo& nv = a[10] = make(Op::kNvfp4, "anybit::fake_quant_nvfp4");
    nv.scale = 1, nv.axis = 2;
    nv.no_integer = "NVFP4 has no integer export: its values are FP4 (E2M1) with an E4M3 scale per block of 16";
    // fake_quant_lut(x, scale, levels, axis, group_size, grad_factor): no ranges BatchNorm folding
    // could rescale (a negative factor mirrors an asymmetric codebook such as NF4's)
    OpInfo& lut = a[11] = make(Op::kLut, "anybit::fake_quant_lut");
    lut.scale = 1, lut.levels = 2, lut.axis = 3, lut.group = 4;
    lut.integer = IntegerForm::kCodebook;
    lut.no_integer = "codebook activations have no integer export: the engine's requantization rounds to every "
                     "integer of the range, not only to the levels (codebook weights with integer levels export)";
    return a;
  }();
  return t;
}

const std::string kPrefix = "anybit__";

}  // namespace

const OpInfo& info(Op op) { return table()[static_cast<size_t>(op)]; }

Op op_of(const torch::jit::Node* n) {
  // the ops' symbols, interned once (op_of runs for every node of every pass that asks)
  static const std::array<c10::Symbol, 12> symbols = [] {
    std::array<c10::Symbol, 12> a;
    for (size_t i = 1; i < a.size(); ++i) a[i] = c10::Symbol::fromQualString(table()[i].name);
    return a;
  }();
  const c10::Symbol k = n->kind();
  for (size_t i = 1; i < symbols.size(); ++i)
    if (k == symbols[i]) return table()[i].op;
  return Op::kNone;
}

std::string attribute_prefix(const std::string& point) {
  std::string out = kPrefix;
  for (char c : point) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

std::string attribute(const std::string& point, const std::string& what) {
  return attribute_prefix(point) + "__" + what;
}

std::string what_of(const std::string& name) {
  const size_t leaf = name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1;
  if (name.compare(leaf, kPrefix.size(), kPrefix) != 0) return "";
  const size_t sep = name.rfind("__");
  if (sep == std::string::npos || sep < leaf + kPrefix.size()) return "";
  return name.substr(sep + 2);
}

std::string sibling(const std::string& name, const std::string& what) {
  if (what_of(name).empty()) return "";
  return name.substr(0, name.rfind("__") + 2) + what;
}

bool is_range_parameter(const std::string& name) {
  const std::string w = what_of(name);
  return w == "scale" || w == "clip" || w == "alpha" || w == "delta";
}

}  // namespace qnode
}  // namespace anybit
