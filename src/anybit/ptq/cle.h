// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight
// Equalization and Bias Correction", section 4.1).
//
// For two layers joined by a positively homogeneous activation (ReLU, or nothing),
//   y = W2 f(W1 x + b1) = (W2 S) f(S^-1 W1 x + S^-1 b1)   for any positive diagonal S,
// so output channel i of the first layer can be divided by s_i and input channel i of the
// second multiplied by s_i without changing the float function. Choosing
//   s_i = sqrt(r1_i / r2_i),   r1_i = max|W1[i, ...]|,  r2_i = max|W2[:, i, ...]|
// makes both ranges sqrt(r1_i r2_i): channels whose weights are tiny next to the tensor's
// largest no longer round to zero under a per-tensor quantizer. This matters most for
// depthwise-separable models (MobileNetV2), whose depthwise kernels' ranges vary by
// orders of magnitude after BatchNorm folding. Chains (expand -> depthwise -> project) are
// equalized pair by pair, repeated until the scales settle.
#pragma once

#include "anybit/graph/graph.h"

namespace anybit {

struct CleOptions {
  // ReLU6 is not positively homogeneous. false: pairs joined by ReLU6 are left alone.
  // true: those ReLU6 become ReLU (the clip at 6 is dropped, as the paper does), which
  // changes the float function where a pre-activation exceeds 6.
  bool relu6_to_relu = false;
  int max_iterations = 20;   // passes over all pairs
  double tolerance = 1e-4;   // stop when every |log s_i| of a pass is below this
};

struct CleResult {
  int pairs = 0;             // layer pairs equalized
  int relu6_replaced = 0;    // ReLU6 turned into ReLU (relu6_to_relu)
  int iterations = 0;
};

// Equalizes every conv/linear pair (groups 1 or depthwise on either side) joined directly
// or through a ReLU whose output nothing else reads; changes the weights and biases of
// g.module in place. Fold BatchNorm first (fold_batch_norm): a BatchNorm between the two
// layers stops the pair.
CleResult equalize_cross_layer(ModelGraph& g, const CleOptions& options = {});

}  // namespace anybit
