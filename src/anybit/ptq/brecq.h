// Block reconstruction (BRECQ, Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training
// Quantization by Block Reconstruction") with QDrop (Wei et al. 2022, "QDrop: Randomly
// Dropping Quantization for Extremely Low-bit Post-Training Quantization").
//
// The quantized graph is cut into blocks (see partition below); block by block, in
// forward order, the AdaRound rounding variables V of the block's int weights and the step
// sizes s of its activation quantizers are learned together so that the block's output
// matches the float block's output on calibration data:
//
//   min_{V, s}  E || block_q(x_q; W~(V), s) - block_fp(x_fp) ||^2  +  lambda * sum (1 - |2 h(V) - 1|^beta)
//
// x_q is the block's input in the quantized model with the earlier blocks already done,
// x_fp the float model's. QDrop: while learning, every learned activation quantizer
// inside the block passes its input through unquantized, element-wise with probability
// p = 0.5 (y = where(u < p, x, fq(x)), u ~ U(0, 1), drawn in the quantizer's kernel from
// (seed, block, iteration, quantizer, element): quant/fake_quant.h's
// fake_quant_affine_drop); the alternative (drop_inside =
// false) mixes only the block input, x~ = where(u < p, x_fp, x_q). W~ and the
// regularizer are AdaRound's (ptq/adaround.h). The step sizes are learned LSQ-style (the gradient of the fake-quant op with respect to its
// scale) through s = exp(u), so they stay positive. After a block, its rounding is
// hardened (weights written exactly on the grid) and the learned steps stay in the model.
// Guard, on the block objective with input x_q: a block keeps its calibrated steps where
// they reconstruct better with the learned rounding than the learned steps do, and keeps
// round-to-nearest with the calibrated steps where that is better still.
//
// Partition, from the point names: a module path that owns a residual add
// (`layer1.0:add:out` -> `layer1.0`) is a block with every point under it; every other
// conv/linear is a block of its own together with the activation points after it up to
// the next weight layer or block (activation points before a conv, such as the model
// input or the pool before the classifier, join that conv's block). So a ResNet gives
// stem, one block per residual block, and the classifier. A block ends at the quantizer
// of its last activation point; where the graph between two cuts reads anything else
// than the previous cut (a skip connection across blocks, several model inputs), the two
// blocks are merged.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "anybit/graph/graph.h"
#include "anybit/ptq/adaround.h"

namespace anybit {

class DataSource;

struct BrecqOptions {
  int iterations = 2000;       // per block
  int64_t batch_size = 32;     // samples per optimization step
  int64_t samples = 1024;      // calibration samples whose block inputs/outputs are kept
  double lr_rounding = 3e-3;   // Adam on V
  double lr_scale = 1e-4;      // Adam on log(s), cosine-annealed to 0
  double reg_weight = 0.01;    // lambda of AdaRound's regularizer
  double drop_prob = 0.5;      // QDrop: probability of dropping quantization, element-wise
  // Where QDrop drops: at every learned activation quantizer inside the block (the
  // quantizer's output is its unquantized input there; the block input is x_q), as the
  // QDrop paper does (default); or, with false, only at the block input, which is then a
  // mix of x_q and x_fp.
  bool drop_inside = true;
  bool learn_scales = true;
  uint64_t seed = 0;
  bool progress = true;
  // After each block, its learned weights and steps, the report and the random generators'
  // states go to DIR/brecq_block_<i>.pt (written whole, then renamed). With `resume`, a
  // block whose file is there is restored from it instead of learned again, so a killed run
  // continues at the next block with the result an uninterrupted run gives.
  std::string checkpoint_dir;
  bool resume = false;
};

struct BrecqBlock {
  std::string name;                 // e.g. "layer1.0", "stem.0", "fc"
  std::vector<std::string> points;  // the points it holds, forward order
};

struct BrecqReport {
  std::string name;
  int weights = 0, scales = 0;          // AdaRounded weights and learned activation steps in it
  double mse_nearest = 0, mse_brecq = 0;  // block objective on the kept samples (input x_q)
  bool kept_nearest = false;            // the learned result was worse: nearest rounding kept
  bool kept_steps = false;              // the calibrated steps reconstructed better: kept
  bool resumed = false;                 // restored from its checkpoint
  double seconds_per_iteration = 0;     // the learning loop's wall time over its iterations
};

// The automatic partition of a quantized model's points (see above); `q` is the graph
// after quantizer insertion, as quantize() has it.
std::vector<BrecqBlock> brecq_partition(const ModelGraph& q);

// Runs block reconstruction on `q` (quantizers inserted, weights of `layers` still
// float) against the float `reference`; `layers` are the weights to round, as for
// adaround(). Activation quantizers with a per-tensor learnable step are those whose
// node is anybit::fake_quant_affine reading a scale tensor of the root module.
std::vector<BrecqReport> brecq(ModelGraph& q, ModelGraph& reference, const std::vector<AdaRoundLayer>& layers,
                               const DataSource& calib, const BrecqOptions& options);

}  // namespace anybit
