// Uniform quantization and dyadic requantization: the one place in anybit where a real
// multiplier becomes integers and where an integer accumulator is scaled, rounded, offset
// and clamped back to an output integer. Header-only, plain C++17: the integer engine,
// the LibTorch exporter and hardware simulators include this file, so they all round the
// same way.
//
// Uniform quantization (docs/design.md, "Numeric definitions"):
//   q = clamp(round_half_even(x / s) + z, qmin, qmax),    x^ = (q - z) * s
//
// Dyadic multiplier. A real multiplier M >= 0 (for a conv: M = s_in * s_w / s_out) is
// stored as a 32-bit integer m0 and a shift, following TFLite's QuantizeMultiplier
// (tensorflow/lite/kernels/internal/quantization_util.cc) with the shift counted to the
// RIGHT, as docs/design.md writes it:
//
//   M = m0 * 2^-(31 + shift),   m0 in [2^30, 2^31)  (m0 / 2^31 is a Q0.31 number in [0.5, 1))
//
//   shift > 0   right shift, M < 0.5         (the usual case)
//   shift = 0   M in [0.5, 1)
//   shift < 0   left shift, M >= 1           (-31 <= shift <= 31)
//   m0 = 0      M = 0 (also used for M < 2^-62 or so, where the result rounds to zero)
//
// TFLite's `shift` is the negation of ours (theirs counts left shifts).
//
// Requantization, as docs/design.md writes it, `rounding_shift(acc * m0, 31 + shift)` with one
// rounding, half to even (the rounding of torch.round and of the fake-quant model):
//
//   p  = saturate_int32(acc) * m0                  exact in int64 (|p| < 2^62)
//   x3 = round_half_even(p / 2^(31 + shift))       31 + shift in [0, 62]
//   q  = clamp(z_out + saturate_int32(x3), qmin, qmax)
//
// So q = clamp(z_out + round(acc * M), qmin, qmax) for the dyadic M, exactly. gemmlowp and
// TFLite (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT) round twice, first
// to 2^-shift of an output step: that differs from one rounding on about 2^-shift of all
// values (0.1% at a typical shift of 10), and those one-step differences spread through
// the layers after; rounding once, the engine agrees with the float fake-quant model
// except where float32's own error (about 1e-5 of a step) decides. Hardware does this with
// one 32 x 32 -> 64 multiply and one rounding right shift.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "anybit/base/error.h"

namespace anybit {
namespace intsim {

struct DyadicMultiplier {
  int32_t m0 = 0;  // Q0.31 mantissa in [2^30, 2^31), or 0
  int shift = 0;   // M = m0 * 2^-(31 + shift); positive means a right shift
};

inline bool operator==(DyadicMultiplier a, DyadicMultiplier b) {
  return a.m0 == b.m0 && a.shift == b.shift;
}
inline bool operator!=(DyadicMultiplier a, DyadicMultiplier b) { return !(a == b); }

// The real number a multiplier stands for.
inline double dyadic_to_double(DyadicMultiplier m) {
  return std::ldexp(static_cast<double>(m.m0), -(31 + m.shift));
}

// TFLite's QuantizeMultiplier: M = q * 2^e with q in [0.5, 1) (frexp), m0 = round(q * 2^31).
// Rounding q can give exactly 2^31; then the mantissa is halved and the exponent bumped.
// Throws Error for a negative, NaN or infinite M, or one too large for a 31-bit left shift.
inline DyadicMultiplier quantize_multiplier(double real_multiplier) {
  if (!(real_multiplier >= 0) || !std::isfinite(real_multiplier))
    throw Error("quantize_multiplier: multiplier must be finite and >= 0, got " +
                std::to_string(real_multiplier));
  if (real_multiplier == 0) return {0, 0};
  int exponent = 0;
  const double q = std::frexp(real_multiplier, &exponent);
  int64_t q_fixed = static_cast<int64_t>(std::round(q * static_cast<double>(int64_t{1} << 31)));
  if (q_fixed == (int64_t{1} << 31)) {
    q_fixed /= 2;
    ++exponent;
  }
  const int shift = -exponent;
  if (shift > 31) return {0, 0};  // M < 2^-32: every int32 accumulator rounds to (almost) 0
  if (shift < -31)
    throw Error("quantize_multiplier: multiplier " + std::to_string(real_multiplier) +
                " is too large (at most 2^31)");
  return {static_cast<int32_t>(q_fixed), shift};
}

inline int32_t saturate_int32(int64_t x) {
  if (x > std::numeric_limits<int32_t>::max()) return std::numeric_limits<int32_t>::max();
  if (x < std::numeric_limits<int32_t>::min()) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(x);
}

// round_half_even(x * m0 / 2^(31 + shift)), saturated to int32: multiplying by the dyadic
// M, rounded once. m0 in [0, 2^31), shift in [-31, 31].
inline int32_t multiply_by_dyadic(int32_t x, DyadicMultiplier m) {
  const int e = 31 + m.shift;
  const int64_t p = static_cast<int64_t>(x) * m.m0;
  if (e <= 0) return saturate_int32(p);
  const int64_t floor_q = p >> e;  // arithmetic: floor
  const int64_t remainder = p - floor_q * (int64_t{1} << e);
  const int64_t half = int64_t{1} << (e - 1);
  const bool up = remainder > half || (remainder == half && (floor_q & 1) != 0);
  return saturate_int32(floor_q + (up ? 1 : 0));
}

// multiply_by_dyadic's rounding shift in the form the lane and vector kernels compute it
// (kernels.cc, kernels_simd.inc): the product p is moved to unsigned by adding 2^63
// (u = p ^ 2^63, as |p| < 2^62), so that only logical shifts are needed. With
// e = 31 + shift, round_half_even(p / 2^e) = ((u + 2^(e-1) - 1 + lsb(u >> e)) >> e) - 2^(63-e):
// adding half minus one rounds every remainder above half up, and the low bit of the
// truncated quotient (that of floor(p / 2^e), as 2^(63-e) is even) decides the tie. e = 0
// adds nothing (half_minus_one = lsb = 0).
struct DyadicRounding {
  int e = 31;
  uint64_t half_minus_one = 0, lsb = 0, offset = 0;
  DyadicRounding() = default;
  explicit DyadicRounding(DyadicMultiplier m)
      : e(31 + m.shift),
        half_minus_one(e > 0 ? (uint64_t{1} << (e - 1)) - 1 : 0),
        lsb(e > 0 ? 1 : 0),
        offset(uint64_t{1} << (63 - e)) {}
};

// The requantization step of every conv/linear/pool/add/concat output:
//   q = clamp(zero_point + multiply_by_dyadic(acc, M), qmin, qmax).
// The accumulator is at most 32 bits wide, so `acc` lies in int32; a value outside is
// saturated first (defined behaviour, never a wrap). The zero point is added in 64 bits
// so that no intermediate overflows.
inline int32_t requantize_dyadic(int64_t acc, DyadicMultiplier m, int32_t zero_point,
                                 int32_t qmin, int32_t qmax) {
  const int64_t scaled = multiply_by_dyadic(saturate_int32(acc), m);
  int64_t q = scaled + zero_point;
  if (q < qmin) q = qmin;
  if (q > qmax) q = qmax;
  return static_cast<int32_t>(q);
}

// --- reference twin: the same numbers, written as the arithmetic they stand for -------

// The whole requantization in exact 128-bit arithmetic: the rational acc * m0 / 2^(31 +
// shift), rounded to the nearest integer with ties to the even one.
inline int32_t requantize_dyadic_reference(int64_t acc, DyadicMultiplier m, int32_t zero_point,
                                           int32_t qmin, int32_t qmax) {
  const int64_t lo = std::numeric_limits<int32_t>::min();
  const int64_t hi = std::numeric_limits<int32_t>::max();
  const __int128 x = acc < lo ? lo : (acc > hi ? hi : acc);
  const __int128 num = x * m.m0;
  const __int128 den = __int128{1} << (31 + m.shift);
  const __int128 mag = num < 0 ? -num : num;
  __int128 q = mag / den;  // |num| / den, rounded half to even on the magnitude
  const __int128 twice_rem = 2 * (mag % den);
  if (twice_rem > den || (twice_rem == den && q % 2 == 1)) ++q;
  if (num < 0) q = -q;
  if (q > hi) q = hi;
  if (q < lo) q = lo;
  q += zero_point;
  if (q < qmin) q = qmin;
  if (q > qmax) q = qmax;
  return static_cast<int32_t>(q);
}

// --- uniform quantization of real numbers ----------------------------------------------

// Round to nearest, ties to even (torch.round, std::nearbyint in the default mode),
// independent of the floating-point environment.
inline double round_half_even(double v) {
  const double f = std::floor(v);
  const double d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return std::fmod(f, 2.0) == 0 ? f : f + 1;
}

// q = clamp(round_half_even(x / s) + z, qmin, qmax), computed as
// torch.fake_quantize_per_tensor_affine computes it (x * (1/s) in float32), so that the
// integers fed to the engine are the ones the fake-quantized model saw. NaN maps to z.
inline int32_t quantize_uniform(float x, float scale, int32_t zero_point, int32_t qmin,
                                int32_t qmax) {
  const float inv_scale = 1.0f / scale;
  double r = round_half_even(static_cast<double>(x * inv_scale));
  if (std::isnan(r)) r = 0;
  double q = r + zero_point;
  if (q < qmin) q = qmin;
  if (q > qmax) q = qmax;
  return static_cast<int32_t>(q);
}

// x^ = (q - z) * s
inline float dequantize_uniform(int32_t q, float scale, int32_t zero_point) {
  return static_cast<float>(static_cast<int64_t>(q) - zero_point) * scale;
}

}  // namespace intsim
}  // namespace anybit
