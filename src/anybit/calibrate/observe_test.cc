// observe_where_it_is (the statistics of a batch on a device) against the host's Observer:
// here on CPU tensors, the same ATen ops the GPU runs (anybit_cuda_test runs it on a GPU).
#include "anybit/calibrate/observe.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace anybit {
namespace {

void expect_same(const calib::Observer& host, const calib::Observer& dev) {
  EXPECT_EQ(dev.count(), host.count());
  EXPECT_EQ(dev.histogram().nonfinite(), host.histogram().nonfinite());
  EXPECT_EQ(dev.batches(), host.batches());
  EXPECT_EQ(dev.min(), host.min());
  EXPECT_EQ(dev.max(), host.max());
  EXPECT_EQ(dev.ema().lo, host.ema().lo);
  EXPECT_EQ(dev.ema().hi, host.ema().hi);
  EXPECT_EQ(dev.histogram().range(), host.histogram().range());
  EXPECT_EQ(dev.histogram().counts(), host.histogram().counts());
  EXPECT_NEAR(dev.histogram().sum_abs(), host.histogram().sum_abs(), 1e-12 * host.histogram().sum_abs());
}

TEST(ObserveOnDevice, GivesTheHostObserversHistogramBatchByBatch) {
  at::manual_seed(3);
  calib::Observer host, dev;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<at::Tensor> batches = {
      at::relu(at::randn({8, 4, 5, 5})),           // after a ReLU: zeros and positives
      at::randn({8, 4, 5, 5}) * 0.01,              // smaller: the range stays
      at::randn({3, 1000}) * 40,                   // larger: the range grows, bins merge
      at::tensor({-1e-39f, 1e-39f, -0.0f, 0.0f}),  // subnormals on either side of 0
      at::tensor({1.5f, inf, -2.0f, nan, -inf}),   // non-finite values are counted apart
      at::tensor({nan, inf}),                      // nothing finite: no batch for the average
      at::empty({0, 3}),
      at::randn({2, 3}).to(at::kHalf),             // another float type
  };
  for (const at::Tensor& b : batches) {
    const at::Tensor c = b.to(at::kFloat).contiguous();
    host.observe(c.data_ptr<float>(), c.numel());
    observe_where_it_is(dev, b);
    expect_same(host, dev);
  }
  EXPECT_EQ(dev.batches(), 6);  // the all-non-finite and the empty batches do not count
  EXPECT_EQ(dev.histogram().nonfinite(), 5);
}

TEST(ObserveOnDevice, LargeBatchesAreBinnedInChunksAndMatchTheMultithreadedHost) {
  at::manual_seed(4);
  calib::Observer host, dev;
  const at::Tensor b = at::randn({(int64_t{1} << 22) + 1000, 5}).mul_(3).t();  // more than one chunk
  ASSERT_FALSE(b.is_contiguous());
  const at::Tensor c = b.contiguous();
  host.observe(c.data_ptr<float>(), c.numel());
  observe_where_it_is(dev, b);
  expect_same(host, dev);
}

}  // namespace
}  // namespace anybit
