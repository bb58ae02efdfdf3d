// The data spec parser, batching and the limit wrapper; the formats live in *_dataset.cc.
#include "anybit/data/dataset.h"

#include <algorithm>
#include <cctype>

#include "anybit/data/file_read.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {

void check_index(const std::string& scheme, int64_t index, int64_t size) {
  if (index < 0 || index >= size)
    throw Error(scheme + ": sample index " + std::to_string(index) + " out of range [0, " + std::to_string(size) + ")");
}

namespace {

class LimitedDataset : public Dataset {
 public:
  LimitedDataset(std::unique_ptr<Dataset> inner, int64_t limit, std::string scheme)
      : inner_(std::move(inner)), limit_(limit), scheme_(std::move(scheme)) {}
  int64_t size() const override { return std::min(limit_, inner_->size()); }
  std::vector<int64_t> sample_shape() const override { return inner_->sample_shape(); }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index(scheme_, index, size());
    inner_->get(index, out, label);
  }

 private:
  std::unique_ptr<Dataset> inner_;
  int64_t limit_;
  std::string scheme_;
};

std::vector<std::string> split_on_colons(const std::string& s) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == ':') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

// A positive integer modifier value, e.g. the 224 of size=224.
int64_t parse_positive(const std::string& spec, const std::string& key, const std::string& value) {
  bool digits = !value.empty() && value.size() <= 12;
  for (char c : value) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  const int64_t v = digits ? std::stoll(value) : 0;
  if (v < 1) throw Error("data spec '" + spec + "': " + key + " must be a positive integer, got '" + value + "'");
  return v;
}

bool parse_split(const std::string& spec, const std::string& s) {
  if (s == "train") return true;
  if (s == "test" || s.empty()) return false;
  throw Error("data spec '" + spec + "': split must be train or test, got '" + s + "'");
}

}  // namespace

std::unique_ptr<Dataset> limit_dataset(std::unique_ptr<Dataset> inner, int64_t limit, const std::string& scheme) {
  return std::make_unique<LimitedDataset>(std::move(inner), limit, scheme);
}

Batch batch(const Dataset& dataset, int64_t begin, int64_t count) {
  const int64_t n_total = dataset.size();
  if (begin < 0 || begin > n_total)
    throw Error("batch: begin " + std::to_string(begin) + " outside [0, " + std::to_string(n_total) + "]");
  if (count < 0) throw Error("batch: negative count " + std::to_string(count));
  const int64_t n = std::min(count, n_total - begin);
  Batch b;
  b.shape = dataset.sample_shape();
  int64_t per = 1;
  for (int64_t d : b.shape) per *= d;
  b.shape.insert(b.shape.begin(), n);
  b.images.resize(static_cast<size_t>(n * per));
  b.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) dataset.get(begin + i, b.images.data() + i * per, &b.labels[i]);
  return b;
}

std::unique_ptr<Dataset> open_dataset(const std::string& spec) {
  const std::vector<std::string> parts = split_on_colons(spec);
  const std::string& scheme = parts[0];
  int64_t limit = -1, size = -1, resize = -1;
  std::vector<std::string> args;  // positional parts
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.rfind("limit=", 0) == 0) {
      limit = parse_positive(spec, "limit", p.substr(6));
    } else if (p.rfind("size=", 0) == 0) {
      size = parse_positive(spec, "size", p.substr(5));
    } else if (p.rfind("resize=", 0) == 0) {
      resize = parse_positive(spec, "resize", p.substr(7));
    } else {
      args.push_back(p);
    }
  }
  auto too_many = [&](size_t max, const std::string& form) {
    if (args.size() > max)
      throw Error("data spec '" + spec + "': unexpected '" + args[max] + "'; the form is " + form);
  };
  if (scheme != "imagefolder" && (size >= 0 || resize >= 0))
    throw Error("data spec '" + spec + "': size= and resize= apply only to imagefolder");

  std::unique_ptr<Dataset> d;
  if (scheme == "fmnist" || scheme == "mnist") {
    too_many(2, scheme + "[:DIR][:train|test][:limit=N]");
    const std::string default_dir =
        scheme == "fmnist" ? "/usr/share/datasets/fashion-mnist" : "/usr/share/datasets/mnist";
    std::string dir = args.size() > 0 ? args[0] : "";
    std::string split = args.size() > 1 ? args[1] : "";
    // fmnist:train is the default directory's train split, unless a folder `train` exists
    if (args.size() == 1 && (dir == "train" || dir == "test") && !is_directory(dir)) std::swap(dir, split);
    d = open_idx_dataset(scheme, dir.empty() ? default_dir : dir, parse_split(spec, split));
  } else if (scheme == "cifar10") {
    too_many(2, "cifar10:DIR[:train|test][:limit=N]");
    if (args.empty() || args[0].empty()) throw Error("data spec '" + spec + "': cifar10 needs a directory, cifar10:DIR");
    d = open_cifar10_dataset(args[0], parse_split(spec, args.size() > 1 ? args[1] : ""));
  } else if (scheme == "imagefolder") {
    too_many(1, "imagefolder:DIR[:size=224][:resize=256][:limit=N]");
    if (args.empty() || args[0].empty())
      throw Error("data spec '" + spec + "': imagefolder needs a directory, imagefolder:DIR");
    if (size < 0) size = 224;
    if (resize < 0) resize = size == 224 ? 256 : size * 256 / 224;  // keep ImageNet's 0.875 crop ratio
    if (resize < size)
      throw Error("data spec '" + spec + "': resize (" + std::to_string(resize) + ") must be at least size (" +
                  std::to_string(size) + ")");
    d = open_image_folder_dataset(args[0], resize, size);
  } else if (scheme == "npy") {
    too_many(2, "npy:IMAGES.npy[:LABELS.npy][:limit=N]");
    if (args.empty() || args[0].empty()) throw Error("data spec '" + spec + "': npy needs a file, npy:IMAGES.npy");
    d = open_npy_dataset(args[0], args.size() > 1 ? args[1] : "");
  } else {
    throw Error("data spec '" + spec + "': unknown scheme '" + scheme +
                "' (expected fmnist, mnist, cifar10, imagefolder or npy)");
  }
  if (limit > 0) d = limit_dataset(std::move(d), limit, scheme);
  return d;
}

}  // namespace data
}  // namespace anybit
