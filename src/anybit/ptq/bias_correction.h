// Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
// Equalization and Bias Correction", section 4.2, empirical variant; Banner et al. 2019):
// quantizing weights shifts the mean of each output channel, E[W~x] - E[Wx] != 0, and
// the shift adds up through the network. For each conv/linear in forward order, the
// per-channel mean of its output in the quantized model is measured against the float
// model's on calibration data and subtracted from the bias.
#pragma once

#include <string>
#include <vector>

#include "anybit/graph/graph.h"

namespace anybit {

class DataSource;

struct BiasCorrection {
  std::string layer;       // the weight point, e.g. layer1.conv1.weight
  double mean_abs_shift;   // mean over channels of |E[y_q] - E[y_fp]| before the correction
};

// `quantized` and `reference` are the same model (same point names), the first with
// quantizers. Layers whose bias slot cannot hold a tensor are skipped.
std::vector<BiasCorrection> correct_bias(ModelGraph& quantized, ModelGraph& reference,
                                         const DataSource& calib, int64_t samples);

}  // namespace anybit
