// anybit's top-level C++ API: quantize a TorchScript model by config rules, calibrate
// it on data (this header), evaluate it (runtime/evaluate.h), save it (graph/graph.h).
// The CLI and the Python package call these and api/pipeline.h.
//
//   anybit::ModelGraph g = anybit::load_model("model.pt");
//   anybit::Config c = anybit::parse_config_file("w4a4.yaml");
//   auto data = anybit::open_data("fmnist:/usr/share/datasets/fashion-mnist:train");
//   anybit::QuantizeResult q = anybit::quantize(std::move(g), c, data.get(), {});
//   anybit::save_module(q.model.module, "model_w4a4.pt");
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "anybit/graph/graph.h"
#include "anybit/graph/rules.h"
#include "anybit/runtime/evaluate.h"
#include "anybit/source/data_source.h"

namespace anybit {

struct QuantizeOptions {
  int64_t calib_batches = 8;
  int64_t batch_size = 128;
  bool portable = false;  // only stock aten::fake_quantize_* ops: loads without anybit
  bool progress = true;
  // AdaRound the symmetric int weights after calibration (0 = round to nearest);
  // see ptq/adaround.h. Needs calibration data.
  int adaround_iterations = 0;
  int64_t adaround_samples = 512;
  // Block reconstruction (BRECQ with QDrop; ptq/brecq.h) instead of AdaRound: learn the
  // rounding of the symmetric int weights and the steps of the activation quantizers
  // block by block, N iterations per block (0 = off). Needs calibration data.
  int brecq_iterations = 0;
  int64_t brecq_samples = 1024;
  double brecq_drop_prob = 0.5;    // QDrop probability (0 = plain BRECQ)
  bool brecq_drop_inside = true;   // QDrop at the block's activation quantizers, else at its input
  // a checkpoint after every block in this directory; with brecq_resume, a killed run
  // continues at the next block (BrecqOptions::checkpoint_dir)
  std::string brecq_checkpoint_dir;
  bool brecq_resume = false;
  // GPTQ (ptq/gptq.h) instead: the symmetric int conv/linear weights quantized column by
  // column from each layer's input Hessian, in layer order. Needs calibration data.
  bool gptq = false;
  int64_t gptq_samples = 0;  // calibration samples whose layer inputs form H (0: calib_batches x batch_size)
  double gptq_damp = 0.01;
  bool gptq_act_order = true;
  // fit the float model's layer outputs (GptqOptions::asymmetric); false: the paper's
  // objective, the quantized input through the layer's own float weight
  bool gptq_float_target = true;
  // empirical bias correction after weight quantization (ptq/bias_correction.h)
  bool bias_correction = false;
  // Quantize every conv/linear bias whose input and weight are uniformly quantized the
  // way integer hardware adds it: int32 at s_in * s_w (round(b / (s_in * s_w)) * s_in * s_w,
  // straight-through gradient; Brevitas's Int32Bias). The fake-quantized model then
  // differs from the integer export (export/export.h) only by the dyadic rounding.
  bool int32_bias = false;
  // A quantizer whose spec (not its calibrator) leaves more than this share of the
  // calibration values outside its range gets a clipping warning (PointReport::clip_warning):
  // an unsigned quantizer with a zero point of 0 seeing negative values, a fixed-point
  // format narrower than the data. With `strict`, any such warning is an Error instead, and
  // so is an op that computes linear algebra without points (ModelGraph::uncovered).
  double clip_warn_share = 0.01;
  bool strict = false;
  // where the calibration passes run (quant/device.h parse_device); the statistics are kept,
  // and the parameters computed, on the CPU, and the quantized model is returned there.
  // AdaRound, BRECQ, GPTQ and bias correction run on it too (their random draws come from
  // CPU generators: a seed draws the same samples on any device).
  c10::Device device = c10::kCPU;
};

// What one point got: spec, calibrator and the quantizer parameters chosen.
struct PointReport {
  PointDesc point;
  Assignment assignment;
  std::string params;  // e.g. "scale=0.0123 zp=0" or "per-channel scale 0.001..0.02"
  bool portable = true;
  std::string first_param;  // name of its first parameter tensor on the root module
  // the spec as the rules gave it when calibration chose the sign (`auto8`); empty otherwise
  std::string auto_spec;
  // shares of the calibration values below / above the quantizer's representable range
  // (activations and inputs with a uniform spec; -1 where not measured). The calibrator's
  // own choice of range counts too: MSE clips a little on purpose.
  double clipped_low = -1, clipped_high = -1;
  // set when the spec itself clips more than QuantizeOptions::clip_warn_share: names the
  // point, the share, the data's range and a spec that would not clip
  std::string clip_warning;
};

// The point's description (graph/point.h) and {spec, bits, calibrator, rule, params_chosen
// (the parameters' summary)[, auto_spec][, clipped_low, clipped_high][, clip_warning]}
void to_json(nlohmann::json& j, const PointReport& r);

struct QuantizeResult {
  ModelGraph model;
  std::vector<PointReport> points;
  // per AdaRounded layer: reconstruction MSE with nearest rounding and with AdaRound
  std::vector<std::tuple<std::string, double, double>> adaround;
  // per reconstructed block: its objective with nearest rounding and calibrated steps,
  // and with BRECQ (equal where nearest rounding was kept), and the seconds one learning
  // iteration took (0 for a block restored from its checkpoint)
  std::vector<std::tuple<std::string, double, double, double>> brecq;
  // per GPTQ'd layer: the layer output's error (tr(D H D^T) / rows) with nearest rounding and
  // with GPTQ (equal where nearest was kept); gptq_skipped: "layer: why" for layers left at nearest
  std::vector<std::tuple<std::string, double, double>> gptq;
  std::vector<std::string> gptq_skipped;
  // the clip_warning of every point that has one, in point order
  std::vector<std::string> clipping;
  // see float_layer_inputs() below
  std::vector<std::string> float_layer_inputs;
  // Input points a rule quantizes whose calibration data are integers (token ids): left
  // unquantized (integer_inputs_note() below); the CLI prints the note, Python warns.
  std::vector<std::string> integer_inputs;
};

// "name (kind)" of each activation or input that a conv, linear or matmul layer reads
// (PointDesc::feeds) and the plan leaves float, when the plan quantizes some activation
// inside the network (a weight-only or input-only config means them to stay float); empty
// otherwise. quantize() fills QuantizeResult::float_layer_inputs with it.
std::vector<std::string> float_layer_inputs(const std::vector<PointReport>& plan);
// The one-line note the front ends print (CLI) or warn (Python) for a non-empty list.
std::string float_layer_inputs_note(const std::vector<std::string>& float_reads);

std::string integer_inputs_note(const std::vector<std::string>& inputs);

// Resolves the rules on the model's points (same as the first step of quantize).
std::vector<PointReport> plan(const ModelGraph& g, const Config& config);

// Rewrites g's forward graph in place: each point whose spec is not float gets its
// quantizer, with parameters calibrated on `calib` (may be null when only weights,
// fixed-point or binary points are quantized).
QuantizeResult quantize(ModelGraph g, const Config& config, const DataSource* calib,
                        const QuantizeOptions& options);

}  // namespace anybit
