// The quantizer node contract, in one place: which graph ops are fake-quantizers (anybit's
// own and PyTorch's stock ones), what each of their inputs means, and how their parameters
// are named on the module (docs/design.md, "Quantizer nodes"). The passes that build,
// recognize or rewrite quantizers (quantize, export, fused evaluation, BatchNorm folding,
// BRECQ, fine-tuning) ask here instead of matching op names and attribute strings.
#pragma once

#include <string>

namespace torch {
namespace jit {
struct Node;
}  // namespace jit
}  // namespace torch

namespace anybit {
namespace qnode {

enum class Op { kNone, kAffine, kPact, kLog, kBinary, kTernary, kAtenPerTensor, kAtenPerChannel, kMinifloat,
                kMx, kNvfp4, kLut };

// The integer form export gives a quantizer op (export/export.cc reads its parameters by it).
enum class IntegerForm {
  kNone,     // none: OpInfo::no_integer says why
  kUniform,  // q = clamp(round(x / s) + z, qmin, qmax) from scale, zero_point, qmin, qmax, axis
  kPact,     // uniform on [0, clip], s = clip / (2^bits - 1), z = 0
  kSign,     // two or three levels alpha * {-1, (0,) 1} per channel
  // weights only: every value an integer times a power of two (MX: int8 or minifloat
  // elements times the block's E8M0 scale); per output channel, the integers on the
  // channel's finest power of two
  kBinaryGrid,
  // weights only: levels that are integers times a step (lut2:levels=-3/-1/1/3), times the
  // scale: a uniform grid of which the weights take only the levels
  kCodebook,
};

// The inputs of a quantizer op (input 0 is always the value quantized); -1 where the op
// has no such input.
struct OpInfo {
  Op op = Op::kNone;
  const char* name = "";  // the graph op, e.g. "anybit::fake_quant_affine"
  int scale = -1;         // the uniform step: a tensor ([1] or [C]) or, per tensor in aten's op, a number
  int zero_point = -1;
  int axis = -1;          // the channel axis (-1 in the graph: per tensor)
  int group = -1;         // the group size (0: none)
  int qmin = -1, qmax = -1;
  int bits = -1;          // PACT: the bit width (its range is [0, 2^bits - 1])
  int rounding = -1;      // the rounding mode (fake_quant.h)
  int levels = -1;        // a codebook's levels ([L] or [C, L])
  // inputs 1..ranges are ranges that scale with the weight: what BatchNorm folding rescales
  // per output channel (the step; binary's alpha; ternary's alpha and threshold)
  int ranges = 0;
  bool uniform = false;   // x^ = s * (clamp(round(x / s) + z, qmin, qmax) - z)
  IntegerForm integer = IntegerForm::kNone;
  const char* no_integer = "";  // kNone: why there is no integer form
};

const OpInfo& info(Op op);
Op op_of(const torch::jit::Node* n);  // Op::kNone for any other op
inline bool is_quantizer(const torch::jit::Node* n) { return op_of(n) != Op::kNone; }

// Parameters live on the root module as "anybit__<point>__<what>", the point's name with
// every character other than a letter or digit made '_'; <what> is scale, zero_point (a
// uniform grid), clip (PACT), hi (logarithmic), alpha, delta (binary, ternary), levels
// (codebooks), format (MX). Every quantizer node reads at least one of them: that is how the
// export and the reports name its point.
std::string attribute_prefix(const std::string& point);  // "anybit__layer1_0_conv1_weight"
std::string attribute(const std::string& point, const std::string& what);
// What a parameter name holds ("scale"), "" if it is not a quantizer parameter. `name` may
// carry a module path ("sub.anybit__x__scale").
std::string what_of(const std::string& name);
// The same point's parameter `what` ("" if name is not a quantizer parameter).
std::string sibling(const std::string& name, const std::string& what);
// A step or range (scale, clip, alpha, delta) that training keeps positive.
bool is_range_parameter(const std::string& name);

}  // namespace qnode
}  // namespace anybit
