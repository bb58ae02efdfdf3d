// Story 2 in C++: the bit sweep through the API, on the shipped Fashion-MNIST model.
//   build/example_story2_sweep models/fmnist_resnet.pt OUT_DIR
#include <cstdio>
#include <iostream>

#include "anybit/study/sweep.h"
#include "anybit/quant/spec.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt OUT_DIR\n";
    return 2;
  }
  try {
    anybit::SweepOptions o;
    o.models = {argv[1]};
    o.pairs = {{8, 8}, {4, 4}, {2, 4}};
    o.methods = {"mse"};
    o.calib_data = "fmnist::train:limit=512";
    o.eval_data = "fmnist::test:limit=1000";
    o.calib_batches = 4;
    o.out_dir = argv[2];
    o.resume = true;
    o.progress = false;
    for (const auto& r : anybit::run_sweep(o))
      std::printf("%-8s W%-2dA%-2d top-1 %.2f%%\n", r.method.c_str(), r.wbits, r.abits, r.top1);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
