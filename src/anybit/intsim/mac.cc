// The built-in multiply-accumulate models and their string form; see mac.h.
#include "anybit/intsim/mac.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <vector>

#include "anybit/intsim/clones.h"
#include "anybit/intsim/mac_internal.h"
#include "anybit/intsim/kernels_simd.h"
#include "anybit/intsim/requantize.h"

namespace anybit {
namespace intsim {

using detail::format_double;

namespace {

constexpr double kPi = 3.14159265358979323846;

// Noise can be arbitrarily large: results are clamped to +-2^50 (far outside any
// accumulator, which then wraps or saturates them; NaN becomes -2^50) and rounded half-even
// by adding and subtracting 1.5 * 2^52 in the default rounding mode. The bits of
// v + 1.5 * 2^52 minus those of 1.5 * 2^52 are then the rounded integer itself: no
// double-to-int64 conversion, which AVX2 lacks, so the loops below vectorize.
constexpr double kRoundMagic = 6755399441055744.0;  // 1.5 * 2^52
constexpr int64_t kRoundMagicBits = 0x4338000000000000;

ANYBIT_INLINE double clamp_noise(double v) {
  constexpr double kLimit = 1125899906842624.0;  // 2^50
  v = v > -kLimit ? v : -kLimit;
  return v < kLimit ? v : kLimit;
}
// round_half_even(clamp(v)) as an int64
ANYBIT_INLINE int64_t to_int64_rounded(double v) {
  int64_t bits;
  const double r = clamp_noise(v) + kRoundMagic;
  std::memcpy(&bits, &r, sizeof bits);
  return bits - kRoundMagicBits;
}
// round_half_even(clamp(v)) as a double
ANYBIT_INLINE double round_even(double v) { return (clamp_noise(v) + kRoundMagic) - kRoundMagic; }

// out[k] = e[k] + round(sd * z[k])
ANYBIT_CLONES void add_scaled_noise(const int32_t* e, const double* z, int64_t n, double sd, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = e[k] + to_int64_rounded(sd * z[k]);
}

// round_half_even(v) clamped to +-(2^31 - 1) (NaN: the lower bound)
ANYBIT_INLINE int32_t noise_int32(double v) {
  constexpr double kHi = 2147483647.0, kLo = -2147483647.0;
  const double r = round_even(v);
  return static_cast<int32_t>(r < kLo ? kLo : (r > kHi ? kHi : r));
}

// *max: the largest |x[k]|, *sum: their sum (|x| < 2^31).
ANYBIT_CLONES void abs_max_sum(const int32_t* x, int64_t n, int64_t* max, int64_t* sum) {
  int32_t m = 0;
  int64_t s = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int32_t a = x[k] < 0 ? -x[k] : x[k];
    m = a > m ? a : m;
    s += a;
  }
  *max = m, *sum = s;
}

// out[k] = round(e[k] + sqrt(var0 + rel2 * sq[k]) * z[k])
ANYBIT_CLONES void add_relative_noise(const int32_t* e, const double* z, const double* sq, int64_t n,
                                      double var0, double rel2, int64_t* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = to_int64_rounded(e[k] + std::sqrt(var0 + rel2 * sq[k]) * z[k]);
}

// out[k] = e[k]; whether any w[k] > keep_max.
ANYBIT_CLONES bool copy_unless_above(const int32_t* e, const uint32_t* w, int64_t n, uint32_t keep_max, int64_t* out) {
  uint32_t above = 0;
  for (int64_t k = 0; k < n; ++k) {
    out[k] = e[k];
    above |= static_cast<uint32_t>(w[k] > keep_max);
  }
  return above != 0;
}

// Whether any w[k] > keep_max.
ANYBIT_CLONES bool any_above(const uint32_t* w, int64_t n, uint32_t keep_max) {
  uint32_t above = 0;
  for (int64_t k = 0; k < n; ++k) above |= static_cast<uint32_t>(w[k] > keep_max);
  return above != 0;
}

// out[k] = step * clamp(round(e[k] / step), lo, hi); returns how many were clamped.
ANYBIT_CLONES int64_t adc_read(const int32_t* e, int64_t n, double inv_step, double step, double lo, double hi,
                               int64_t* out) {
  int64_t clipped = 0;
  for (int64_t k = 0; k < n; ++k) {
    double code = round_even(e[k] * inv_step);
    clipped += (code < lo) | (code > hi);
    code = code < lo ? lo : code;
    code = code > hi ? hi : code;
    out[k] = to_int64_rounded(code * step);
  }
  return clipped;
}


// --- Philox4x32-10 ------------------------------------------------------------------------

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

ANYBIT_INLINE void philox_rounds(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                 uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
}

// Portable philox_groups (kernels_simd.h): the same words, one block at a time.
void philox_groups_portable(uint32_t block0, int64_t groups, uint32_t c1, uint32_t c2, uint32_t c3,
                            uint32_t k0, uint32_t k1, uint32_t* words) {
  for (int64_t g = 0; g < groups; ++g)
    for (uint32_t l = 0; l < 8; ++l) {
      uint32_t a = block0 + 8 * static_cast<uint32_t>(g) + l, b = c1, c = c2, d = c3;
      philox_rounds(a, b, c, d, k0, k1);
      uint32_t* out = words + 32 * g + l;
      out[0] = a, out[8] = b, out[16] = c, out[24] = d;
    }
}

// --- normals from 32-bit words ----------------------------------------------------------

constexpr int kCellBits = 12, kCells = 1 << kCellBits, kEdgeCells = 16;

// Phi^-1(c / 4096) for c = 0..4096 in float32 (the ends, +-infinity, are never read).
const std::vector<float>& normal_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(kCells + 1, 0.0f);
    for (int c = 1; c < kCells; ++c) t[c] = static_cast<float>(inverse_normal_exact(static_cast<double>(c) / kCells));
    return t;
  }();
  return table;
}

// The same as pairs: (table[c], table[c + 1]) at [2 c, 2 c + 1], for one 64-bit load per cell.
const std::vector<float>& normal_pairs() {
  static const std::vector<float> pairs = [] {
    const std::vector<float>& t = normal_table();
    std::vector<float> p(2 * kCells, 0.0f);
    for (int c = 0; c < kCells; ++c) p[2 * c] = t[c], p[2 * c + 1] = t[c + 1];
    return p;
  }();
  return pairs;
}

// Edge words (cells below kEdgeCells or from kCells - kEdgeCells) are redone exactly.
bool edge_word(uint32_t w) {
  const uint32_t c = w >> (32 - kCellBits);
  return c < kEdgeCells || c >= kCells - kEdgeCells;
}

// The interpolation of normals_from_words (kernels_simd.h), portably: the same floats; the
// edge words' indices go to edges, their count is returned.
int64_t normals_portable(const uint32_t* words, int64_t n, const float* table, double* z, int32_t* edges) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t w = words[i];
    if (edge_word(w)) edges[count++] = static_cast<int32_t>(i);
    uint32_t c = w >> (32 - kCellBits);
    c = c < 1 ? 1 : c > kCells - 2 ? kCells - 2 : c;
    const float f = (static_cast<float>(w & 0xfffffu) + 0.5f) * (1.0f / 1048576.0f);
    const float t0 = table[c], t1 = table[c + 1];
    z[i] = static_cast<double>(t0 + f * (t1 - t0));
  }
  return count;
}

double word_to_unit(uint32_t w) { return (static_cast<double>(w) + 0.5) * (1.0 / 4294967296.0); }

// The tails: words below 2^24 (u < 2^-8, the 16 outermost cells) interpolate in a second
// table of 4096 cells of 2^12 words (u in steps of 2^-20), except below 2^16 (u < 2^-16),
// which are exact; the upper tail by symmetry, z(w) = -z(~w).
const std::vector<float>& tail_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(kCells + 1, 0.0f);
    for (int c = 1; c <= kCells; ++c) t[c] = static_cast<float>(inverse_normal_exact(std::ldexp(c, -20)));
    return t;
  }();
  return table;
}

double lower_tail(uint32_t w) {  // w < 2^24
  const uint32_t s = w >> 12;
  if (s < 16) return inverse_normal_exact(word_to_unit(w));
  const float f = (static_cast<float>(w & 0xfffu) + 0.5f) * (1.0f / 4096.0f);
  const float t0 = tail_table()[s], t1 = tail_table()[s + 1];
  return static_cast<double>(t0 + f * (t1 - t0));
}

double edge_normal(uint32_t w) { return w < (1u << 24) ? lower_tail(w) : -lower_tail(~w); }

void words_to_normals(const uint32_t* words, int64_t n, double* z, std::vector<int32_t>& edges) {
  edges.resize(static_cast<size_t>(n));
  int64_t count = simd::normals_from_words(words, n, normal_pairs().data(), z, edges.data());
  if (count < 0) count = normals_portable(words, n, normal_table().data(), z, edges.data());
  for (int64_t e = 0; e < count; ++e) z[edges[e]] = edge_normal(words[edges[e]]);
}

// Per-thread buffers of the perturbing models (they are called from several threads).
struct Buffers {
  std::vector<uint32_t> philox, words, first;
  std::vector<int32_t> edges;
  std::vector<double> z;
};
Buffers& buffers() {
  thread_local Buffers b;
  return b;
}

uint32_t layer_key(const SumBlock& b) { return static_cast<uint32_t>(b.layer ? b.layer->index : 0); }

const MacLayer& default_layer() {
  static const MacLayer layer;
  return layer;
}

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> key) {
  philox_rounds(c[0], c[1], c[2], c[3], key[0], key[1]);
  return c;
}

namespace {

void keyed_words_into(Buffers& buf, uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image,
                      uint64_t first, int64_t n, uint32_t* words) {
  if (n <= 0) return;
  if (n == 1) {  // one element (the per-dot-product path): its one Philox block
    uint32_t c0 = static_cast<uint32_t>(8 * (first / 32) + first % 8), c1 = image, c2 = layer, c3 = stream;
    philox_rounds(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const uint32_t w[4] = {c0, c1, c2, c3};
    words[0] = w[(first % 32) / 8];
    return;
  }
  // element e: word (e % 32) / 8 of block 8 (e / 32) + e % 8 (groups of 8 blocks, 32 words)
  const uint64_t group0 = first / 32, last = (first + static_cast<uint64_t>(n) - 1) / 32;
  const int64_t groups = static_cast<int64_t>(last - group0 + 1);
  const uint32_t block0 = static_cast<uint32_t>(group0 * 8);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const int64_t skip = static_cast<int64_t>(first % 32);
  if (skip == 0 && n % 32 == 0) {
    if (!simd::philox_groups(block0, groups, image, layer, stream, k0, k1, words))
      philox_groups_portable(block0, groups, image, layer, stream, k0, k1, words);
    return;
  }
  std::vector<uint32_t>& tmp = buf.philox;
  tmp.resize(static_cast<size_t>(groups * 32));
  if (!simd::philox_groups(block0, groups, image, layer, stream, k0, k1, tmp.data()))
    philox_groups_portable(block0, groups, image, layer, stream, k0, k1, tmp.data());
  std::copy(tmp.begin() + skip, tmp.begin() + skip + n, words);
}

void keyed_normals_into(Buffers& buf, uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image,
                        uint64_t first, int64_t n, double* z) {
  if (n <= 0) return;
  std::vector<uint32_t>& words = buf.words;
  words.resize(static_cast<size_t>(n));
  keyed_words_into(buf, seed, stream, layer, image, first, n, words.data());
  words_to_normals(words.data(), n, z, buf.edges);
}

}  // namespace

double inverse_normal_exact(double u) {
  // Acklam's rational approximation (relative error < 1.15e-9) ...
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double lo = 0.02425, hi = 1 - lo;
  double x;
  if (u < lo) {
    const double q = std::sqrt(-2 * std::log(u));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (u <= hi) {
    const double q = u - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log1p(-u));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  // ... and one step of Halley's method on Phi(x) - u (Phi through erfc, accurate in the tails).
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - u;
  const double t = e * std::sqrt(2 * kPi) * std::exp(x * x / 2);
  return x - t / (1 + x * t / 2);
}

double normal_from_word(uint32_t word) {
  double z;
  int32_t edge;
  if (normals_portable(&word, 1, normal_table().data(), &z, &edge) > 0) return edge_normal(word);
  return z;
}

void keyed_words(uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image, uint64_t first,
                 int64_t n, uint32_t* words) {
  keyed_words_into(buffers(), seed, stream, layer, image, first, n, words);
}

void keyed_normals(uint64_t seed, uint32_t stream, uint32_t layer, uint32_t image, uint64_t first,
                   int64_t n, double* z) {
  keyed_normals_into(buffers(), seed, stream, layer, image, first, n, z);
}

double dot_squares(const int32_t* x, const int32_t* w, size_t n) {
  uint64_t s = 0;
  double fallback = 0;
  bool exact = true;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t p = static_cast<uint64_t>(std::llabs(static_cast<int64_t>(x[i]) * w[i]));
    const unsigned __int128 sq = static_cast<unsigned __int128>(p) * p;
    fallback += static_cast<double>(p) * static_cast<double>(p);
    if (exact && (sq >> 64 != 0 || s + static_cast<uint64_t>(sq) < s)) exact = false;
    if (exact) s += static_cast<uint64_t>(sq);
  }
  return exact ? static_cast<double>(s) : fallback;
}

void SumPerturbingMac::may_change(const MacLayer&, int64_t, int64_t first, int64_t count,
                                  std::vector<int64_t>& elements) const {
  for (int64_t k = 0; k < count; ++k) elements.push_back(first + k);
}

SumPerturbingMac::NoiseSize SumPerturbingMac::draw_noise(const MacLayer& layer, int64_t, int64_t, int64_t,
                                                         int32_t*) const {
  throw Error("MAC model '" + describe() + "' draws no additive noise (layer " + layer.name + ")");
}

int64_t SumPerturbingMac::dot(const int32_t* x, const int32_t* w, size_t n, const MacContext& ctx) {
  const int32_t exact = static_cast<int32_t>(dot_exact(x, w, n, *ctx.acc));
  const double squares = needs_squares() ? dot_squares(x, w, n) : 0.0;
  int64_t out = 0;
  SumBlock b;
  b.layer = ctx.info ? ctx.info : &default_layer();
  b.image = ctx.image;
  b.first_index = ctx.index;
  b.count = 1;
  b.exact = &exact;
  b.squares = needs_squares() ? &squares : nullptr;
  b.accumulator_bits = ctx.acc->spec().bits;
  b.out = &out;
  perturb(b);
  if (ctx.clipped) *ctx.clipped += b.clipped;
  return out;
}

// --- gauss ----------------------------------------------------------------------------------

GaussianMac::GaussianMac(double sigma, double rel, double fs, uint64_t seed)
    : sigma_(sigma), rel_(rel), fs_(fs), seed_(seed) {
  if (!(sigma >= 0) || !(rel >= 0) || !(fs >= 0) || !std::isfinite(sigma) || !std::isfinite(rel) ||
      !std::isfinite(fs))
    throw Error("gauss: sigma, rel and fs must be finite and >= 0");
}

const double* GaussianMac::normals(const MacLayer& layer, int64_t image, int64_t first, int64_t count) const {
  Buffers& buf = buffers();
  buf.z.resize(static_cast<size_t>(count));
  keyed_normals_into(buf, seed_, 0, static_cast<uint32_t>(layer.index), static_cast<uint32_t>(image),
                     static_cast<uint64_t>(first), count, buf.z.data());
  return buf.z.data();
}

double GaussianMac::sd(const MacLayer& layer) const {
  return std::hypot(sigma_, fs_ * layer.full_scale);
}

void GaussianMac::perturb(SumBlock& b) const {
  const double* z = normals(*b.layer, b.image, b.first_index, b.count);
  if (!b.squares) {  // the exact sum plus the rounded noise (draw_noise's)
    add_scaled_noise(b.exact, z, b.count, sd(*b.layer), b.out);
    return;
  }
  const double fs = fs_ * b.layer->full_scale;
  add_relative_noise(b.exact, z, b.squares, b.count, sigma_ * sigma_ + fs * fs, rel_ * rel_, b.out);
}

SumPerturbingMac::NoiseSize GaussianMac::draw_noise(const MacLayer& layer, int64_t image, int64_t first,
                                                    int64_t count, int32_t* noise) const {
  // the words, then noise_int32(sd * z) from them in one pass (normals_from_words's z)
  Buffers& buf = buffers();
  std::vector<uint32_t>& words = buf.words;
  words.resize(static_cast<size_t>(count));
  keyed_words_into(buf, seed_, 0, static_cast<uint32_t>(layer.index), static_cast<uint32_t>(image),
                   static_cast<uint64_t>(first), count, words.data());
  const double s = sd(layer);
  buf.edges.resize(static_cast<size_t>(count));
  int64_t edges = simd::noise_from_words(words.data(), count, normal_pairs().data(), s, noise, buf.edges.data());
  if (edges < 0) {
    buf.z.resize(static_cast<size_t>(count));
    edges = normals_portable(words.data(), count, normal_table().data(), buf.z.data(), buf.edges.data());
    for (int64_t k = 0; k < count; ++k) noise[k] = noise_int32(s * buf.z[static_cast<size_t>(k)]);
  }
  for (int64_t e = 0; e < edges; ++e) {
    const int32_t k = buf.edges[static_cast<size_t>(e)];
    noise[k] = noise_int32(s * edge_normal(words[static_cast<size_t>(k)]));
  }
  NoiseSize size;
  int64_t sum = 0;
  abs_max_sum(noise, count, &size.max, &sum);
  size.sum = static_cast<double>(sum);
  return size;
}

std::string GaussianMac::describe() const {
  std::string s = "gauss:";
  if (sigma_ != 0 || (rel_ == 0 && fs_ == 0)) s += "sigma=" + format_double(sigma_) + ",";
  if (rel_ != 0) s += "rel=" + format_double(rel_) + ",";
  if (fs_ != 0) s += "fs=" + format_double(fs_) + ",";
  return s + "seed=" + std::to_string(seed_);
}

// --- adc ------------------------------------------------------------------------------------

AdcMac::AdcMac(int bits, double range, Range kind, double pct)
    : bits_(bits), range_(range), pct_(pct), kind_(kind) {
  if (bits < 1 || bits > 32) throw Error("adc: bits must be in [1, 32]");
  if (kind != Range::kCalibrated && (!(range > 0) || !std::isfinite(range)))
    throw Error("adc: range must be > 0");
  if (!(pct > 0 && pct <= 100)) throw Error("adc: pct must be in (0, 100]");
}

void AdcMac::prepare(const std::vector<MacLayer>& layers) {
  ranges_.assign(layers.size(), range_);
  for (const MacLayer& l : layers) {
    double r = range_;
    if (kind_ == Range::kFullScale) r = range_ * l.full_scale;
    if (kind_ == Range::kCalibrated) {
      if (l.calibrated < 0)
        throw Error("MAC model '" + describe() + "': range=auto needs calibration data (intsim --calib-data), " +
                    "and layer " + l.name + " has none");
      r = l.calibrated;
    }
    // A layer whose sums are all 0 (zero weights): any positive full scale reads them.
    ranges_.at(static_cast<size_t>(l.index)) = r > 0 ? r : 1.0;
  }
}

void AdcMac::perturb(SumBlock& b) const {
  double range = range_;
  if (kind_ != Range::kAbsolute) {
    const size_t i = static_cast<size_t>(b.layer->index);
    if (i >= ranges_.size())
      throw Error("MAC model '" + describe() + "': layer " + b.layer->name + " was not prepared");
    range = ranges_[i];
  }
  const double step = 2 * range / std::ldexp(1.0, bits_), inv = 1 / step;
  const double lo = -std::ldexp(1.0, bits_ - 1), hi = std::ldexp(1.0, bits_ - 1) - 1;
  b.clipped += adc_read(b.exact, b.count, inv, step, lo, hi, b.out);
}

std::string AdcMac::describe() const {
  const std::string head = "adc:bits=" + std::to_string(bits_);
  if (kind_ == Range::kCalibrated) return head + ",range=auto,pct=" + format_double(pct_);
  if (kind_ == Range::kFullScale) return head + ",fs=" + format_double(range_);
  return head + ",range=" + format_double(range_);
}

// --- bitflip --------------------------------------------------------------------------------

BitFlipMac::BitFlipMac(double rate, uint64_t seed) : rate_(rate), seed_(seed) {
  if (!(rate >= 0 && rate <= 1)) throw Error("bitflip: rate must be in [0, 1]");
  for (int bits = 1; bits <= 64; ++bits) keep_max_[static_cast<size_t>(bits)] = find_keep_max(bits);
}

std::optional<uint32_t> BitFlipMac::keep_max(int bits) const { return keep_max_.at(static_cast<size_t>(bits)); }

std::optional<uint32_t> BitFlipMac::find_keep_max(int bits) const {
  // the largest word whose unit is <= none = (1 - rate)^bits (perturb)
  const double none = std::pow(1 - rate_, bits);
  if (none < word_to_unit(0)) return std::nullopt;
  const double t = std::floor(std::min(none * 4294967296.0, 4294967295.0));
  uint32_t k = static_cast<uint32_t>(t);
  while (k > 0 && word_to_unit(k) > none) --k;
  while (k < 0xffffffffu && word_to_unit(k + 1) <= none) ++k;
  return k;
}

void BitFlipMac::may_change(const MacLayer& layer, int64_t image, int64_t first, int64_t count,
                            std::vector<int64_t>& elements) const {
  // the layer's accumulator width is not known here: 32 bits, the most, flips the most
  const std::optional<uint32_t> keep = keep_max(32);
  if (!keep) {
    for (int64_t k = 0; k < count; ++k) elements.push_back(first + k);
    return;
  }
  Buffers& buf = buffers();
  std::vector<uint32_t>& words = buf.first;
  words.resize(static_cast<size_t>(count));
  keyed_words_into(buf, seed_, 0, static_cast<uint32_t>(layer.index), static_cast<uint32_t>(image),
                   static_cast<uint64_t>(first), count, words.data());
  for (int64_t k0 = 0; k0 < count; k0 += 64) {
    const int64_t n = std::min<int64_t>(64, count - k0);
    if (!any_above(words.data() + k0, n, *keep)) continue;
    // the block's elements above keep, without a branch per element
    const size_t at = elements.size();
    elements.resize(at + static_cast<size_t>(n));
    size_t m = at;
    for (int64_t k = k0; k < k0 + n; ++k) {
      elements[m] = first + k;
      m += words[static_cast<size_t>(k)] > *keep;
    }
    elements.resize(m);
  }
}

void BitFlipMac::perturb(SumBlock& b) const {
  const int bits = b.accumulator_bits;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  // The gaps between flipped bits are geometric: bit g is the first flipped with
  // probability (1 - rate)^g rate, g = floor(log u / log(1 - rate)); none is flipped when
  // u <= (1 - rate)^bits, the common case, decided without a logarithm.
  const double log_keep = std::log1p(-rate_);
  const double none = std::pow(1 - rate_, bits);
  // the largest word whose unit is <= none: words up to it flip nothing (compared as
  // integers, 64 at a time, before any element is looked at on its own)
  const std::optional<uint32_t> keep = keep_max(bits);
  const bool all_checked = !keep;
  const uint32_t keep_max = keep.value_or(0);
  Buffers& buf = buffers();
  std::vector<uint32_t>& first = buf.first;
  first.resize(static_cast<size_t>(b.count));
  const uint32_t image = static_cast<uint32_t>(b.image);
  keyed_words_into(buf, seed_, 0, layer_key(b), image, static_cast<uint64_t>(b.first_index), b.count, first.data());
  for (int64_t k = 0; k < b.count; ++k) {
    if (!all_checked && k % 64 == 0) {
      const int64_t n = std::min<int64_t>(64, b.count - k);
      if (!copy_unless_above(b.exact + k, first.data() + k, n, keep_max, b.out + k)) {
        k += n - 1;
        continue;
      }
    }
    double u = word_to_unit(first[static_cast<size_t>(k)]);
    if (u <= none) {
      b.out[k] = b.exact[k];
      continue;
    }
    uint64_t word = static_cast<uint64_t>(int64_t{b.exact[k]}) & mask;
    double pos = std::floor(std::log(u) / log_keep);
    for (uint32_t draw = 1; pos < bits; ++draw) {
      word ^= uint64_t{1} << static_cast<int>(pos);
      uint32_t w = 0;
      keyed_words_into(buf, seed_, draw, layer_key(b), image, static_cast<uint64_t>(b.first_index + k), 1, &w);
      u = word_to_unit(w);
      pos += 1 + std::floor(std::log(u) / log_keep);
    }
    // the word read back as a two's-complement value of `bits` bits
    b.out[k] = fit_accumulator(static_cast<int64_t>(word), {bits, Overflow::kWrap}, nullptr);
  }
}

std::string BitFlipMac::describe() const {
  return "bitflip:rate=" + format_double(rate_) + ",seed=" + std::to_string(seed_);
}

// --- wnoise ---------------------------------------------------------------------------------

WeightNoiseMac::WeightNoiseMac(double rel, uint64_t seed) : rel_(rel), seed_(seed) {
  if (!(rel >= 0)) throw Error("wnoise: rel must be >= 0");
}

void WeightNoiseMac::perturb(SumBlock& b) const {
  std::copy(b.exact, b.exact + b.count, b.out);
}

void WeightNoiseMac::perturb_weights(const MacLayer& layer, int32_t* w, const int32_t* lo,
                                     const int32_t* hi) const {
  const int64_t K = layer.depth;
  std::vector<double> z(static_cast<size_t>(K));
  for (int64_t o = 0; o < layer.out_channels; ++o) {
    int32_t* row = w + o * K;
    int64_t m = 0;
    for (int64_t k = 0; k < K; ++k) m = std::max<int64_t>(m, std::llabs(row[k]));
    // image 0xFFFFFFFF: a stream no image of a run uses
    keyed_normals(seed_, 0, static_cast<uint32_t>(layer.index), 0xFFFFFFFFu, static_cast<uint64_t>(o * K), K,
                  z.data());
    for (int64_t k = 0; k < K; ++k) {
      const int64_t v = to_int64_rounded(row[k] + rel_ * static_cast<double>(m) * z[static_cast<size_t>(k)]);
      row[k] = static_cast<int32_t>(std::clamp<int64_t>(v, lo[o], hi[o]));
    }
  }
}

std::string WeightNoiseMac::describe() const {
  return "wnoise:rel=" + format_double(rel_) + ",seed=" + std::to_string(seed_);
}

}  // namespace intsim
}  // namespace anybit
