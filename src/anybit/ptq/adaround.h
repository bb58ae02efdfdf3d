// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
// Quantization"): learn, layer by layer, whether each weight rounds up or down so that
// the layer's output on calibration data matches the float layer's output.
//
//   W~ = s * clamp(floor(W / s) + h(V), qmin, qmax),  h(V) = clamp(sigmoid(V)(zeta - gamma) + gamma, 0, 1)
//   min_V || layer(x_q; W~) - layer_float(x_fp) ||^2 + lambda * sum (1 - |2 h(V) - 1|^beta)   (eq. 21-25)
//
// with zeta = 1.1, gamma = -0.1, beta annealed from 20 to 2 after a 20% warm-up without
// the regularizer, Adam. x_q is the layer's input in the quantized model with the
// earlier layers already rounded (the paper's asymmetric reconstruction), x_fp the float
// model's. The learned rounding is written back into the weight, exactly on the grid.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "anybit/graph/graph.h"

namespace anybit {

class DataSource;

struct AdaRoundOptions {
  int iterations = 3000;
  int64_t batch_size = 32;    // samples per optimization step
  int64_t samples = 512;      // calibration samples whose activations are kept
  double learning_rate = 1e-3;
  double reg_weight = 0.01;   // lambda
  bool progress = true;
};

// One weight to round: the consuming op in the quantized graph, the same op in the float
// graph, and the weight's per-channel (or per-tensor) grid.
struct AdaRoundLayer {
  std::string name;
  torch::jit::Node* qnode = nullptr;
  torch::jit::Node* fnode = nullptr;
  std::string weight_path;  // attribute path of the weight on the root module
  at::Tensor scale;         // [C] or [1]
  int64_t qmin = 0, qmax = 0;
  int channel_axis = 0;
  int64_t group = 0;  // per-group scales: elements per group (GPTQ only)
};

// One weight's learned rounding, the parametrization of AdaRound (eq. 22-24), shared by
// adaround() and block reconstruction (brecq.h). Built from the layer's current weight w
// and grid: s broadcast over w, floor(w / s), and V with h(V) = w / s - floor(w / s), so
// that soft() starts at the float weight (clamped to the grid's range).
struct LearnedRounding {
  at::Tensor w, s, w_floor, v;  // v requires grad
  double qmin = 0, qmax = 0;

  LearnedRounding(const at::Tensor& weight, const AdaRoundLayer& layer);
  // h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1), zeta = 1.1, gamma = -0.1
  at::Tensor h() const;
  // s * clamp(floor(w / s) + h, qmin, qmax): the weight the optimization sees
  at::Tensor soft(const at::Tensor& h) const;
  // lambda's term without lambda: sum (1 - |2 h - 1|^beta)
  static at::Tensor regularizer(const at::Tensor& h, double beta);
  // the learned rounding made hard (up where V >= 0), and round-to-nearest, on the grid
  at::Tensor hard() const;
  at::Tensor nearest() const;
};

struct AdaRoundReport {
  std::string name;
  double mse_nearest = 0, mse_adaround = 0;  // reconstruction error on the kept samples
};

std::vector<AdaRoundReport> adaround(ModelGraph& quantized, ModelGraph& reference,
                                     std::vector<AdaRoundLayer> layers, const DataSource& calib,
                                     const AdaRoundOptions& options);

}  // namespace anybit
