// Range selection (the methods, the grid, the expected error on a histogram, the searches);
// calibrator.h gives the methods, formulas and sources. The observers are histogram.cc.
#include "anybit/calib/calibrator.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "anybit/calib/calib_internal.h"

namespace anybit {
namespace calib {

using detail::check_view;
using detail::gather_channel;
using detail::kInf;
using detail::num;

namespace {

// Scales below this are raised to it, as the parameters from weights (quant/scheme.cc) are.
constexpr double kMinScale = 1e-12;


}  // namespace

// ---- method names -----------------------------------------------------------------

MethodSpec parse_method(const std::string& text) {
  MethodSpec m;
  std::string name = text, arg;
  const auto colon = text.find(':');
  if (colon != std::string::npos) {
    name = text.substr(0, colon);
    arg = text.substr(colon + 1);
  }
  const bool has_arg = colon != std::string::npos;
  if (name == "percentile") {
    m.method = Method::kPercentile;
    if (has_arg) {
      char* end = nullptr;
      m.percentile = std::strtod(arg.c_str(), &end);
      if (arg.empty() || end != arg.c_str() + arg.size() ||
          !(m.percentile > 0 && m.percentile <= 100))
        throw std::invalid_argument("calibrator '" + text +
                                    "': the percentile must be a number in (0, 100]");
    }
    return m;
  }
  if (!has_arg) {
    if (name == "minmax") {
      m.method = Method::kMinMax;
      return m;
    }
    if (name == "ema") {
      m.method = Method::kEma;
      return m;
    }
    if (name == "mse") {
      m.method = Method::kMse;
      return m;
    }
    if (name == "entropy") {
      m.method = Method::kEntropy;
      return m;
    }
  }
  throw std::invalid_argument("unknown calibrator '" + text +
                              "' (expected minmax, ema, percentile[:P], mse, entropy)");
}

std::string method_name(const MethodSpec& m) {
  switch (m.method) {
    case Method::kMinMax: return "minmax";
    case Method::kEma: return "ema";
    case Method::kPercentile: {
      std::ostringstream s;
      s.precision(17);
      s << "percentile:" << m.percentile;
      return s.str();
    }
    case Method::kMse: return "mse";
    case Method::kEntropy: return "entropy";
  }
  return "minmax";
}

// ---- the grid -----------------------------------------------------------------------

Grid grid_for_range(double lo, double hi, const QuantTarget& t) {
  // the float rounding of quant_squared_error is exact up to 2^22 levels
  if (t.qmin >= t.qmax || static_cast<int64_t>(t.qmax) - t.qmin > (1 << 22))
    throw std::invalid_argument("calibration target: integer range [" + std::to_string(t.qmin) +
                                ", " + std::to_string(t.qmax) +
                                "] must have qmin < qmax and at most 2^22 steps");
  Grid g;
  if (t.asymmetric) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    g.scale = std::max((hi - lo) / (t.qmax - t.qmin), kMinScale);
    if (t.pow2_scale) g.scale = std::exp2(std::ceil(std::log2(g.scale)));
    g.zero_point = std::min<double>(
        std::max<double>(t.qmin - std::nearbyint(lo / g.scale), t.qmin), t.qmax);
    return g;
  }
  if (t.qmax <= 0)
    throw std::invalid_argument("calibration target: a zero-point-0 grid needs qmax > 0, got [" +
                                std::to_string(t.qmin) + ", " + std::to_string(t.qmax) + "]");
  const double top = t.is_signed_data_range ? std::max(std::fabs(lo), std::fabs(hi)) : std::max(hi, 0.0);
  g.scale = std::max(top / t.qmax, kMinScale);
  if (t.pow2_scale) g.scale = std::exp2(std::ceil(std::log2(g.scale)));
  return g;
}

// ---- expected error on the histogram ---------------------------------------------------

namespace {

// (b^3 - a^3) / 3 in a form that keeps precision when a and b are close.
double cube_diff_third(double a, double b) { return (b - a) * (a * a + a * b + b * b) / 3.0; }

// Integral over [0, m] of the rounding sawtooth (v - round(v))^2 started at a cell edge
// (v from -1/2): 1/12 per whole cell plus the partial one.
double sawtooth_integral(double m) {
  const double whole = std::floor(m), f = m - whole - 0.5;
  return whole / 12.0 + (f * f * f + 0.125) / 3.0;
}

// Integral over [a, b] (grid units u = x/s + z) of e(u) = (u - clamp(round(u), qmin, qmax))^2:
// (u - qmin)^2 below qmin + 1/2, (u - qmax)^2 above qmax - 1/2, the sawtooth between.
double grid_error_integral(double a, double b, double qmin, double qmax) {
  const double A = qmin + 0.5, B = qmax - 0.5;
  double total = 0;
  if (a < A) total += cube_diff_third(a - qmin, std::min(b, A) - qmin);
  if (b > B) total += cube_diff_third(std::max(a, B) - qmax, b - qmax);
  const double m0 = std::max(a, A), m1 = std::min(b, B);
  if (m1 > m0) total += sawtooth_integral(m1 - A) - sawtooth_integral(m0 - A);
  return total;
}

}  // namespace

double histogram_quant_mse(const Histogram& h, double lo, double hi, const QuantTarget& t) {
  const Grid g = grid_for_range(lo, hi, t);
  if (h.count() == 0) return 0;
  const double s = g.scale, z = g.zero_point, w = h.bin_width();
  double err = 0;
  for (int i = 0; i < h.bins(); ++i) {
    const int64_t c = h.counts()[i];
    if (c == 0) continue;
    const double a = h.bin_lower(i) / s + z, b = a + w / s;
    err += c * s * s * grid_error_integral(a, b, t.qmin, t.qmax) / (b - a);
  }
  return err;
}

double histogram_quant_mse_reference(const Histogram& h, double lo, double hi,
                                     const QuantTarget& t, int samples_per_bin) {
  const Grid g = grid_for_range(lo, hi, t);
  double err = 0;
  for (int i = 0; i < h.bins(); ++i) {
    const int64_t c = h.counts()[i];
    if (c == 0) continue;
    double e = 0;
    for (int k = 0; k < samples_per_bin; ++k) {
      const double x = h.bin_lower(i) + (k + 0.5) / samples_per_bin * h.bin_width();
      const double q = std::min<double>(std::max<double>(std::nearbyint(x / g.scale) + g.zero_point, t.qmin), t.qmax);
      const double d = x - (q - g.zero_point) * g.scale;
      e += d * d;
    }
    err += c * e / samples_per_bin;
  }
  return err;
}

// ---- range selection ----------------------------------------------------------------

namespace {

// The value below which `frac` of the samples lie, linear inside a bin.
double quantile(const Histogram& h, double frac) {
  const double target = frac * h.count();
  double cum = 0;
  for (int i = 0; i < h.bins(); ++i) {
    const double c = static_cast<double>(h.counts()[i]);
    if (c > 0 && cum + c >= target) return h.bin_lower(i) + (target - cum) / c * h.bin_width();
    cum += c;
  }
  return h.max();
}

// |x| histogram: bin j holds |x| in [j w, (j + 1) w), w the histogram's bin width.
std::vector<double> folded_abs(const Histogram& h) {
  const int half = h.bins() / 2;
  std::vector<double> f(half);
  for (int j = 0; j < half; ++j)
    f[j] = static_cast<double>(h.counts()[half + j] + h.counts()[half - 1 - j]);
  return f;
}

double abs_quantile(const Histogram& h, double frac) {
  const std::vector<double> f = folded_abs(h);
  const double target = frac * h.count();
  double cum = 0;
  for (size_t j = 0; j < f.size(); ++j) {
    if (f[j] > 0 && cum + f[j] >= target) return (j + (target - cum) / f[j]) * h.bin_width();
    cum += f[j];
  }
  return h.amax();
}

// Clip search for histogram MSE: 200 candidates from top down to top/100 (geometric,
// 2.3% apart), then 20 linear steps between the best's neighbours.
template <class Err>
double search_clip(double top, Err err) {
  constexpr int kCoarse = 200, kFine = 20;
  const double ratio = std::pow(100.0, -1.0 / (kCoarse - 1));
  double best_c = top, best_e = err(top), c = top;
  for (int k = 1; k < kCoarse; ++k) {
    c *= ratio;
    const double e = err(c);
    if (e < best_e) best_e = e, best_c = c;
  }
  const double lo = best_c * ratio, hi = std::min(top, best_c / ratio);
  for (int k = 1; k < kFine; ++k) {
    const double cc = lo + (hi - lo) * k / kFine;
    const double e = err(cc);
    if (e < best_e) best_e = e, best_c = cc;
  }
  return best_c;
}

Range mse_range(const Observer& o, const QuantTarget& t) {
  const Histogram& h = o.histogram();
  if (t.asymmetric) {
    const double lo0 = std::min(o.min(), 0.0), hi0 = std::max(o.max(), 0.0);
    if (lo0 == hi0) return {o.min(), o.max()};
    // both tails shrunk together, then each tail alone, twice
    const double a = search_clip(1.0, [&](double f) { return histogram_quant_mse(h, lo0 * f, hi0 * f, t); });
    Range r{lo0 * a, hi0 * a};
    for (int round = 0; round < 2; ++round) {
      if (lo0 < 0)
        r.lo = -search_clip(-lo0, [&](double c) { return histogram_quant_mse(h, -c, r.hi, t); });
      if (hi0 > 0)
        r.hi = search_clip(hi0, [&](double c) { return histogram_quant_mse(h, r.lo, c, t); });
    }
    return r;
  }
  if (t.is_signed_data_range) {
    const double amax = o.histogram().amax();
    if (amax == 0) return {0, 0};
    const double c = search_clip(amax, [&](double c) { return histogram_quant_mse(h, -c, c, t); });
    return {-c, c};
  }
  if (o.max() <= 0) return {0, 0};
  const double c = search_clip(o.max(), [&](double c) { return histogram_quant_mse(h, 0, c, t); });
  return {0, c};
}

// TensorRT's KL divergence for the window [start, end) of `bins` quantized to `levels`
// cells; see choose_range in calibrator.h. `prefix[i]` = sum of bins[0, i).
double kl_window(const std::vector<double>& bins, const std::vector<double>& prefix, int start,
                 int end, int levels, std::vector<double>& cell_mass, std::vector<int>& cell_nonzero,
                 std::vector<int>& cell_of) {
  const int n = end - start;
  const double step = static_cast<double>(n) / (levels - 1);
  cell_mass.assign(levels, 0.0);
  cell_nonzero.assign(levels, 0);
  cell_of.resize(n);
  for (int j = 0; j < n; ++j) {
    const int cell = std::min(levels - 1, static_cast<int>(std::floor((j + 0.5) / step + 0.5)));
    cell_of[j] = cell;
    const double b = bins[start + j];
    cell_mass[cell] += b;
    cell_nonzero[cell] += b > 0;
  }
  const double inside = prefix[end] - prefix[start];
  const double total = prefix.back();
  if (inside <= 0 || total <= 0) return kInf;
  const double below = prefix[start], above = total - prefix[end];
  // an empty cell of Q where P has mass makes KL infinite; TensorRT implementations
  // reject such windows, the floor turns that into a large finite penalty
  constexpr double kQFloor = 1e-12;
  double kl = 0;
  for (int j = 0; j < n; ++j) {
    const double b = bins[start + j];
    const double p = (b + (j == 0 ? below : 0.0) + (j == n - 1 ? above : 0.0)) / total;
    if (p <= 0) continue;
    const double q = b > 0 ? cell_mass[cell_of[j]] / cell_nonzero[cell_of[j]] / inside : 0.0;
    kl += p * std::log(p / std::max(q, kQFloor));
  }
  return kl;
}

std::vector<double> prefix_sums(const std::vector<double>& v) {
  std::vector<double> p(v.size() + 1, 0.0);
  for (size_t i = 0; i < v.size(); ++i) p[i + 1] = p[i] + v[i];
  return p;
}

Range entropy_range(const Observer& o, const QuantTarget& t) {
  grid_for_range(0, 1, t);  // validates the target
  const Histogram& h = o.histogram();
  const double w = h.bin_width();
  const int half = h.bins() / 2;
  std::vector<double> cell_mass;
  std::vector<int> cell_nonzero, cell_of;

  if (!t.asymmetric) {
    // symmetric: the |x| histogram; unsigned: the x >= 0 half, negative mass below it
    const bool sym = t.is_signed_data_range;
    std::vector<double> bins;
    int start = 0;
    if (sym) {
      bins = folded_abs(h);
    } else {
      bins.assign(h.counts().begin(), h.counts().end());
      start = half;
    }
    const std::vector<double> prefix = prefix_sums(bins);
    int last = static_cast<int>(bins.size());
    while (last > start && bins[last - 1] == 0) --last;
    const double top = sym ? h.amax() : std::max(o.max(), 0.0);
    const int levels = t.qmax + 1;  // magnitudes 0..qmax (zero point 0)
    if (last - start <= levels) return sym ? Range{-top, top} : Range{0, top};
    double best_kl = kInf;
    int best_end = last;
    for (int end = start + levels; end <= last; ++end) {
      const double kl = kl_window(bins, prefix, start, end, levels, cell_mass, cell_nonzero, cell_of);
      if (kl < best_kl) best_kl = kl, best_end = end;
    }
    const double c = best_end == last ? top : std::min(top, (best_end - start) * w);
    return sym ? Range{-c, c} : Range{0, c};
  }

  // asymmetric: windows [start, end) around the zero bin edge; both tails shrunk in
  // proportion first, then each tail alone with the other fixed (twice)
  std::vector<double> bins(h.counts().begin(), h.counts().end());
  const std::vector<double> prefix = prefix_sums(bins);
  int first = 0, last = h.bins();
  while (first < last && bins[first] == 0) ++first;
  while (last > first && bins[last - 1] == 0) --last;
  const int levels = t.qmax - t.qmin + 1;
  const int lo_full = std::min(first, half), hi_full = std::max(last, half);
  if (hi_full - lo_full <= levels) return {o.min(), o.max()};
  double best_kl = kInf;
  int best_start = lo_full, best_end = hi_full;
  auto consider = [&](int s, int e) {
    if (e - s < levels) return;
    const double kl = kl_window(bins, prefix, s, e, levels, cell_mass, cell_nonzero, cell_of);
    if (kl < best_kl) best_kl = kl, best_start = s, best_end = e;
  };
  constexpr int kCandidates = 512;
  for (int k = kCandidates; k >= 1; --k) {
    const double a = static_cast<double>(k) / kCandidates;
    consider(half - static_cast<int>(std::lround(a * (half - lo_full))),
             half + static_cast<int>(std::lround(a * (hi_full - half))));
  }
  for (int round = 0; round < 2; ++round) {
    const int s = best_start;
    for (int e = half; e <= hi_full; ++e) consider(s, e);
    const int e = best_end;
    for (int s2 = lo_full; s2 <= half; ++s2) consider(s2, e);
  }
  return {best_start <= first ? o.min() : h.bin_lower(best_start),
          best_end >= last ? o.max() : h.bin_lower(best_end)};
}

}  // namespace

Range choose_range(const Observer& o, const MethodSpec& m, const QuantTarget& t) {
  if (o.count() == 0) return {0, 0};
  switch (m.method) {
    case Method::kMinMax:
      return {o.min(), o.max()};
    case Method::kEma:
      return o.ema();
    case Method::kPercentile: {
      const Histogram& h = o.histogram();
      const double p = m.percentile / 100.0;
      if (t.asymmetric)
        return {std::max(o.min(), quantile(h, std::min(p, 1 - p))),
                std::min(o.max(), quantile(h, std::max(p, 1 - p)))};
      if (t.is_signed_data_range) {
        const double c = std::min(abs_quantile(h, p), h.amax());
        return {-c, c};
      }
      return {0.0, std::min(o.max(), std::max(quantile(h, p), 0.0))};
    }
    case Method::kMse:
      return mse_range(o, t);
    case Method::kEntropy:
      return entropy_range(o, t);
  }
  return {o.min(), o.max()};
}

Range choose_range(const Observer& o, Method method, const QuantTarget& t) {
  MethodSpec m;
  m.method = method;
  return choose_range(o, m, t);
}

// ---- exact MSE on raw data --------------------------------------------------------------

namespace {

// 1.5 * 2^23: (v + M) - M rounds a float to the nearest integer, ties to even, for
// |v| < 2^22 under the default rounding mode, as the fake-quant kernel does.
constexpr float kRoundMagic = 12582912.0f;

__attribute__((noinline)) double squared_error_span(const float* __restrict x, int64_t n,
                                                    float inv, float s, float vlo, float vhi) {
  constexpr int kLanes = 8;
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      float v = x[i + j] * inv;
      v = v < vlo ? vlo : v;
      v = v > vhi ? vhi : v;
      const float xhat = ((v + kRoundMagic) - kRoundMagic) * s;
      const double d = static_cast<double>(x[i + j]) - xhat;
      acc[j] += d * d;
    }
  }
  double total = 0;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  for (; i < n; ++i) {
    float v = x[i] * inv;
    v = v < vlo ? vlo : v;
    v = v > vhi ? vhi : v;
    const double d = static_cast<double>(x[i]) - ((v + kRoundMagic) - kRoundMagic) * s;
    total += d * d;
  }
  return total;
}

}  // namespace

double quant_squared_error(const float* x, int64_t n, double lo, double hi, const QuantTarget& t) {
  const Grid g = grid_for_range(lo, hi, t);
  const float s = static_cast<float>(g.scale), inv = 1.0f / s;
  const float z = static_cast<float>(g.zero_point);
  return squared_error_span(x, n, inv, s, t.qmin - z, t.qmax - z);
}

Range mse_optimal_range(const float* x, int64_t n, const QuantTarget& t) {
  grid_for_range(0, 1, t);  // validates the target
  double mn = 0, mx = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      throw std::invalid_argument("mse_optimal_range: x[" + std::to_string(i) + "] = " + num(x[i]) +
                                  " is not finite");
    mn = std::min<double>(mn, x[i]);
    mx = std::max<double>(mx, x[i]);
  }
  auto range_at = [&](double a) -> Range {
    if (t.asymmetric) return {a * mn, a * mx};
    if (t.is_signed_data_range) {
      const double c = a * std::max(-mn, mx);
      return {-c, c};
    }
    return {0.0, a * mx};
  };
  const Range full = range_at(1.0);
  if (n == 0 || (full.lo == 0 && full.hi == 0)) return full;
  auto err = [&](double a) {
    const Range r = range_at(a);
    return quant_squared_error(x, n, r.lo, r.hi, t);
  };
  constexpr int kCoarse = 100, kFine = 10;
  double best_a = 1.0, best_e = err(1.0);
  for (int k = kCoarse - 1; k >= 1; --k) {
    const double a = static_cast<double>(k) / kCoarse;
    const double e = err(a);
    if (e < best_e) best_e = e, best_a = a;
  }
  const double centre = best_a;
  for (int j = -kFine; j <= kFine; ++j) {
    const double a = centre + j / (10.0 * kCoarse);
    if (j == 0 || a <= 0 || a > 1) continue;
    const double e = err(a);
    if (e < best_e) best_e = e, best_a = a;
  }
  return range_at(best_a);
}

double mse_optimal_clip(const float* x, int64_t n, int qmin, int qmax, bool symmetric) {
  QuantTarget t;
  t.qmin = qmin;
  t.qmax = qmax;
  t.is_signed_data_range = symmetric;
  t.asymmetric = !symmetric;
  const Range r = mse_optimal_range(x, n, t);
  return std::max(-r.lo, r.hi);
}

std::vector<Range> mse_optimal_range_per_channel(const float* x, int64_t outer, int64_t channels,
                                                 int64_t inner, const QuantTarget& t) {
  check_view("mse_optimal_range_per_channel", outer, channels, inner);
  std::vector<Range> out(channels);
  std::vector<float> buf;
  for (int64_t c = 0; c < channels; ++c) {
    gather_channel(x, outer, channels, inner, c, buf);
    out[c] = mse_optimal_range(buf.data(), static_cast<int64_t>(buf.size()), t);
  }
  return out;
}

}  // namespace calib
}  // namespace anybit
