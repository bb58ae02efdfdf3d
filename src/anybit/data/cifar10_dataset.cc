// CIFAR-10 binary reader: each record is 1 label byte and 3072 pixel bytes (1024 red, then green,
// then blue, each 32x32 row-major), i.e. already [3, 32, 32]. Output is torchvision's ToTensor,
// v / 255; open_dataset() normalizes (by default with the CIFAR-10 statistics, dataset.h).
#include <array>

#include "anybit/data/file_read.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {
namespace {

constexpr int64_t kPixels = 3 * 32 * 32, kRecord = 1 + kPixels;

class Cifar10Dataset : public Dataset {
 public:
  explicit Cifar10Dataset(std::vector<uint8_t> records) : records_(std::move(records)) {
    for (int v = 0; v < 256; ++v) scaled_[v] = static_cast<float>(v) / 255.0f;
  }
  int64_t size() const override { return static_cast<int64_t>(records_.size()) / kRecord; }
  std::vector<int64_t> sample_shape() const override { return {3, 32, 32}; }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index("cifar10", index, size());
    const uint8_t* r = records_.data() + index * kRecord;
    *label = r[0];
    for (int64_t k = 0; k < kPixels; ++k) out[k] = scaled_[r[1 + k]];
  }

 private:
  std::vector<uint8_t> records_;  // all batches, concatenated
  std::array<float, 256> scaled_;  // v / 255
};

}  // namespace

std::unique_ptr<Dataset> open_cifar10_dataset(const std::string& dir_in, bool train) {
  if (!path_exists(dir_in)) throw Error("cifar10: " + dir_in + ": no such directory");
  if (!is_directory(dir_in)) throw Error("cifar10: " + dir_in + ": not a directory");
  std::vector<std::string> names;
  if (train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  // the archive unpacks into cifar-10-batches-bin/: accept its parent too
  std::string dir = dir_in;
  if (!path_exists(dir + "/" + names[0]) && path_exists(dir + "/cifar-10-batches-bin/" + names[0]))
    dir += "/cifar-10-batches-bin";

  std::vector<uint8_t> records;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    std::vector<uint8_t> b = read_file_bytes("cifar10", path);
    const int64_t bytes = static_cast<int64_t>(b.size());
    if (bytes == 0) throw Error("cifar10: " + path + ": empty file");
    if (bytes % kRecord != 0)
      throw Error("cifar10: " + path + ": truncated or corrupt: " + std::to_string(bytes) +
                  " bytes is not a whole number of 3073-byte records (" + std::to_string(bytes / kRecord) +
                  " records and " + std::to_string(bytes % kRecord) + " bytes)");
    for (int64_t r = 0; r < bytes; r += kRecord)
      if (b[r] > 9)
        throw Error("cifar10: " + path + ": label " + std::to_string(b[r]) + " of record " +
                    std::to_string(r / kRecord) + " is outside 0..9 (is this the CIFAR-100 file?)");
    if (records.empty()) {
      records = std::move(b);
    } else {
      records.insert(records.end(), b.begin(), b.end());
    }
  }
  return std::make_unique<Cifar10Dataset>(std::move(records));
}

}  // namespace data
}  // namespace anybit
