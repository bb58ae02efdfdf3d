// The data spec parser, batching and the limit wrapper; the formats live in *_dataset.cc.
#include "anybit/data/dataset.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "anybit/data/file_read.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {

void check_index(const std::string& scheme, int64_t index, int64_t size) {
  if (index < 0 || index >= size)
    throw Error(scheme + ": sample index " + std::to_string(index) + " out of range [0, " + std::to_string(size) + ")");
}

void Dataset::get_integers(int64_t index, int64_t* out, int64_t* label) const {
  (void)index, (void)out, (void)label;
  throw Error("the dataset's samples are not integers");
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
  bool integer_samples() const override { return inner_->integer_samples(); }
  void get_integers(int64_t index, int64_t* out, int64_t* label) const override {
    check_index(scheme_, index, size());
    inner_->get_integers(index, out, label);
  }

 private:
  std::unique_ptr<Dataset> inner_;
  int64_t limit_;
  std::string scheme_;
};

// (x - mean[c]) / std[c], the float operations of torchvision's Normalize after ToTensor.
class NormalizedDataset : public Dataset {
 public:
  NormalizedDataset(std::unique_ptr<Dataset> inner, std::vector<float> mean, std::vector<float> std)
      : inner_(std::move(inner)), mean_(std::move(mean)), std_(std::move(std)) {
    const std::vector<int64_t> shape = inner_->sample_shape();
    channels_ = shape.empty() ? 1 : shape[0];
    per_ = 1;
    for (int64_t d : shape) per_ *= d;
  }
  int64_t size() const override { return inner_->size(); }
  std::vector<int64_t> sample_shape() const override { return inner_->sample_shape(); }
  void get(int64_t index, float* out, int64_t* label) const override {
    inner_->get(index, out, label);
    const int64_t plane = channels_ ? per_ / channels_ : 0;
    for (int64_t c = 0; c < channels_; ++c) {
      const float m = mean_.size() == 1 ? mean_[0] : mean_[c];
      const float s = std_.size() == 1 ? std_[0] : std_[c];
      for (float *p = out + c * plane, *e = p + plane; p != e; ++p) *p = (*p - m) / s;
    }
  }

 private:
  std::unique_ptr<Dataset> inner_;
  std::vector<float> mean_, std_;
  int64_t channels_ = 1, per_ = 1;
};

std::string join_floats(const std::vector<float>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(v[i]));
    s += (i ? "," : "") + std::string(buf);
  }
  return s;
}

// A comma-separated list of finite numbers, e.g. the 0.485,0.456,0.406 of mean=...
std::vector<float> parse_floats(const std::string& spec, const std::string& key, const std::string& value) {
  std::vector<float> out;
  size_t start = 0;
  while (true) {
    const size_t comma = value.find(',', start);
    const std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    const double v = item.empty() ? 0 : std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || errno == ERANGE || !std::isfinite(v) ||
        std::isspace(static_cast<unsigned char>(item[0])))
      throw Error("data spec '" + spec + "': " + key + " must be a number or a comma-separated list of numbers "
                  "(one per channel), got '" + value + "'");
    out.push_back(static_cast<float>(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

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

std::unique_ptr<Dataset> normalize_dataset(std::unique_ptr<Dataset> inner, std::vector<float> mean,
                                           std::vector<float> std, const std::string& spec) {
  if (inner->integer_samples())
    throw Error("data spec '" + spec + "': the samples are integers (token ids); mean= and std= apply to images only");
  const std::vector<int64_t> shape = inner->sample_shape();
  const int64_t channels = shape.empty() ? 1 : shape[0];
  for (const auto* v : {&mean, &std}) {
    const char* key = v == &mean ? "mean" : "std";
    if (v->empty() || (v->size() != 1 && static_cast<int64_t>(v->size()) != channels))
      throw Error("data spec '" + spec + "': " + key + " has " + std::to_string(v->size()) +
                  " values; give one for all channels or one per channel (the samples have " +
                  std::to_string(channels) + ")");
  }
  for (float s : std)
    if (!(s > 0))
      throw Error("data spec '" + spec + "': std must be positive, got " + join_floats(std));
  return std::make_unique<NormalizedDataset>(std::move(inner), std::move(mean), std::move(std));
}

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
  std::vector<float> mean, std;  // empty: the scheme's default
  std::vector<std::string> args;  // positional parts
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.rfind("limit=", 0) == 0) {
      limit = parse_positive(spec, "limit", p.substr(6));
    } else if (p.rfind("size=", 0) == 0) {
      size = parse_positive(spec, "size", p.substr(5));
    } else if (p.rfind("resize=", 0) == 0) {
      resize = parse_positive(spec, "resize", p.substr(7));
    } else if (p.rfind("mean=", 0) == 0) {
      mean = parse_floats(spec, "mean", p.substr(5));
    } else if (p.rfind("std=", 0) == 0) {
      std = parse_floats(spec, "std", p.substr(4));
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
    too_many(2, scheme + "[:DIR][:train|test][:mean=M:std=S][:limit=N]");
    const std::string default_dir =
        scheme == "fmnist" ? "/usr/share/datasets/fashion-mnist" : "/usr/share/datasets/mnist";
    std::string dir = args.size() > 0 ? args[0] : "";
    std::string split = args.size() > 1 ? args[1] : "";
    // fmnist:train is the default directory's train split, unless a folder `train` exists
    if (args.size() == 1 && (dir == "train" || dir == "test") && !is_directory(dir)) std::swap(dir, split);
    d = open_idx_dataset(scheme, dir.empty() ? default_dir : dir, parse_split(spec, split));
  } else if (scheme == "cifar10") {
    too_many(2, "cifar10:DIR[:train|test][:mean=M:std=S][:limit=N]");
    if (args.empty() || args[0].empty()) throw Error("data spec '" + spec + "': cifar10 needs a directory, cifar10:DIR");
    d = open_cifar10_dataset(args[0], parse_split(spec, args.size() > 1 ? args[1] : ""));
  } else if (scheme == "imagefolder") {
    too_many(1, "imagefolder:DIR[:size=224][:resize=256][:mean=M:std=S][:limit=N]");
    if (args.empty() || args[0].empty())
      throw Error("data spec '" + spec + "': imagefolder needs a directory, imagefolder:DIR");
    if (size < 0) size = 224;
    if (resize < 0) resize = size == 224 ? 256 : size * 256 / 224;  // keep ImageNet's 0.875 crop ratio
    if (resize < size)
      throw Error("data spec '" + spec + "': resize (" + std::to_string(resize) + ") must be at least size (" +
                  std::to_string(size) + ")");
    d = open_image_folder_dataset(args[0], resize, size);
  } else if (scheme == "npy") {
    too_many(2, "npy:IMAGES.npy[:LABELS.npy][:mean=M:std=S][:limit=N]");
    if (args.empty() || args[0].empty()) throw Error("data spec '" + spec + "': npy needs a file, npy:IMAGES.npy");
    d = open_npy_dataset(args[0], args.size() > 1 ? args[1] : "");
  } else {
    throw Error("data spec '" + spec + "': unknown scheme '" + scheme +
                "' (expected fmnist, mnist, cifar10, imagefolder or npy)");
  }
  // the scheme's default normalization, where it has one; a mean without a std keeps std 1 and
  // the other way round
  std::vector<float> default_mean, default_std;
  if (scheme == "cifar10") {
    default_mean = {0.4914f, 0.4822f, 0.4465f};
    default_std = {0.2470f, 0.2435f, 0.2616f};
  } else if (scheme == "imagefolder") {
    default_mean = {0.485f, 0.456f, 0.406f};
    default_std = {0.229f, 0.224f, 0.225f};
  }
  const bool given = !mean.empty() || !std.empty();
  if (!given) {
    mean = default_mean;
    std = default_std;
  } else {
    if (mean.empty()) mean = {0.0f};
    if (std.empty()) std = {1.0f};
  }
  if (!mean.empty()) d = normalize_dataset(std::move(d), std::move(mean), std::move(std), spec);
  if (limit > 0) d = limit_dataset(std::move(d), limit, scheme);
  return d;
}

}  // namespace data
}  // namespace anybit
