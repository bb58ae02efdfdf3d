// GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, ICLR 2023, "GPTQ: Accurate Post-Training
// Quantization for Generative Pre-trained Transformers"; reference code IST-DASLab/gptq,
// gptq.py `fasterquant`): quantize a layer's weight one input column at a time and move
// each column's rounding error onto the columns not yet quantized, weighted by the inverse
// of the layer input's Hessian H = 2 X X^T (the optimal brain surgeon update of OBQ, in the
// Cholesky form with lazy batches of columns).
//
//   H += damp * mean(diag H) * I;  U = chol(H^-1) upper
//   for each column j (in decreasing diag(H) order with act_order):
//     q_j = s * clamp(round(w_j / s), qmin, qmax);  e = (w_j - q_j) / U_jj
//     w_k -= e * U_jk  for the columns k after j
//
// X is the layer's input in the quantized model with the earlier layers already done (the
// paper's sequential order); conv inputs are unfolded (im2col), per group of a grouped conv.
// The grid (scale per output channel or per tensor) is the one calibration chose; GPTQ only
// decides the integers. Layers GPTQ cannot unfold (transposed or non-2-D convs) keep
// round-to-nearest and are reported.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "anybit/graph/graph.h"
#include "anybit/ptq/adaround.h"

namespace anybit {

class DataSource;

struct GptqOptions {
  int64_t samples = 512;  // calibration samples whose layer inputs form H
  double damp = 0.01;     // dampening: damp * mean(diag H) added to the diagonal
  bool act_order = true;  // quantize the columns with the largest diag(H) first
  int64_t block = 128;    // columns per lazy batch
  // fit the float layer's output, not the quantized input's: GPTQ runs on the weight that
  // maps the quantized input closest to the float layer's output (see gptq())
  bool asymmetric = true;
  // the float inputs of several layers are captured in one pass, up to this many bytes
  int64_t float_cache_bytes = int64_t{1} << 30;
  bool progress = true;
};

struct GptqReport {
  std::string name;
  double err_nearest = 0, err_gptq = 0;  // tr((Q - W) H (Q - W)^T) / rows: the layer output's squared error
  std::string skipped;                   // why the layer kept round-to-nearest ("" if it did not)
};

// One weight matrix W [rows, cols] on the grid (qmin..qmax) of `scale`: [1], one per row
// [rows], or with group > 0 one per group of `group` consecutive columns of a row
// [rows, cols / group] (fixed before GPTQ, as the reference code's static groups: a column
// keeps its group's scale in any order). H [cols, cols]. Returns the quantized weight
// (values on the grid). Computed in float64.
at::Tensor gptq_quantize(const at::Tensor& W, const at::Tensor& H, const at::Tensor& scale, int64_t qmin,
                         int64_t qmax, const GptqOptions& options, int64_t group = 0);

// The weight W' = W C (H + damp * mean(diag H) I)^-1 that maps the quantized input closest
// (least squares) to the float output, H = 2 X_q X_q^T / m, C = 2 X_f X_q^T / m. float64.
at::Tensor gptq_target_weight(const at::Tensor& W, const at::Tensor& H, const at::Tensor& C, double damp);

// GPTQ on every layer of `layers` (qnode, weight_path, scale, qmin, qmax, channel_axis are
// used), in order, writing the quantized weights into `quantized`'s module. With
// options.asymmetric and a float `reference` (fnode used), the layer's float input X_f is
// captured too and GPTQ quantizes W' = W C H^-1 (C = 2 X_f X_q^T / m, H damped) instead of W:
// the least-squares weight from the quantized input X_q to the float output W X_f, so that
// |W X_f - Q X_q|^2 = |W X_f - W' X_q|^2 + |(W' - Q) X_q|^2 and GPTQ's objective is the
// asymmetric one AdaRound and BRECQ reconstruct (as GPTAQ, Li et al. 2025, motivates).
std::vector<GptqReport> gptq(ModelGraph& quantized, ModelGraph* reference, const std::vector<AdaRoundLayer>& layers,
                             const DataSource& calib, const GptqOptions& options);

}  // namespace anybit
