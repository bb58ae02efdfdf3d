// Uniform quantization and dyadic requantization: the one place in anybit where a real
// multiplier becomes integers and where an integer accumulator is scaled, rounded, offset
// and clamped back to an output integer. Header-only, plain C++17: the integer engine,
// the LibTorch exporter and hardware simulators include this file, so they all round the
// same way.
//
// Uniform quantization (shared/DESIGN.md, "Numeric semantics"):
//   q = clamp(round_half_even(x / s) + z, qmin, qmax),    x^ = (q - z) * s
//
// Dyadic multiplier. A real multiplier M >= 0 (for a conv: M = s_in * s_w / s_out) is
// stored as a 32-bit integer m0 and a shift, following TFLite's QuantizeMultiplier
// (tensorflow/lite/kernels/internal/quantization_util.cc) with the shift counted to the
// RIGHT, as DESIGN.md writes it:
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
// Requantization, exactly as gemmlowp (fixedpoint.h) and TFLite
// (MultiplyByQuantizedMultiplier in kernels/internal/common.h):
//
//   x1 = saturate_int32(acc * 2^max(-shift, 0))                     left shift, if any
//   x2 = SaturatingRoundingDoublingHighMul(x1, m0)
//      = round_half_up(x1 * m0 / 2^31)    (saturates the one case x1 = m0 = -2^31)
//   x3 = RoundingDivideByPOT(x2, max(shift, 0))
//      = round_half_away_from_zero(x2 / 2^max(shift, 0))
//   q  = clamp(z_out + x3, qmin, qmax)
//
// So q ~= clamp(z_out + round(acc * M), qmin, qmax); the two roundings can differ from a
// single exact rounding by at most one unit, which is why bit-exact models must use this
// path and not a float multiply. Our one deviation from TFLite: the left shift saturates
// instead of overflowing (TFLite leaves that case undefined).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "anybit/intsim/error.h"

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

// gemmlowp's SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b, rounded to
// nearest with ties towards +infinity. The nudge makes the truncating division round; the
// only product that does not fit is (-2^31)^2, which saturates.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  const bool overflow = a == b && a == std::numeric_limits<int32_t>::min();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  const int32_t high = static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
  return overflow ? std::numeric_limits<int32_t>::max() : high;
}

// gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.
// exponent in [0, 31]. Relies on >> of a negative number being an arithmetic shift, as
// every compiler anybit supports does (and C++20 requires).
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// TFLite's MultiplyByQuantizedMultiplier: round(x * M) for an int32 x, in integers only.
inline int32_t multiply_by_dyadic(int32_t x, DyadicMultiplier m) {
  const int left_shift = m.shift < 0 ? -m.shift : 0;
  const int right_shift = m.shift > 0 ? m.shift : 0;
  const int32_t shifted = saturate_int32(static_cast<int64_t>(x) * (int64_t{1} << left_shift));
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m.m0),
                                right_shift);
}

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

// --- reference twins: the same numbers, written as the arithmetic they stand for --------

// floor(a / 2^e) for any int64 a, e in [0, 62].
inline int64_t floor_div_pot_reference(int64_t a, int e) {
  const int64_t d = int64_t{1} << e;
  int64_t q = a / d;
  if (a % d != 0 && a < 0) --q;
  return q;
}

inline int32_t saturating_rounding_doubling_high_mul_reference(int32_t a, int32_t b) {
  if (a == std::numeric_limits<int32_t>::min() && b == a)
    return std::numeric_limits<int32_t>::max();
  // round_half_up(a * b / 2^31) = floor((a * b + 2^30) / 2^31)
  const int64_t ab = static_cast<int64_t>(a) * b;
  return static_cast<int32_t>(floor_div_pot_reference(ab + (int64_t{1} << 30), 31));
}

inline int32_t rounding_divide_by_pot_reference(int32_t x, int exponent) {
  // round_half_away_from_zero(x / 2^exponent), on |x| in 64 bits
  const int64_t mag = x < 0 ? -static_cast<int64_t>(x) : x;
  const int64_t d = int64_t{1} << exponent;
  int64_t q = mag / d;
  if (2 * (mag % d) >= d) ++q;
  return static_cast<int32_t>(x < 0 ? -q : q);
}

// The whole requantization in one expression of exact 128-bit arithmetic: the value
// x1 * m0 / 2^(31 + right_shift) with the two roundings of gemmlowp applied in turn.
inline int32_t requantize_dyadic_reference(int64_t acc, DyadicMultiplier m, int32_t zero_point,
                                           int32_t qmin, int32_t qmax) {
  const int64_t lo = std::numeric_limits<int32_t>::min();
  const int64_t hi = std::numeric_limits<int32_t>::max();
  __int128 x = acc < lo ? lo : (acc > hi ? hi : acc);
  if (m.shift < 0) x *= (__int128{1} << -m.shift);
  if (x < lo) x = lo;
  if (x > hi) x = hi;
  // step 1: round_half_up(x * m0 / 2^31), saturated
  __int128 p = x * m.m0 + (__int128{1} << 30);
  __int128 high = p >= 0 ? p / (__int128{1} << 31) : -((-p + (__int128{1} << 31) - 1) / (__int128{1} << 31));
  if (high > hi) high = hi;
  // step 2: round_half_away_from_zero(high / 2^shift)
  if (m.shift > 0) {
    const __int128 d = __int128{1} << m.shift;
    const __int128 mag = high < 0 ? -high : high;
    __int128 q = mag / d;
    if (2 * (mag % d) >= d) ++q;
    high = high < 0 ? -q : q;
  }
  __int128 q = high + zero_point;
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
