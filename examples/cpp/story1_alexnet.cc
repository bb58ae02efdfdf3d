// Story 1 in C++: AlexNet (any TorchScript export of it) with per-layer bits from a config.
//   build/example_story1_alexnet alexnet.pt examples/story1_alexnet.yaml
#include <iostream>

#include "anybit/api/quantize.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " ALEXNET.pt CONFIG.yaml\n";
    return 2;
  }
  try {
    at::manual_seed(0);
    auto calib = anybit::tensor_data(at::rand({4, 3, 224, 224}), at::zeros({4}, at::kLong), "random images");
    anybit::QuantizeOptions opt;
    opt.batch_size = 4;
    opt.progress = false;
    anybit::QuantizeResult q =
        anybit::quantize(anybit::load_model(argv[1]), anybit::parse_config_file(argv[2]), calib.get(), opt);
    for (const auto& r : q.points)
      if (!r.assignment.spec.is_float()) std::cout << r.point.name << " " << r.assignment.spec.str() << "\n";
    std::cout << "output " << q.model.module.forward({at::rand({1, 3, 224, 224})}).toTensor().sizes() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
