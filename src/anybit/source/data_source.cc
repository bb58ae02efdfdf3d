#include "anybit/source/data_source.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "anybit/base/error.h"
#include "anybit/data/dataset.h"

namespace anybit {

namespace {

class TensorData : public DataSource {
 public:
  TensorData(at::Tensor x, at::Tensor y, std::string name)
      : x_(std::move(x)), y_(std::move(y)), name_(std::move(name)) {}
  int64_t size() const override { return x_.size(0); }
  std::pair<at::Tensor, at::Tensor> batch(int64_t b, int64_t n) const override {
    n = std::min(n, size() - b);
    return {x_.narrow(0, b, n), y_.narrow(0, b, n)};
  }
  std::pair<at::Tensor, at::Tensor> gather(const at::Tensor& indices) const override {
    return {x_.index_select(0, indices), y_.index_select(0, indices)};
  }
  std::string describe() const override { return name_; }

 private:
  at::Tensor x_, y_;
  std::string name_;
};

class DatasetData : public DataSource {
 public:
  DatasetData(std::unique_ptr<data::Dataset> d, std::string spec) : d_(std::move(d)), spec_(std::move(spec)) {}
  int64_t size() const override { return d_->size(); }
  std::pair<at::Tensor, at::Tensor> batch(int64_t b, int64_t n) const override {
    n = std::min(n, size() - b);
    return gather(at::arange(b, b + n, at::kLong));
  }
  std::pair<at::Tensor, at::Tensor> gather(const at::Tensor& indices) const override {
    const int64_t n = indices.numel();
    std::vector<int64_t> shape = d_->sample_shape();
    int64_t per = 1;
    for (int64_t s : shape) per *= s;
    shape.insert(shape.begin(), n);
    // integer samples (token ids) as the int64 an embedding reads, images as float
    const bool ints = d_->integer_samples();
    at::Tensor x = at::empty(shape, ints ? at::kLong : at::kFloat);
    at::Tensor y = at::empty({n}, at::kLong);
    const at::Tensor idx = indices.to(at::kLong).contiguous();
    const int64_t* pi = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      if (ints)
        d_->get_integers(pi[i], x.data_ptr<int64_t>() + i * per, y.data_ptr<int64_t>() + i);
      else
        d_->get(pi[i], x.data_ptr<float>() + i * per, y.data_ptr<int64_t>() + i);
    }
    return {x, y};
  }
  std::string describe() const override { return spec_; }

 private:
  std::unique_ptr<data::Dataset> d_;
  std::string spec_;
};

}  // namespace

std::unique_ptr<DataSource> open_data(const std::string& spec) {
  return std::make_unique<DatasetData>(data::open_dataset(spec), spec);
}

std::unique_ptr<DataSource> tensor_data(at::Tensor inputs, at::Tensor labels, std::string name) {
  if (inputs.size(0) != labels.size(0))
    throw Error(name + ": " + std::to_string(inputs.size(0)) + " inputs but " +
                std::to_string(labels.size(0)) + " labels");
  // integer inputs (token ids) stay integers, as int64; anything else is fed as float
  const bool ints = at::isIntegralType(inputs.scalar_type(), /*includeBool=*/false) &&
                    inputs.scalar_type() != at::kByte;
  return std::make_unique<TensorData>(inputs.contiguous().to(ints ? at::kLong : at::kFloat), labels.to(at::kLong),
                                      name);
}

}  // namespace anybit
