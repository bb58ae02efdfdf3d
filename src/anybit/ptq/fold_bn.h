// Post-training graph transforms that keep the float function: BatchNorm folding.
#pragma once

#include "anybit/graph/graph.h"

namespace anybit {

// Folds every eval-mode BatchNorm that directly follows a conv/linear (whose output
// nothing else reads) into that conv's weight and a new bias, removes the BatchNorm
// from the graph and re-finds the points. Returns the number folded. Call it before
// quantizing: weights are then quantized as the hardware will hold them.
int fold_batch_norm(ModelGraph& g);

}  // namespace anybit
