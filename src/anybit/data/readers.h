// The dataset readers behind open_dataset(), one per format; each validates its files completely
// before it returns, so a bad file fails at open rather than halfway through an evaluation.
// `scheme` is the spec's scheme, used as the prefix of error messages.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {

// IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (http://yann.lecun.com/exdb/mnist/).
std::unique_ptr<Dataset> open_idx_dataset(const std::string& scheme, const std::string& dir, bool train);

// CIFAR-10 binary version (https://www.cs.toronto.edu/~kriz/cifar.html).
std::unique_ptr<Dataset> open_cifar10_dataset(const std::string& dir, bool train);

// Images and optional labels as .npy files (labels_path may be empty).
std::unique_ptr<Dataset> open_npy_dataset(const std::string& images_path, const std::string& labels_path);

// ImageNet-style class folders with the evaluation transform.
std::unique_ptr<Dataset> open_image_folder_dataset(const std::string& dir, int64_t resize, int64_t size);

// (x - mean[c]) / std[c] on every sample of `inner`, c the first sample dimension (the channel);
// mean and std hold one value for every channel or a single value for all. `spec` prefixes errors.
std::unique_ptr<Dataset> normalize_dataset(std::unique_ptr<Dataset> inner, std::vector<float> mean,
                                           std::vector<float> std, const std::string& spec);

// The first `limit` samples of `inner`; `scheme` prefixes its errors.
std::unique_ptr<Dataset> limit_dataset(std::unique_ptr<Dataset> inner, int64_t limit, const std::string& scheme);

// Throws Error("<scheme>: index I out of range [0, N)") unless 0 <= index < size.
void check_index(const std::string& scheme, int64_t index, int64_t size);

}  // namespace data
}  // namespace anybit
