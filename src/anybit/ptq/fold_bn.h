// Post-training graph transforms that keep the float function: BatchNorm folding.
#pragma once

#include "anybit/graph/graph.h"

namespace anybit {

// Folds every eval-mode BatchNorm that directly follows a conv/linear (whose output
// nothing else reads) into that conv's weight and a new bias, removes the BatchNorm
// from the graph and re-finds the points. Returns the number folded. Call it before
// quantizing: weights are then quantized as the hardware will hold them.
//
// Also on a quantized model (what fine-tuning does when it freezes BatchNorm): a weight
// that reaches the conv through its quantizer is folded together with the quantizer's
// per-channel range (scale, binary/ternary alpha and threshold) times |k|, so the
// quantized folded weight equals k times the quantized unfolded one, level for level.
// A per-tensor weight quantizer cannot absorb per-channel factors: Error, naming the weight.
int fold_batch_norm(ModelGraph& g);

}  // namespace anybit
