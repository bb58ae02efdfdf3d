// Datasets for calibration and evaluation, as float images [C, H, W] and integer labels.
// Plain C++17 (no LibTorch); the core wraps them in tensors.
//
// Data specs:
//   fmnist[:DIR][:train|test]     Fashion-MNIST IDX files (.gz or plain); pixel / 255
//   mnist:DIR[:train|test]        the same format
//   cifar10:DIR[:train|test]      CIFAR-10 binary batches; normalized with the CIFAR mean/std
//   npy:IMAGES.npy[:LABELS.npy]   float32 [N, ...] (uint8 is divided by 255), int labels [N]
//   any of them with :limit=N     only the first N samples
// DIR defaults to /usr/share/datasets/fashion-mnist, the split to test.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace anybit {
namespace data {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual std::vector<int64_t> sample_shape() const = 0;  // C, H, W
  // Writes one sample (prod(sample_shape()) floats) and its label.
  virtual void get(int64_t index, float* out, int64_t* label) const = 0;
};

std::unique_ptr<Dataset> open_dataset(const std::string& spec);

// Whole files (gzip-compressed or plain) into memory; throws Error naming the file.
std::vector<uint8_t> read_file_maybe_gz(const std::string& path);

}  // namespace data
}  // namespace anybit
