// One-dimensional k-means; see kmeans.h.
#include "anybit/calib/kmeans.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "anybit/calib/calibrator.h"

namespace anybit {
namespace calib {

std::vector<double> kmeans_1d(const float* x, const double* w, int64_t n, int k, int iterations) {
  if (k < 1) throw std::invalid_argument("kmeans_1d: k must be positive, got " + std::to_string(k));
  if (n < 1) throw std::invalid_argument("kmeans_1d: no values");
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) throw std::invalid_argument("kmeans_1d: value " + std::to_string(x[i]) + " is not finite");
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a] < x[b]; });
  std::vector<double> v(n), wt(n);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    v[i] = x[order[i]];
    wt[i] = w ? w[order[i]] : 1.0;
    total += wt[i];
  }
  // weighted quantiles (i + 0.5) / k of the sorted values
  std::vector<double> c(k);
  {
    double acc = 0;
    int64_t j = 0;
    for (int i = 0; i < k; ++i) {
      const double target = (i + 0.5) / k * total;
      while (j + 1 < n && acc + wt[j] < target) acc += wt[j++];
      c[i] = v[j];
    }
  }
  std::vector<double> sum(k), mass(k);
  for (int it = 0; it < iterations; ++it) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(mass.begin(), mass.end(), 0.0);
    // the values are sorted and so are the centres: one sweep assigns them all
    int cur = 0;
    for (int64_t i = 0; i < n; ++i) {
      while (cur + 1 < k && std::fabs(v[i] - c[cur + 1]) <= std::fabs(v[i] - c[cur])) ++cur;
      sum[cur] += wt[i] * v[i];
      mass[cur] += wt[i];
    }
    bool moved = false;
    for (int i = 0; i < k; ++i) {
      if (mass[i] <= 0) continue;
      const double m = sum[i] / mass[i];
      moved = moved || m != c[i];
      c[i] = m;
    }
    std::sort(c.begin(), c.end());
    if (!moved) break;
  }
  return c;
}

std::vector<double> kmeans_1d(const Histogram& h, int k, int iterations) {
  std::vector<float> centres;
  std::vector<double> counts;
  for (int b = 0; b < h.bins(); ++b)
    if (h.counts()[b] > 0) {
      centres.push_back(static_cast<float>(h.bin_center(b)));
      counts.push_back(static_cast<double>(h.counts()[b]));
    }
  if (centres.empty()) throw std::invalid_argument("kmeans_1d: the histogram holds no value");
  return kmeans_1d(centres.data(), counts.data(), static_cast<int64_t>(centres.size()), k, iterations);
}

}  // namespace calib
}  // namespace anybit
