// Observers and range selection; calibrator.h gives the methods, formulas and sources.
#include "anybit/calib/calibrator.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace anybit {
namespace calib {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// The smallest histogram range: FLT_MIN, so every non-zero normal float grows it.
const double kMinRange = std::ldexp(1.0, -126);
// Scales below this are raised to it, as core/quantize.cc's clamp_scale does.
constexpr double kMinScale = 1e-12;

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// floor(a / 2^k) for k >= 0, exact for every int64 a.
int64_t floor_div_pow2(int64_t a, int k) {
  if (k >= 62) return a < 0 ? -1 : 0;
  const int64_t d = int64_t{1} << k;
  return a >= 0 ? a / d : -((-a + d - 1) / d);
}

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

// ---- histogram ----------------------------------------------------------------------

Histogram::Histogram(int bins) {
  if (bins < 2 || (bins & (bins - 1)) != 0)
    throw std::invalid_argument("Histogram: the bin count must be a power of two >= 2, got " +
                                std::to_string(bins));
  counts_.assign(bins, 0);
}

// [-R, R] becomes [-R', R'], R' = 2^k R: bin j (x*half/R in [j - half, j - half + 1))
// lands in bin half + floor((j - half) / 2^k). Integer arithmetic: exact.
void Histogram::grow_to_range(double r) {
  if (r <= range_) return;
  const int k = std::ilogb(r) - std::ilogb(range_);
  const int half = bins() / 2;
  std::vector<int64_t> merged(counts_.size(), 0);
  for (int j = 0; j < bins(); ++j)
    if (counts_[j]) merged[half + floor_div_pow2(j - half, k)] += counts_[j];
  counts_.swap(merged);
  range_ = r;
}

void Histogram::grow_to_cover(double amax) {
  int e = 0;
  std::frexp(amax, &e);  // amax = m * 2^e, m in [0.5, 1): 2^e > amax
  const double r = amax > 0 ? std::max(std::ldexp(1.0, e), kMinRange) : kMinRange;
  if (range_ == 0)
    range_ = r;
  else
    grow_to_range(r);
}

namespace {

// floor(v) as an integer for |v| < 2^62, without a libm call (which -O2 on the x86-64
// baseline would make for std::floor).
inline int64_t floor_to_int(double v) {
  const int64_t t = static_cast<int64_t>(v);  // truncates toward zero
  return t - (static_cast<double>(t) > v);
}

// One pass over x: min, max and sum |x| of the finite values and the count of the others.
// Eight independent lanes, so the loop vectorizes without reassociating anything: the
// result is the same whatever the vector width (the lanes are combined in a fixed order).
struct Summary {
  double lo, hi, sum_abs;
  int64_t nonfinite;
};

Summary summarize(const float* x, int64_t n) {
  constexpr int kLanes = 8;
  constexpr float kFltMax = std::numeric_limits<float>::max();
  float lo[kLanes], hi[kLanes];
  double sa[kLanes];
  int64_t bad[kLanes];
  for (int j = 0; j < kLanes; ++j) lo[j] = kFltMax, hi[j] = -kFltMax, sa[j] = 0, bad[j] = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      lo[j] = v < lo[j] ? v : lo[j];
      hi[j] = v > hi[j] ? v : hi[j];
      sa[j] += std::fabs(static_cast<double>(v));
      bad[j] += !(std::fabs(v) <= kFltMax);  // inf or NaN
    }
  }
  int64_t nonfinite = 0;
  for (int j = 0; j < kLanes; ++j) nonfinite += bad[j];
  auto add = [](Summary& s, double v) {
    s.lo = std::min(s.lo, v);
    s.hi = std::max(s.hi, v);
    s.sum_abs += std::fabs(v);
  };
  if (nonfinite == 0) {
    Summary s{kInf, -kInf, 0, 0};
    for (int j = 0; j < kLanes && i > 0; ++j) {
      s.lo = std::min<double>(s.lo, lo[j]);
      s.hi = std::max<double>(s.hi, hi[j]);
      s.sum_abs += sa[j];
    }
    bool tail_finite = true;
    for (; i < n && tail_finite; ++i) {
      tail_finite = std::isfinite(static_cast<double>(x[i]));
      add(s, x[i]);
    }
    if (tail_finite) return s;
  }
  // Something was inf or NaN (rare): the plain loop, skipping those.
  Summary s{kInf, -kInf, 0, 0};
  for (int64_t k = 0; k < n; ++k) {
    const double v = x[k];
    if (!std::isfinite(v)) {
      ++s.nonfinite;
      continue;
    }
    add(s, v);
  }
  return s;
}

}  // namespace

// Observation splits large batches across OpenMP threads (the count set by
// at::set_num_threads). The summary is taken over fixed chunks combined in order, so the
// statistics do not depend on the thread count; bin counts are integers and add up the same
// in any order.
constexpr int64_t kSummaryChunk = int64_t{1} << 16;

void Histogram::observe(const float* x, int64_t n, double* batch_lo, double* batch_hi) {
  const int64_t chunks = (n + kSummaryChunk - 1) / kSummaryChunk;
  const int threads = chunks > 1 ? std::min<int64_t>(omp_get_max_threads(), chunks) : 1;
  Summary sum{kInf, -kInf, 0, 0};
  if (chunks <= 1) {
    sum = summarize(x, n);
  } else {
    std::vector<Summary> part(chunks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < chunks; ++c)
      part[c] = summarize(x + c * kSummaryChunk, std::min(kSummaryChunk, n - c * kSummaryChunk));
    for (const Summary& p : part) {
      sum.lo = std::min(sum.lo, p.lo);
      sum.hi = std::max(sum.hi, p.hi);
      sum.sum_abs += p.sum_abs;
      sum.nonfinite += p.nonfinite;
    }
  }
  const int64_t finite = n > 0 ? n - sum.nonfinite : 0;
  nonfinite_ += sum.nonfinite;
  if (batch_lo) *batch_lo = sum.lo;
  if (batch_hi) *batch_hi = sum.hi;
  if (finite == 0) return;
  const double lo = sum.lo, hi = sum.hi;
  grow_to_cover(std::max(-lo, hi));
  const bool all_finite = sum.nonfinite == 0;
  if (threads <= 1) {
    count_into(x, n, all_finite, counts_.data());
  } else {
#pragma omp parallel num_threads(threads)
    {
      std::vector<int64_t> local(counts_.size(), 0);
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      count_into(x + b, e - b, all_finite, local.data());
#pragma omp critical(anybit_histogram_counts)
      for (size_t j = 0; j < local.size(); ++j) counts_[j] += local[j];
    }
  }
  min_ = count_ ? std::min(min_, lo) : lo;
  max_ = count_ ? std::max(max_, hi) : hi;
  count_ += finite;
  sum_abs_ += sum.sum_abs;
}

void Histogram::count_into(const float* x, int64_t n, bool all_finite, int64_t* out) const {
  // R and the bin width are powers of two, so x * half / R is exact and so is its floor;
  // |x| < R keeps the index inside [0, bins).
  const int half = bins() / 2;
  const double inv_w = half / range_;
  int64_t* counts = out + half;
  if (all_finite && n >= 4 * bins()) {
    // Four interleaved partial histograms: runs of equal values (the zeros after a ReLU)
    // would otherwise make every increment wait for the previous one to the same bin.
    std::vector<int32_t> part(4 * static_cast<size_t>(bins()), 0);
    int32_t* p0 = part.data() + half;
    const int64_t b = bins();
    int64_t i = 0;
    for (int64_t done = 0; done < n;) {
      const int64_t end = std::min<int64_t>(n, done + (int64_t{1} << 30));  // int32 parts never overflow
      for (i = done; i + 4 <= end; i += 4) {
        ++p0[floor_to_int(x[i] * inv_w)];
        ++p0[b + floor_to_int(x[i + 1] * inv_w)];
        ++p0[2 * b + floor_to_int(x[i + 2] * inv_w)];
        ++p0[3 * b + floor_to_int(x[i + 3] * inv_w)];
      }
      for (; i < end; ++i) ++p0[floor_to_int(x[i] * inv_w)];
      for (int64_t j = 0; j < b; ++j) {
        out[j] += int64_t{part[j]} + part[b + j] + part[2 * b + j] + part[3 * b + j];
        part[j] = part[b + j] = part[2 * b + j] = part[3 * b + j] = 0;
      }
      done = end;
    }
  } else if (all_finite) {
    for (int64_t i = 0; i < n; ++i) ++counts[floor_to_int(x[i] * inv_w)];
  } else {
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) ++counts[floor_to_int(x[i] * inv_w)];
  }
}

double Histogram::share_below(double v) const {
  if (count_ == 0 || v <= min_) return 0.0;
  if (v > max_) return 1.0;
  const double k = (v + range_) / bin_width();  // bins below, fractional
  const int full = static_cast<int>(std::min<double>(std::floor(k), bins()));
  double below = 0;
  for (int i = 0; i < full; ++i) below += static_cast<double>(counts_[i]);
  if (full < bins()) below += static_cast<double>(counts_[full]) * (k - full);
  return std::min(1.0, below / static_cast<double>(count_));
}

double Histogram::share_above(double v) const {
  if (count_ == 0 || v >= max_) return 0.0;
  if (v < min_) return 1.0;
  return std::max(0.0, 1.0 - share_below(v));
}

void Histogram::merge(const Histogram& other) {
  if (other.bins() != bins())
    throw std::invalid_argument("Histogram::merge: " + std::to_string(other.bins()) +
                                " bins into " + std::to_string(bins()));
  nonfinite_ += other.nonfinite_;
  if (other.count_ == 0) return;
  if (count_ == 0) {
    const int64_t nf = nonfinite_;
    *this = other;
    nonfinite_ = nf;
    return;
  }
  Histogram o = other;
  const double r = std::max(range_, o.range_);
  grow_to_range(r);
  o.grow_to_range(r);
  for (int j = 0; j < bins(); ++j) counts_[j] += o.counts_[j];
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
  count_ += o.count_;
  sum_abs_ += o.sum_abs_;
}

// ---- observer -----------------------------------------------------------------------

Observer::Observer(int bins, double averaging_constant)
    : hist_(bins), averaging_constant_(averaging_constant) {
  if (!(averaging_constant > 0 && averaging_constant <= 1))
    throw std::invalid_argument("Observer: the averaging constant must be in (0, 1], got " +
                                num(averaging_constant));
}

void Observer::observe(const float* x, int64_t n) {
  double lo = kInf, hi = -kInf;  // this batch's finite extremes
  hist_.observe(x, n, &lo, &hi);
  if (lo > hi) return;  // no finite value
  // MovingAverageMinMaxObserver: the first batch sets the average, later ones move it.
  if (batches_ == 0) {
    ema_lo_ = lo;
    ema_hi_ = hi;
  } else {
    ema_lo_ += averaging_constant_ * (lo - ema_lo_);
    ema_hi_ += averaging_constant_ * (hi - ema_hi_);
  }
  ++batches_;
}

namespace {

// Copies channel c of an outer * channels * inner array into `out`.
void gather_channel(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t c,
                    std::vector<float>& out) {
  out.resize(outer * inner);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = x + (o * channels + c) * inner;
    std::copy(src, src + inner, out.begin() + o * inner);
  }
}

void check_view(const char* who, int64_t outer, int64_t channels, int64_t inner) {
  if (outer < 0 || channels < 0 || inner < 0)
    throw std::invalid_argument(std::string(who) + ": negative view (outer " +
                                std::to_string(outer) + ", channels " + std::to_string(channels) +
                                ", inner " + std::to_string(inner) + ")");
}

}  // namespace

void observe_per_channel(std::vector<Observer>& observers, const float* x, int64_t outer,
                         int64_t channels, int64_t inner) {
  check_view("observe_per_channel", outer, channels, inner);
  if (static_cast<int64_t>(observers.size()) != channels)
    throw std::invalid_argument("observe_per_channel: " + std::to_string(observers.size()) +
                                " observers for " + std::to_string(channels) + " channels");
  std::vector<float> buf;
  for (int64_t c = 0; c < channels; ++c) {
    gather_channel(x, outer, channels, inner, c, buf);
    observers[c].observe(buf.data(), static_cast<int64_t>(buf.size()));
  }
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
