// The per-element float operations of the uniform quantizer and of QDrop's mask, written once
// for the host and for CUDA devices (fake_quant_cuda.cu compiles this header with nvcc).
// Plain C++: no LibTorch.
//
// The CPU kernels of fake_quant.cc compute the same operations in their vectorized loops
// (round half even by the 1.5 * 2^23 trick, equal to rintf on the clamped range); the test
// FakeQuantElem.* holds the two together element by element. The CUDA build compiles with
// --fmad=false (no contraction of a * b + c into one rounding), IEEE division and no
// flush-to-zero, so the device gives these functions' float results bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ANYBIT_HD __host__ __device__ __forceinline__
#else
#define ANYBIT_HD inline
#endif

namespace anybit {
namespace elem {

// rounding: the integer of anybit::Rounding (quant/spec.h); 3 (stochastic) has no element form
constexpr int kHalfEven = 0, kHalfAway = 1, kFloor = 2;

ANYBIT_HD float round_mode(float v, int mode) {
#if defined(__CUDA_ARCH__)
  return mode == kHalfAway ? roundf(v) : mode == kFloor ? floorf(v) : rintf(v);
#else
  return mode == kHalfAway ? std::round(v) : mode == kFloor ? std::floor(v) : std::nearbyint(v);
#endif
}

// One channel's constants, from its scale s and zero point zp (as affine_grid in fake_quant.cc):
// inv = 1/s, z = clamp(round_half_even(zp), qmin, qmax), lo = qmin - z, hi = qmax - z.
struct Grid {
  float inv, scale, lo, hi;
};
ANYBIT_HD Grid grid(float s, float zp, float qmin, float qmax) {
  float z = round_mode(zp, kHalfEven);
  z = z < qmin ? qmin : z;
  z = z > qmax ? qmax : z;
  return {1.0f / s, s, qmin - z, qmax - z};
}

// Comparisons written as the CPU loops write them, so that NaN passes through unchanged.
ANYBIT_HD float clamp(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// x^ = clamp(round(x * inv), lo, hi) * scale
ANYBIT_HD float affine(float x, const Grid& g, int mode) {
  return clamp(round_mode(x * g.inv, mode), g.lo, g.hi) * g.scale;
}

// The backward pass of one element, for the output gradient dy: dx (straight through inside
// the integer range) and the LSQ step and zero-point terms (fake_quant.h). x * inv is clamped
// one step beyond the range first, as the CPU kernel does for its rounding trick.
struct AffineGrad {
  float dx, ds, dz;
};
ANYBIT_HD AffineGrad affine_grad(float x, float dy, const Grid& g) {
  const float r = round_mode(clamp(x * g.inv, g.lo - 1.0f, g.hi + 1.0f), kHalfEven);
  const float rc = clamp(r, g.lo, g.hi);
  const float inside = static_cast<float>((r >= g.lo) & (r <= g.hi));  // 0 for NaN
  const float outside = 1.0f - inside;
  return {dy * inside, dy * (inside * ((r * g.scale - x) * g.inv) + outside * rc), -(dy * g.scale * outside)};
}

// --- QDrop's mask: u from a counter-based hash of (seed, stream, element index) ------------
// murmur3's 32-bit finalizer: a bijection that mixes every input bit into every output bit
ANYBIT_HD uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

struct DropKey {
  uint32_t k1, k2, threshold;  // dropped where hash >> 8 < threshold (p of 2^24)
};
inline DropKey drop_key(double p, int64_t seed, int64_t stream) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const double pc = p < 0.0 ? 0.0 : p > 1.0 ? 1.0 : p;
  return {fmix32(static_cast<uint32_t>(s) ^ fmix32(static_cast<uint32_t>(s >> 32) + 0x9e3779b9u)),
          fmix32(static_cast<uint32_t>(stream) + 0x7f4a7c15u) ^ 0x2545f491u, static_cast<uint32_t>(pc * 16777216.0)};
}

ANYBIT_HD bool dropped(uint32_t i, uint32_t k1, uint32_t k2, uint32_t threshold) {
  return (fmix32(fmix32(i ^ k1) + k2) >> 8) < threshold;
}

}  // namespace elem
}  // namespace anybit
