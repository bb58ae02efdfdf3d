// Images and labels from .npy files (base/npy.h: what is accepted).
#include <array>
#include <cstring>

#include "anybit/base/npy.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {
namespace {

class NpyDataset : public Dataset {
 public:
  NpyDataset(NpyArray images, std::vector<int64_t> labels) : images_(std::move(images)), labels_(std::move(labels)) {
    shape_.assign(images_.shape.begin() + 1, images_.shape.end());
    per_ = 1;
    for (int64_t d : shape_) per_ *= d;
    for (int v = 0; v < 256; ++v) scaled_[v] = static_cast<float>(v) / 255.0f;
  }
  int64_t size() const override { return images_.shape[0]; }
  std::vector<int64_t> sample_shape() const override { return shape_; }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index("npy", index, size());
    if (images_.dtype == DType::kFloat32) {
      std::memcpy(out, images_.bytes.data() + index * per_ * 4, static_cast<size_t>(per_) * 4);
    } else if (integer_samples()) {
      for (int64_t k = 0; k < per_; ++k) out[k] = static_cast<float>(images_.int_at(index * per_ + k));
    } else {
      const uint8_t* p = images_.bytes.data() + index * per_;
      for (int64_t k = 0; k < per_; ++k) out[k] = scaled_[p[k]];
    }
    *label = labels_.empty() ? -1 : labels_[index];
  }
  bool integer_samples() const override {
    return images_.dtype == DType::kInt64 || images_.dtype == DType::kInt32;
  }
  void get_integers(int64_t index, int64_t* out, int64_t* label) const override {
    if (!integer_samples()) Dataset::get_integers(index, out, label);
    check_index("npy", index, size());
    for (int64_t k = 0; k < per_; ++k) out[k] = images_.int_at(index * per_ + k);
    *label = labels_.empty() ? -1 : labels_[index];
  }

 private:
  NpyArray images_;              // float32, uint8 (images), int64 or int32 (integer inputs), [N, ...]
  std::vector<int64_t> labels_;  // empty: unlabeled
  std::vector<int64_t> shape_;
  int64_t per_;
  std::array<float, 256> scaled_;  // v / 255 for uint8 images
};

// The array of a .npy file, with the data spec's scheme in front of any error, as every reader's
NpyArray read_npy_array(const std::string& path) {
  try {
    return read_npy(path);
  } catch (const Error& e) {
    throw Error(std::string("npy: ") + e.what());
  }
}

}  // namespace

std::unique_ptr<Dataset> open_npy_dataset(const std::string& images_path, const std::string& labels_path) {
  NpyArray x = read_npy_array(images_path);
  if (x.dtype != DType::kFloat32 && x.dtype != DType::kUInt8 && x.dtype != DType::kInt64 && x.dtype != DType::kInt32)
    throw Error("npy: " + images_path + ": images must be float32 or uint8 (or int64/int32 integer inputs such as "
                "token ids), got " + dtype_name(x.dtype));
  if (x.shape.size() < 2)
    throw Error("npy: " + images_path + ": images must have shape [N, C, H, W] (rank >= 2), got " +
                shape_str(x.shape));
  const int64_t n = x.shape[0];
  std::vector<int64_t> labels;
  if (!labels_path.empty()) {
    NpyArray y = read_npy_array(labels_path);
    if (y.dtype != DType::kInt64 && y.dtype != DType::kInt32)
      throw Error("npy: " + labels_path + ": labels must be int64 or int32, got " + dtype_name(y.dtype));
    if (y.shape.size() != 1)
      throw Error("npy: " + labels_path + ": labels must have shape [N], got " + shape_str(y.shape));
    if (y.shape[0] != n)
      throw Error("npy: " + labels_path + ": " + std::to_string(y.shape[0]) + " labels, but " + images_path +
                  " holds " + std::to_string(n) + " images");
    labels.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      labels[i] = y.int_at(i);
      if (labels[i] < 0)
        throw Error("npy: " + labels_path + ": label " + std::to_string(labels[i]) + " of sample " +
                    std::to_string(i) + " is negative");
    }
  }
  return std::make_unique<NpyDataset>(std::move(x), std::move(labels));
}

}  // namespace data
}  // namespace anybit
