// The steps every front end (the CLI, Python, the sweep) runs on a model before quantizing
// it, in one place: load and analyze, fold BatchNorm, equalize across layers.
#pragma once

#include <string>
#include <vector>

#include "anybit/graph/graph.h"
#include "anybit/ptq/cle.h"

namespace anybit {

struct PrepareOptions {
  bool fold_bn = false;    // fold BatchNorm into the preceding convs
  bool cle = false;        // cross-layer equalization (needs fold_bn)
  bool cle_relu6 = false;  // also across ReLU6, turning it into ReLU (implies cle)
};

struct PreparedModel {
  ModelGraph graph;
  std::vector<Uncovered> uncovered;  // the ops without points, as loaded
  int folded = 0;                    // BatchNorms folded
  CleResult cle;                     // what equalization did (pairs 0 without it)
};

// Throws anybit::Error naming the file or the option at fault.
PreparedModel prepare_model(const std::string& path, const PrepareOptions& options);

}  // namespace anybit
