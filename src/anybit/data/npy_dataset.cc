// Images and labels from .npy files (see npy_read.h for what is accepted).
#include <array>
#include <cstring>

#include "anybit/data/npy_read.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

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
    if (images_.item_size == 4) {
      std::memcpy(out, images_.data.data() + index * per_ * 4, static_cast<size_t>(per_) * 4);
    } else {
      const uint8_t* p = images_.data.data() + index * per_;
      for (int64_t k = 0; k < per_; ++k) out[k] = scaled_[p[k]];
    }
    *label = labels_.empty() ? -1 : labels_[index];
  }

 private:
  NpyArray images_;              // '<f4' or '|u1', [N, ...]
  std::vector<int64_t> labels_;  // empty: unlabeled
  std::vector<int64_t> shape_;
  int64_t per_;
  std::array<float, 256> scaled_;  // v / 255 for uint8 images
};

}  // namespace

std::unique_ptr<Dataset> open_npy_dataset(const std::string& images_path, const std::string& labels_path) {
  NpyArray x = read_npy(images_path);
  if (x.descr != "<f4" && x.descr != "|u1" && x.descr != "<u1")
    throw Error("npy: " + images_path + ": images must be float32 or uint8, got dtype '" + x.descr + "'");
  if (x.shape.size() < 2)
    throw Error("npy: " + images_path + ": images must have shape [N, C, H, W] (rank >= 2), got " +
                shape_string(x.shape));
  const int64_t n = x.shape[0];
  std::vector<int64_t> labels;
  if (!labels_path.empty()) {
    NpyArray y = read_npy(labels_path);
    if (y.descr != "<i8" && y.descr != "<i4")
      throw Error("npy: " + labels_path + ": labels must be int64 or int32, got dtype '" + y.descr + "'");
    if (y.shape.size() != 1)
      throw Error("npy: " + labels_path + ": labels must have shape [N], got " + shape_string(y.shape));
    if (y.shape[0] != n)
      throw Error("npy: " + labels_path + ": " + std::to_string(y.shape[0]) + " labels, but " + images_path +
                  " holds " + std::to_string(n) + " images");
    labels.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      if (y.item_size == 8) {
        std::memcpy(&labels[i], y.data.data() + 8 * i, 8);
      } else {
        int32_t v;
        std::memcpy(&v, y.data.data() + 4 * i, 4);
        labels[i] = v;
      }
      if (labels[i] < 0)
        throw Error("npy: " + labels_path + ": label " + std::to_string(labels[i]) + " of sample " +
                    std::to_string(i) + " is negative");
    }
  }
  return std::make_unique<NpyDataset>(std::move(x), std::move(labels));
}

}  // namespace data
}  // namespace anybit
