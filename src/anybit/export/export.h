// From a quantized TorchScript model to the integers hardware computes.
//
//   torch::jit::Module q = anybit::load_module("model_w8a8.pt");   // as anybit saved it
//   anybit::ExportResult r = anybit::export_integer_model(q, {});
//   anybit::intsim::save_model(r.model, "model_int");             // manifest.json + .npy
//
// The exporter walks the model's inlined forward graph and turns every quantized conv,
// linear, residual add, pooling, ReLU/ReLU6, flatten and concat into an op of the integer
// format (docs/integer-format.md): integer weights read off the weight quantizer, int32
// biases at s_in * s_w, one dyadic multiplier per output channel from s_in * s_w / s_out,
// the quantizer after an op (or after its ReLU) as the op's output quantization.
// BatchNorm left in the graph is folded into the multiplier and the bias.
//
// What the integer model computes equals the fake-quantized model up to the roundings
// integer hardware makes (the int32 bias, the dyadic multiplier's 31-bit mantissa):
// `run_integer_reference` runs the exported model with LibTorch ops (exact integer
// convolutions in double precision, vectorized dyadic requantization) as an independent
// twin of the integer engine (src/anybit/intsim), which must agree with it bit for bit.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "anybit/intsim/engine.h"
#include "anybit/intsim/model.h"

namespace torch {
namespace jit {
struct Module;
}
}  // namespace torch

namespace anybit {

struct ExportOptions {
  // Shape of the model input without the batch ([C, H, W]); empty: the shape anybit
  // recorded when it calibrated the model (attribute `anybit_input_shape`).
  std::vector<int64_t> input_shape;
  std::string source;  // written to the manifest's metadata ("model.pt")
};

struct ExportResult {
  intsim::Model model;
  // Notes for the user, e.g. "fc:out is not quantized: exported as int32 at s_in * s_w".
  std::vector<std::string> notes;
};
// {op_count, ops: {kind: count}, notes, inputs, outputs: [{name, shape, scale, zero_point, qmin,
// qmax}]} (graph/point.h); `export --json` and Python add where it was written.
void to_json(nlohmann::json& j, const ExportResult& r);

// Throws anybit::Error naming the point or op that has no integer form (a float tensor
// feeding a conv, a log or binary activation quantizer, an unsupported op).
ExportResult export_integer_model(const torch::jit::Module& quantized, const ExportOptions& options);

// Writes an integer model to `dir` through a temporary sibling directory renamed over it, so an
// interrupted export never leaves a half-written model. `dir` is replaced only when it is empty
// or holds an earlier export (manifest.json); anything else is refused (anybit::Error naming it).
// The CLI's `export -o` and Python's `anybit.export` write through it.
void save_integer_model_atomic(const intsim::Model& model, const std::string& dir);

// The exported model run with LibTorch ops on integer inputs ([N, ...] int tensors, one
// per model input); returns the integer outputs (int32). Assumes a 32-bit accumulator
// that never overflows and throws Error if one would.
std::vector<at::Tensor> run_integer_reference(const intsim::Model& model,
                                              const std::vector<at::Tensor>& inputs);

// The input quantizer applied to float inputs: q = clamp(round(x / s) + z, qmin, qmax),
// computed as x * (1/s) in float32 like the fake-quantized model.
at::Tensor quantize_input(const at::Tensor& x, const intsim::QuantParams& q);
// An integer tensor as the engine takes it (values converted to int32, shape kept).
intsim::Tensor to_engine_tensor(const at::Tensor& q);

class DataSource;

// Throws Error when `mac` needs calibration data (adc:range=auto) and `calib` is null.
void require_mac_calibration_data(const intsim::MacModel& mac, const DataSource* calib);

struct IntegerEvalOptions {
  int64_t batch_size = 100;
  bool progress = true;
  intsim::EngineOptions engine;  // accumulator, MAC model, kernel path
  // A MAC model that needs calibration (adc:range=auto) is calibrated on the first
  // calib_samples images of calib_data (Engine::calibrate); without it, an Error.
  const DataSource* calib_data = nullptr;
  int64_t calib_samples = 256;
};

// How close one quantized tensor of the engine is to the fake-quantized model's: the share
// of its integers equal to, and one step away from, the reference's value quantized with the
// tensor's parameters, and the largest distance in steps.
struct LayerAgreement {
  std::string point;  // the quantization point, e.g. "layer1.conv2:out"
  double equal = 0, one_step = 0;
  int64_t max_steps = 0;
};

struct IntegerEvalResult {
  int64_t samples = 0;
  double top1 = 0, top5 = 0;
  double seconds = 0;  // the engine only (quantizing the input included)
  // Against the fake-quantized model (when given): share of equal argmax, and of output
  // values whose integer (the reference's output quantized with the output's parameters)
  // is equal / one step away / further from the engine's.
  double agreement = -1;
  double equal = -1, one_step = -1, more = -1;
  int64_t max_steps = 0;
  // Per quantized tensor, in the engine's order, on the first batch (with a reference).
  std::vector<LayerAgreement> layer_agreement;
  std::vector<intsim::LayerStats> layers;
};
// {samples, top1, top5, seconds[, agreement, outputs_equal, outputs_one_step, outputs_more,
// max_steps, layer_agreement: [{point, equal, one_step, max_steps}] (with a reference)], layers}
// (graph/point.h); `intsim --json` adds the model, data and engine, Python the engine.
void to_json(nlohmann::json& j, const IntegerEvalResult& r);
namespace intsim {
// {name, op, fast_path, dot_products, overflows, mean_abs_error, max_abs_error, clipped}
void to_json(nlohmann::json& j, const LayerStats& l);
}  // namespace intsim

// Runs the integer engine over a labelled data set (inputs quantized with the model's
// input quantizer). Throws Error for a model with other than one input and one output.
IntegerEvalResult evaluate_integer(const intsim::Model& model, const DataSource& data,
                                   const IntegerEvalOptions& options,
                                   torch::jit::Module* fake_quant_reference = nullptr);

}  // namespace anybit
