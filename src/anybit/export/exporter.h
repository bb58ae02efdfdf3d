// The integer exporter's walker (export.h): internal to export.cc (reading the graph,
// quantizers, names) and export_ops.cc (lowering each op). See export.cc for how it works.
#pragma once

#include "anybit/export/export.h"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "anybit/graph/graph.h"
#include "anybit/intsim/kernels.h"
#include "anybit/intsim/requantize.h"
#include "anybit/quant/node.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace exporter {
namespace jit = torch::jit;
using intsim::DyadicMultiplier;
using intsim::IntArray;
using intsim::Op;
using intsim::OpKind;
using intsim::QuantParams;

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// Parameters read off one quantizer node.
struct Quantizer {
  std::string kind;             // node kind, "anybit::fake_quant_affine"
  std::string point;            // point name, "" if the model does not say
  std::vector<double> scale;    // 1 (per tensor) or C (per channel), float32 values
  std::vector<int32_t> zero_point;
  int32_t qmin = 0, qmax = 0;
  int64_t axis = -1;
  bool two_level_sign = false;  // binary / ternary: levels are multiples of alpha
  // weights only (OpInfo::no_integer says why not as activations): MX, whose per-channel
  // steps read_weight finds in the values, and integer codebooks
  bool weights_only = false;
  std::string weights_only_why;  // the message for its use as an activation
  std::string no_weights;        // the message for its use as a weight ("" when it exports)
  bool binary_grid = false;
};

// The exponent of v's lowest set bit: v = odd * 2^k (v != 0, a float32 value as a double).
int lowest_bit_exponent(double v);

// The step d of codebook levels l[0, n) (sorted, stored as float32) that makes every l / d
// an integer of at most 16 bits (up to float32's rounding: |l / d - round| <= 1e-4), the
// largest such of a few candidates (the smallest gap between levels and the smallest
// nonzero |level|, divided by 1..4); 0 when none does (NF4's levels, k-means levels).
double codebook_step(const double* l, int64_t n);

// The largest power of two that every value of v[0, n) is an integer multiple of (1 when
// all are 0).
double binary_grid_step(const double* v, int64_t n);

struct IntTensor {
  std::string name;
  QuantParams q;
  std::vector<int64_t> shape;  // without the batch
};

struct Pending {
  Op op;
  std::vector<int64_t> shape;
  std::string what;            // for messages: "conv layer1.0.conv1"
  // conv/linear: real output[o] = acc_scale[o] * sum (x - zx)(w - zw) + bias_real[o]
  std::vector<double> acc_scale;
  std::vector<double> bias_real;
  bool has_bias = false;
  // add, concat, pools: the inputs' quantization
  std::vector<QuantParams> ins;
  int64_t count = 1;           // pools: elements summed per output
  std::vector<int64_t> counts; // adaptive pools: elements summed per output position
  double lo = -kInf, hi = kInf;  // ReLU / ReLU6 / clamp folded before the quantizer
  bool flatten_after = false;  // mean(dim=[2,3]) without keepdim
};

std::vector<double> tensor_values(const at::Tensor& t);

std::vector<double> float32_values(const at::Tensor& t);

class Exporter {
 public:
  Exporter(const torch::jit::Module& quantized, const ExportOptions& options)
      : options_(options) {
    torch::jit::Module m = quantized.clone();
    m.eval();
    if (m.hasattr("anybit_points"))
      for (const auto& kv : m.attr("anybit_points").toGenericDict())
        param_point_[kv.key().toStringRef()] = kv.value().toStringRef();
    if (param_point_.empty())
      throw Error("the model has no anybit quantizers: quantize it first (anybit quantize)");
    g_ = analyze_module(m);
    specialize_fixed_ifs(g_, /*include_training=*/true);
    self_ = g_.graph->inputs().at(0);
    // A saved quantized model's graph has lost its module scopes (re-analyzed, its ops would be
    // named `conv:out`, `bn:out`): values are named by the quantizer that reads them, whose
    // parameters carry the point name the user knows (`features.3:out`).
    for (jit::Node* n : g_.graph->nodes()) {
      if (!is_quantizer(n)) continue;
      const std::string point = quantizer_point(n);
      if (!point.empty() && !value_point_.count(n->input(0))) value_point_[n->input(0)] = point;
    }
  }

  ExportResult run();

 private:
  // ---- reading values --------------------------------------------------------------

  c10::IValue eval(jit::Value* v);
  std::vector<int64_t> eval_ints(jit::Value* v, size_t expand_to = 2);
  std::string where(jit::Node* n);

  // ---- quantizers ------------------------------------------------------------------

  static bool is_quantizer(jit::Node* n) { return qnode::is_quantizer(n); }

  // the point a quantizer node belongs to, from its parameters' attribute names ("" if none)
  std::string quantizer_point(jit::Node* n) const;
  std::string point_of(jit::Node* n);
  Quantizer read_quantizer(jit::Node* n);
  // An activation quantizer as tensor parameters (one scale, one zero point).
  QuantParams activation_params(const Quantizer& fq);

  // ---- names -------------------------------------------------------------------------

  std::string unique_op_name(std::string base);
  std::string unique_tensor_name(std::string base);
  std::string op_name(jit::Node* n, const std::string& fallback);

  // ---- graph walk --------------------------------------------------------------------

  const IntTensor& need_int(jit::Value* v, jit::Node* user);
  static bool carries_tensor(const c10::TypePtr& t);

  bool tracked(jit::Value* v) const { return ints_.count(v) || pending_.count(v) || raw_inputs_.count(v); }

  void visit(jit::Node* n);
  void alias(jit::Value* to, jit::Value* from);
  void on_quantizer(jit::Node* n);
  std::vector<int64_t> input_shape();
  // Quantized weight of a conv/linear: integers, scales, zero points, read off its quantizer.
  void read_weight(jit::Node* user, jit::Value* wv, Op* op, std::vector<double>* w_scale);
  void start_layer(jit::Node* n, jit::Value* xv, jit::Value* wv, jit::Value* bv, Pending* p);
  void on_conv(jit::Node* n, bool underscore);
  void on_linear(jit::Node* n);
  void on_batch_norm(jit::Node* n);
  void on_clamp(jit::Node* n, double lo, double hi);
  void on_add(jit::Node* n);
  void on_maxpool(jit::Node* n);
  Pending pool(jit::Node* n, OpKind kind, const IntTensor& t);
  void on_avgpool(jit::Node* n);
  void global_pool(jit::Node* n, const IntTensor& t, bool flatten_after);
  // Any output size: 1x1 is the global pool, the input's own size the identity, and every
  // other size an adaptive_avgpool2d, whose windows (PyTorch's, overlapping where the sizes
  // do not divide) differ in size: each output position gets the multiplier of its count.
  void on_adaptive_avgpool(jit::Node* n);
  void on_mean(jit::Node* n);
  void on_flatten(jit::Node* n);
  void on_cat(jit::Node* n);
  // Closes a pending op with its output quantization.
  IntTensor finalize(Pending p, QuantParams q, const std::string& tensor_name);
  void add_output(jit::Value* v);

  ExportOptions options_;
  ModelGraph g_;
  jit::Value* self_ = nullptr;
  std::map<std::string, std::string> param_point_;  // first quantizer parameter -> point
  std::map<jit::Value*, std::string> value_point_;  // activation value -> point
  std::set<jit::Value*> raw_inputs_;
  std::map<jit::Value*, IntTensor> ints_;
  std::map<jit::Value*, Pending> pending_;
  std::set<std::string> op_names_, tensor_names_;
  ExportResult result_;
};

}  // namespace exporter
}  // namespace anybit
