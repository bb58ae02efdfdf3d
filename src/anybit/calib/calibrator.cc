// Observers and range selection; see calibrator.h for the methods and their sources.
#include "anybit/calib/calibrator.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace anybit {
namespace calib {

MethodSpec parse_method(const std::string& text) {
  MethodSpec m;
  std::string name = text, arg;
  const auto colon = text.find(':');
  if (colon != std::string::npos) {
    name = text.substr(0, colon);
    arg = text.substr(colon + 1);
  }
  if (name == "minmax" && arg.empty()) {
    m.method = Method::kMinMax;
  } else if ((name == "ema" || name == "moving_average") && arg.empty()) {
    m.method = Method::kEma;
  } else if (name == "percentile") {
    m.method = Method::kPercentile;
    if (!arg.empty()) {
      char* end = nullptr;
      m.percentile = std::strtod(arg.c_str(), &end);
      if (end != arg.c_str() + arg.size() || !(m.percentile > 0 && m.percentile <= 100))
        throw std::invalid_argument("calibrator '" + text + "': the percentile must be in (0, 100]");
    }
  } else if ((name == "mse" || name == "histogram") && arg.empty()) {
    m.method = Method::kMse;
  } else if ((name == "entropy" || name == "kl") && arg.empty()) {
    m.method = Method::kEntropy;
  } else {
    throw std::invalid_argument("unknown calibrator '" + text +
                                "' (expected minmax, ema, percentile[:P], mse, entropy)");
  }
  return m;
}

// ---- histogram ----------------------------------------------------------------------

void Histogram::grow_to(double amax) {
  if (range_ == 0) {
    range_ = std::exp2(std::ceil(std::log2(std::max(amax, 1e-30))));
    return;
  }
  while (amax > range_) {
    // [-R, R] becomes [-2R, 2R]: old bin j lands in new bin kBins/4 + j/2
    std::vector<double> merged(kBins, 0.0);
    for (int j = 0; j < kBins; ++j) merged[kBins / 4 + j / 2] += counts_[j];
    counts_.swap(merged);
    range_ *= 2;
  }
}

void Histogram::observe(const float* x, int64_t n) {
  double amax = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = std::fabs(x[i]);
    if (a > amax && std::isfinite(a)) amax = a;
  }
  grow_to(amax);
  const double inv_w = 1.0 / bin_width();
  // x + R >= 0 here (R >= max|x|), so truncation is floor
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) continue;
    long b = static_cast<long>((x[i] + range_) * inv_w);
    b = std::min<long>(std::max<long>(b, 0), kBins - 1);
    counts_[b] += 1;
  }
}

void Observer::observe(const float* x, int64_t n) {
  if (n <= 0) return;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sa = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) continue;
    lo = std::min<double>(lo, x[i]);
    hi = std::max<double>(hi, x[i]);
    sa += std::fabs(x[i]);
  }
  if (!std::isfinite(lo)) return;
  constexpr double kAveragingConstant = 0.01;
  if (first_) {
    min_ = lo;
    max_ = hi;
    ema_lo_ = lo;
    ema_hi_ = hi;
    first_ = false;
  } else {
    min_ = std::min(min_, lo);
    max_ = std::max(max_, hi);
    ema_lo_ += kAveragingConstant * (lo - ema_lo_);
    ema_hi_ += kAveragingConstant * (hi - ema_hi_);
  }
  count_ += n;
  sum_abs_ += sa;
  hist_.observe(x, n);
}

// ---- range selection ----------------------------------------------------------------

namespace {

// Grid step and zero point of a range on the target, as the quantizer will use them.
void grid_of(double lo, double hi, const QuantTarget& t, double* s, double* z) {
  if (t.asymmetric) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    *s = std::max((hi - lo) / (t.qmax - t.qmin), 1e-30);
    *z = std::min<double>(std::max<double>(t.qmin - std::nearbyint(lo / *s), t.qmin), t.qmax);
  } else if (t.is_signed_data_range) {
    *s = std::max(std::max(std::fabs(lo), std::fabs(hi)) / t.qmax, 1e-30);
    *z = 0;
  } else {
    *s = std::max(hi / t.qmax, 1e-30);
    *z = 0;
  }
}

// The value below which `frac` of the histogram's mass lies (linear inside a bin).
double quantile(const Histogram& h, double frac) {
  double total = 0;
  for (double c : h.counts()) total += c;
  const double target = frac * total;
  double cum = 0;
  for (int i = 0; i < Histogram::kBins; ++i) {
    const double c = h.counts()[i];
    if (cum + c >= target && c > 0) {
      const double f = (target - cum) / c;
      return -h.range() + (i + f) * h.bin_width();
    }
    cum += c;
  }
  return h.range();
}

// |x| quantile: fold the histogram around zero.
double abs_quantile(const Histogram& h, double frac) {
  const int half = Histogram::kBins / 2;
  std::vector<double> folded(half);
  double total = 0;
  for (int j = 0; j < half; ++j) {
    folded[j] = h.counts()[half + j] + h.counts()[half - 1 - j];
    total += folded[j];
  }
  const double target = frac * total, w = h.bin_width();
  double cum = 0;
  for (int j = 0; j < half; ++j) {
    if (cum + folded[j] >= target && folded[j] > 0) return (j + (target - cum) / folded[j]) * w;
    cum += folded[j];
  }
  return h.range();
}

// Candidate ranges: the observed range shrunk by a factor a in (0, 1].
Range scaled(const Observer& o, const QuantTarget& t, double a) {
  if (t.asymmetric) return {o.min() * a, o.max() * a};
  if (t.is_signed_data_range) {
    const double m = std::max(std::fabs(o.min()), std::fabs(o.max())) * a;
    return {-m, m};
  }
  return {0.0, std::max(o.max(), 0.0) * a};
}

double kl_clip(const Observer& o, const QuantTarget& t) {
  // magnitude histogram: |x| for symmetric signed targets, the positive side otherwise
  const Histogram& h = o.histogram();
  const int half = Histogram::kBins / 2;
  std::vector<double> mag(half);
  for (int j = 0; j < half; ++j)
    mag[j] = h.counts()[half + j] + (t.is_signed_data_range ? h.counts()[half - 1 - j] : 0.0);
  int last = half;
  while (last > 1 && mag[last - 1] == 0) --last;
  const int levels = t.is_signed_data_range ? t.qmax + 1 : t.qmax - t.qmin + 1;
  const double w = h.bin_width();
  if (levels >= last) return last * w;
  double best_kl = std::numeric_limits<double>::infinity();
  int best_i = last;
  std::vector<double> p, q;
  for (int i = levels; i <= last; ++i) {
    p.assign(mag.begin(), mag.begin() + i);
    double outliers = 0;
    for (int j = i; j < last; ++j) outliers += mag[j];
    p[i - 1] += outliers;
    // quantize the first i bins into `levels` groups; spread each group's mass evenly
    // over its non-empty bins
    q.assign(i, 0.0);
    for (int g = 0; g < levels; ++g) {
      const int b0 = static_cast<int>(static_cast<long>(g) * i / levels);
      const int b1 = static_cast<int>(static_cast<long>(g + 1) * i / levels);
      double mass = 0;
      int nonzero = 0;
      for (int j = b0; j < b1; ++j) {
        mass += mag[j];
        nonzero += mag[j] > 0;
      }
      for (int j = b0; j < b1; ++j) q[j] = (mag[j] > 0 && nonzero) ? mass / nonzero : 0.0;
    }
    double ps = 0, qs = 0;
    for (int j = 0; j < i; ++j) {
      ps += p[j];
      qs += q[j];
    }
    if (ps <= 0 || qs <= 0) continue;
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      if (p[j] <= 0) continue;
      const double pj = p[j] / ps, qj = std::max(q[j] / qs, 1e-12);
      kl += pj * std::log(pj / qj);
    }
    if (kl < best_kl) {
      best_kl = kl;
      best_i = i;
    }
  }
  return best_i * w;
}

}  // namespace

double histogram_quant_mse(const Histogram& h, double lo, double hi, const QuantTarget& t) {
  double s, z;
  grid_of(lo, hi, t, &s, &z);
  const double qlo = (t.qmin - z) * s, qhi = (t.qmax - z) * s;
  double err = 0;
  for (int i = 0; i < Histogram::kBins; ++i) {
    const double c = h.counts()[i];
    if (c == 0) continue;
    const double x = h.bin_center(i);
    if (x < qlo) {
      err += c * (x - qlo) * (x - qlo);
    } else if (x > qhi) {
      err += c * (x - qhi) * (x - qhi);
    } else {
      err += c * s * s / 12.0;  // uniform rounding noise inside the range
    }
  }
  return err;
}

Range choose_range(const Observer& o, const MethodSpec& m, const QuantTarget& t) {
  if (o.count() == 0) return {0, 0};
  switch (m.method) {
    case Method::kMinMax:
      return {o.min(), o.max()};
    case Method::kEma:
      return o.ema();
    case Method::kPercentile: {
      const double p = m.percentile / 100.0;
      if (t.asymmetric)
        return {std::max(o.min(), quantile(o.histogram(), 1 - p)), std::min(o.max(), quantile(o.histogram(), p))};
      if (t.is_signed_data_range) {
        const double c = std::min(abs_quantile(o.histogram(), p), std::max(std::fabs(o.min()), std::fabs(o.max())));
        return {-c, c};
      }
      return {0.0, std::min(o.max(), std::max(quantile(o.histogram(), p), 0.0))};
    }
    case Method::kMse: {
      Range best = scaled(o, t, 1.0);
      double best_err = histogram_quant_mse(o.histogram(), best.lo, best.hi, t);
      for (int k = 1; k < 200; ++k) {
        const Range r = scaled(o, t, k / 200.0);
        const double e = histogram_quant_mse(o.histogram(), r.lo, r.hi, t);
        if (e < best_err) {
          best_err = e;
          best = r;
        }
      }
      return best;
    }
    case Method::kEntropy: {
      const double c = kl_clip(o, t);
      if (t.asymmetric) {
        const double m2 = std::max(std::fabs(o.min()), std::fabs(o.max()));
        const double a = m2 > 0 ? std::min(1.0, c / m2) : 1.0;
        return {o.min() * a, o.max() * a};
      }
      if (t.is_signed_data_range) return {-c, c};
      return {0.0, std::min(c, std::max(o.max(), 0.0))};
    }
  }
  return {o.min(), o.max()};
}

double mse_optimal_clip(const float* x, int64_t n, int qmin, int qmax, bool symmetric) {
  double amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, static_cast<double>(std::fabs(x[i])));
  if (amax == 0 || n == 0) return amax;
  auto err = [&](double c) {
    const float s = static_cast<float>(c / qmax), inv = 1.0f / s;
    const float lo = static_cast<float>(symmetric ? qmin : 0), hi = static_cast<float>(qmax);
    double e = 0;
    for (int64_t i = 0; i < n; ++i) {
      float q = std::nearbyint(x[i] * inv);
      q = std::min(std::max(q, lo), hi);
      const double d = x[i] - q * s;
      e += d * d;
    }
    return e;
  };
  double best_c = amax, best_e = err(amax);
  constexpr int kCoarse = 25, kFine = 20;
  for (int k = 1; k < kCoarse; ++k) {
    const double c = amax * k / kCoarse;
    const double e = err(c);
    if (e < best_e) {
      best_e = e;
      best_c = c;
    }
  }
  const double step = amax / kCoarse;
  const double base = best_c;
  for (int k = -kFine; k <= kFine; ++k) {
    const double c = base + step * k / kFine;
    if (c <= 0 || c > amax) continue;
    const double e = err(c);
    if (e < best_e) {
      best_e = e;
      best_c = c;
    }
  }
  return best_c;
}

}  // namespace calib
}  // namespace anybit
