// Calibrators: choose the float range [lo, hi] a uniform quantizer covers, from
// statistics observed on calibration data. Plain C++17 (no LibTorch).
//
//   minmax      [min, max] of everything observed
//   ema         moving-average min/max (PyTorch MovingAverageMinMaxObserver, c = 0.01)
//   percentile  clip at the P-th percentile of |x| (symmetric) or of each tail (default 99.99)
//   mse         the clip that minimizes the expected squared quantization error, clipping
//               included, for the target's number of levels (Banner et al. 2019, ACIQ;
//               the norm minimization of PyTorch's HistogramObserver)
//   entropy     the clip that minimizes the KL divergence between the histogram and its
//               quantized version (Migacz 2017, TensorRT), for the target's levels
//
// Histogram: 2048 bins over [-R, R]; when a value exceeds R, R doubles and pairs of bins
// merge, so no sample is lost or counted twice and the result does not depend on how
// the data was split into batches.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace anybit {
namespace calib {

struct Range {
  double lo = 0, hi = 0;
};

enum class Method { kMinMax, kEma, kPercentile, kMse, kEntropy };

struct MethodSpec {
  Method method = Method::kMinMax;
  double percentile = 99.99;
};
// Throws std::invalid_argument naming the text.
MethodSpec parse_method(const std::string& text);

// The integer grid the range is chosen for.
struct QuantTarget {
  int qmin = -128, qmax = 127;
  bool is_signed_data_range = true;  // symmetric around zero (signed, zero point 0)
  bool asymmetric = false;           // free zero point: clip each tail
};

class Histogram {
 public:
  static constexpr int kBins = 2048;
  void observe(const float* x, int64_t n);
  double range() const { return range_; }  // R: bins cover [-R, R]
  const std::vector<double>& counts() const { return counts_; }
  double bin_width() const { return 2 * range_ / kBins; }
  double bin_center(int i) const { return -range_ + (i + 0.5) * bin_width(); }

 private:
  void grow_to(double amax);
  double range_ = 0;
  std::vector<double> counts_ = std::vector<double>(kBins, 0.0);
};

class Observer {
 public:
  void observe(const float* x, int64_t n);
  int64_t count() const { return count_; }
  double min() const { return min_; }
  double max() const { return max_; }
  double mean_abs() const { return count_ ? sum_abs_ / count_ : 0.0; }
  Range ema() const { return {ema_lo_, ema_hi_}; }
  const Histogram& histogram() const { return hist_; }

 private:
  int64_t count_ = 0;
  double min_ = 0, max_ = 0, sum_abs_ = 0;
  double ema_lo_ = 0, ema_hi_ = 0;
  bool first_ = true;
  Histogram hist_;
};

Range choose_range(const Observer& obs, const MethodSpec& method, const QuantTarget& target);

// Expected squared error of quantizing the histogram with clip range [lo, hi] on the
// target grid: rounding error inside, clipping error outside (bin centres weighted).
double histogram_quant_mse(const Histogram& h, double lo, double hi, const QuantTarget& t);

// The symmetric clip c minimizing sum (x - Q(x))^2 on raw data, with
// Q(x) = clamp(round(x / s), qmin, qmax) * s and s = c / qmax; searched over
// c = max|x| * k / 100, k = 1..100, then refined around the best. Never worse than
// c = max|x| (it is a candidate).
double mse_optimal_clip(const float* x, int64_t n, int qmin, int qmax, bool symmetric);

}  // namespace calib
}  // namespace anybit
