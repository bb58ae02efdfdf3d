// One-dimensional k-means.
#include "anybit/calib/kmeans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "anybit/calib/calibrator.h"

namespace anybit {
namespace calib {
namespace {

double sse(const std::vector<float>& x, const std::vector<double>& c) {
  double s = 0;
  for (float v : x) {
    double best = 1e300;
    for (double l : c) best = std::min(best, (v - l) * (v - l));
    s += best;
  }
  return s;
}

TEST(Kmeans1d, FindsSeparatedClustersAndBeatsUniformLevels) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 0.05f);
  std::vector<float> x;
  for (double m : {-3.0, -1.0, 0.5, 4.0})
    for (int i = 0; i < 500; ++i) x.push_back(static_cast<float>(m + n(rng)));
  const std::vector<double> c = kmeans_1d(x.data(), nullptr, static_cast<int64_t>(x.size()), 4);
  ASSERT_EQ(c.size(), 4u);
  const double want[] = {-3.0, -1.0, 0.5, 4.0};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c[i], want[i], 0.01);
  // on Gaussian data, 8 learned levels beat 8 evenly spaced ones over the same range
  std::vector<float> g;
  std::normal_distribution<float> s(0, 1);
  for (int i = 0; i < 5000; ++i) g.push_back(s(rng));
  const std::vector<double> k8 = kmeans_1d(g.data(), nullptr, static_cast<int64_t>(g.size()), 8);
  std::vector<double> even;
  const double lo = *std::min_element(g.begin(), g.end()), hi = *std::max_element(g.begin(), g.end());
  for (int i = 0; i < 8; ++i) even.push_back(lo + (hi - lo) * (i + 0.5) / 8);
  EXPECT_LT(sse(g, k8), 0.6 * sse(g, even));
  for (size_t i = 1; i < k8.size(); ++i) EXPECT_LT(k8[i - 1], k8[i]);
}

TEST(Kmeans1d, WeightsCountAsRepeatedValuesAndBadInputThrows) {
  const std::vector<float> x = {0, 1, 10};
  const std::vector<double> w = {1, 3, 4};
  const std::vector<float> rep = {0, 1, 1, 1, 10, 10, 10, 10};
  EXPECT_EQ(kmeans_1d(x.data(), w.data(), 3, 2), kmeans_1d(rep.data(), nullptr, 8, 2));
  EXPECT_THROW(kmeans_1d(x.data(), nullptr, 3, 0), std::invalid_argument);
  const float bad[] = {1.0f, NAN};
  EXPECT_THROW(kmeans_1d(bad, nullptr, 2, 1), std::invalid_argument);
  Histogram h;
  const std::vector<float> d = {-2, -2, -2, 3, 3};
  h.observe(d.data(), static_cast<int64_t>(d.size()));
  const std::vector<double> c = kmeans_1d(h, 2);
  EXPECT_NEAR(c[0], -2, 0.01);
  EXPECT_NEAR(c[1], 3, 0.01);
}

}  // namespace
}  // namespace calib
}  // namespace anybit
