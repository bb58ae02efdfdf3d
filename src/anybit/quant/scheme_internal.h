// What scheme.cc (the integer, logarithmic and sign schemes, and the dispatch) and
// scheme_formats.cc (the float formats and codebooks) share. Internal to quant/.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/jit/ir/ir.h>

#include <string>
#include <vector>

#include "anybit/calib/calibrator.h"
#include "anybit/quant/node.h"
#include "anybit/quant/scheme.h"

namespace anybit {
namespace scheme {
namespace detail {

// A quantizer op node with `inputs`, inserted at the graph's insertion point.
torch::jit::Value* insert_op(torch::jit::Graph& graph, qnode::Op op, std::vector<torch::jit::Value*> inputs);

template <typename T>
torch::jit::Value* constant(const Site& site, T v) {
  return site.graph->insertConstant(v);
}

// The calibrator's method, or an Error naming `where`.
calib::MethodSpec method_of(const std::string& calibrator, const std::string& where);
// The calibration target of a uniform spec (the grid a range is searched for).
calib::QuantTarget target_of(const QuantSpec& spec);
// The shares of the observed values outside the representable range of a uniform quantizer with
// scale s and zero point z.
void measure_clipping(const QuantSpec& spec, const calib::Observer& obs, float s, float z, Params* P);
// The shares of the observed values outside [-top, top] (the symmetric formats' range).
void measure_symmetric_clipping(const calib::Histogram& h, double top, Params* P);
// max|range| of the calibrator's symmetric range for the formats symmetric around zero but not
// an integer grid.
double symmetric_clip(const calib::Observer& obs, const calib::MethodSpec& method);
// "scale 0.001..0.02 (64 channels)": the summary of per-channel or per-group scales.
std::string scales_summary(const QuantSpec& spec, const at::Tensor& s);
std::string percent(double share);

bool never_portable(const QuantSpec&);
bool always_needs_data(const QuantSpec&);
bool never_needs_data(const QuantSpec&);

// The entries of scheme_formats.cc.
extern const Entry kMinifloat, kMx, kNvfp4, kNf4, kLut;

}  // namespace detail
}  // namespace scheme
}  // namespace anybit
