// The tensors a model is fed: batches of inputs and labels, from a data spec (over the
// plain-C++ readers of data/) or from tensors. Every step that runs a model on data (calibration,
// the PTQ algorithms, evaluation, fine-tuning) reads a DataSource.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>

namespace anybit {

// Batches of model inputs [N, ...] (float, or int64 for integer inputs such as token ids:
// data::Dataset::integer_samples) and integer labels [N].
class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual int64_t size() const = 0;
  virtual std::pair<at::Tensor, at::Tensor> batch(int64_t begin, int64_t count) const = 0;
  // The samples at `indices` (int64, [K]), in that order: shuffled training batches.
  virtual std::pair<at::Tensor, at::Tensor> gather(const at::Tensor& indices) const = 0;
  virtual std::string describe() const = 0;
};
// Opens a data spec (fmnist:DIR[:train|test], cifar10:DIR, imagefolder:DIR, npy:X.npy[:Y.npy]).
std::unique_ptr<DataSource> open_data(const std::string& spec);
std::unique_ptr<DataSource> tensor_data(at::Tensor inputs, at::Tensor labels, std::string name);

}  // namespace anybit
