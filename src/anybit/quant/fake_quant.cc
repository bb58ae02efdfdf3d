// Fake-quantization kernels and their autograd; see fake_quant.h for the math.
#include "anybit/quant/fake_quant.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <string>
#include <vector>

#include "anybit/quant/device.h"
#include "anybit/quant/fake_quant_elem.h"
#include "anybit/quant/fake_quant_internal.h"
#include "anybit/quant/spec.h"

namespace anybit {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace fq;  // NOLINT: the kernels' shared helpers

// Adding and subtracting 1.5 * 2^23 rounds a float to the nearest integer, ties to
// even, under the default FP rounding mode, for |v| < 2^22. Inputs are clamped to the
// (at most 17-bit) integer range first, so the trick is exact; unlike nearbyintf it
// vectorizes with plain SSE2.
constexpr float kRoundMagic = 12582912.0f;
inline float round_half_even_small(float v) { return (v + kRoundMagic) - kRoundMagic; }

// The ops take the rounding as the integer of anybit::Rounding (quant/spec.h).
constexpr int64_t kHalfEven = static_cast<int64_t>(Rounding::kHalfEven);
constexpr int64_t kHalfAway = static_cast<int64_t>(Rounding::kHalfAway);
constexpr int64_t kFloor = static_cast<int64_t>(Rounding::kFloor);
constexpr int64_t kStochastic = static_cast<int64_t>(Rounding::kStochastic);

inline float round_by_mode(float v, int64_t mode) {
  switch (mode) {
    case kHalfAway: return std::round(v);
    case kFloor: return std::floor(v);
    default: return std::nearbyint(v);  // kHalfEven
  }
}

void check_rounding(int64_t rounding) {
  if (rounding < kHalfEven || rounding > kStochastic)
    throw Error("anybit fake_quant: rounding must be 0 (half_even), 1 (half_away), 2 (floor) "
                "or 3 (stochastic), got " + std::to_string(rounding));
}

void check_range(int64_t qmin, int64_t qmax) {
  if (qmin > qmax)
    throw Error("anybit fake_quant: quant_min (" + std::to_string(qmin) +
                ") must not exceed quant_max (" + std::to_string(qmax) + ")");
  if (qmin < -(1 << 16) || qmax > (1 << 17))
    throw Error("anybit fake_quant: integer range [" + std::to_string(qmin) + ", " +
                std::to_string(qmax) + "] exceeds 17 bits");
}

// Zero points are stored as floats (so LSQ+ can learn them); like ATen's learnable
// fake-quant, the integer used is round(z) clamped into [qmin, qmax].
std::vector<float> integer_zero_points(const at::Tensor& zp, int64_t n, int64_t qmin,
                                       int64_t qmax) {
  at::Tensor z = zp.detach().to(at::kCPU, at::kFloat).contiguous();
  std::vector<float> out(n);
  const float* p = z.data_ptr<float>();
  for (int64_t c = 0; c < n; ++c) {
    float v = std::nearbyint(z.numel() == 1 ? p[0] : p[c]);
    out[c] = std::min(std::max(v, static_cast<float>(qmin)), static_cast<float>(qmax));
  }
  return out;
}

// The hot loop of the uniform forward, kept free of aliasing so it vectorizes.
__attribute__((noinline)) void fq_span_half_even(const float* __restrict x, float* __restrict y,
                                                 int64_t n, float inv, float sc, float lo,
                                                 float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * inv;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    y[i] = round_half_even_small(v) * sc;
  }
}

// STE mask: dx = dy where round(x/s) lies in [lo, hi]. x/s is clamped one step beyond
// the range first so the magic rounding stays exact.
__attribute__((noinline)) void fq_grad_span_ste(const float* __restrict x,
                                                const float* __restrict g,
                                                float* __restrict dx, int64_t n, float inv,
                                                float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * inv;
    v = v < lo - 1.0f ? lo - 1.0f : v;
    v = v > hi + 1.0f ? hi + 1.0f : v;
    const float r = round_half_even_small(v);
    // multiply by the mask rather than branch: this loop must vectorize
    dx[i] = g[i] * static_cast<float>((r >= lo) & (r <= hi));
  }
}

// STE mask plus the LSQ step and zero-point gradient sums of one channel run.
__attribute__((noinline)) void fq_grad_span_lsq(const float* __restrict x,
                                                const float* __restrict g,
                                                float* __restrict dx, int64_t n, float inv,
                                                float sc, float lo, float hi, float* ds_out,
                                                float* dz_out) {
  float ds = 0.0f, dz = 0.0f;
  // omp simd lets the two sums be reassociated across lanes
#pragma omp simd reduction(+ : ds, dz)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * inv;
    v = v < lo - 1.0f ? lo - 1.0f : v;
    v = v > hi + 1.0f ? hi + 1.0f : v;
    const float r = round_half_even_small(v);
    // r lies in [lo-1, hi+1]; clamp(r) is lo below the range and hi above. A mask instead of
    // branches vectorizes (and gives a NaN input dx = 0, as the STE kernel above does).
    float rc = r < lo ? lo : r;
    rc = rc > hi ? hi : rc;
    const float inside = static_cast<float>((r >= lo) & (r <= hi));
    const float outside = 1.0f - inside;
    dx[i] = g[i] * inside;
    ds += g[i] * (inside * ((r * sc - x[i]) * inv) + outside * rc);
    dz -= g[i] * sc * outside;
  }
  *ds_out = ds;
  *dz_out = dz;
}

}  // namespace

ChannelLayout channel_layout(const at::Tensor& x, int64_t num_params, int64_t axis,
                             int64_t group_size, const char* what) {
  ChannelLayout L;
  const int64_t n = x.numel();
  if (group_size > 0) {
    if (n % group_size != 0 || (x.dim() >= 1 && x.size(0) > 0 && (n / x.size(0)) % group_size != 0))
      throw Error(std::string(what) + ": group size " + std::to_string(group_size) +
                  " does not divide the row length of a tensor of " + std::to_string(n) +
                  " elements");
    L.channels = n / group_size;
    L.inner = group_size;
  } else if (num_params == 1) {
    L.channels = 1;
    L.inner = std::max<int64_t>(n, 1);
  } else {
    if (axis < 0 || axis >= x.dim())
      throw Error(std::string(what) + ": channel axis " + std::to_string(axis) +
                  " is outside a tensor of rank " + std::to_string(x.dim()));
    L.channels = x.size(axis);
    L.inner = 1;
    for (int64_t d = axis + 1; d < x.dim(); ++d) L.inner *= x.size(d);
    if (L.inner == 0) L.inner = 1;
  }
  if (num_params != L.channels)
    throw Error(std::string(what) + ": expected " + std::to_string(L.channels) +
                " parameter values, got " + std::to_string(num_params));
  return L;
}

// ---------------------------------------------------------------------------------
// Uniform affine
// ---------------------------------------------------------------------------------

at::Tensor fake_quant_affine_reference(const at::Tensor& x_in, const at::Tensor& scale,
                                       const at::Tensor& zero_point, int64_t axis,
                                       int64_t group_size, int64_t qmin, int64_t qmax,
                                       int64_t rounding) {
  check_range(qmin, qmax);
  check_rounding(rounding);
  const std::vector<float> z = integer_zero_points(zero_point, scale.numel(), qmin, qmax);
  at::Tensor noise;
  if (rounding == kStochastic) noise = at::rand(x_in.sizes(), at::kFloat).contiguous();
  return reference_map(x_in, scale, axis, group_size, "fake_quant_affine", [&](float v, int64_t c, int64_t i) {
    const float r = rounding == kStochastic ? std::floor(v + noise.data_ptr<float>()[i]) : round_by_mode(v, rounding);
    const float q = std::min(std::max(r + z[c], static_cast<float>(qmin)), static_cast<float>(qmax));
    return q - z[c];
  });
}

at::Tensor fake_quant_affine_torchops(const at::Tensor& x, const at::Tensor& scale,
                                      const at::Tensor& zero_point, int64_t axis,
                                      int64_t group_size, int64_t qmin, int64_t qmax,
                                      int64_t rounding) {
  check_range(qmin, qmax);
  check_rounding(rounding);
  ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_affine");
  at::Tensor xg = grouped(x, group_size);
  at::Tensor s = per_channel_view(scale.detach().to(x.options()), x, axis, group_size, L.channels);
  at::Tensor z = per_channel_view(
      zero_point.detach().to(x.options()).round().clamp(qmin, qmax), x, axis, group_size, L.channels);
  at::Tensor v = xg * s.reciprocal();
  at::Tensor r;
  switch (rounding) {
    case 1: r = v.sign() * (v.abs() + 0.5).floor(); break;
    case 2: r = v.floor(); break;
    case 3: r = (v + at::rand_like(v)).floor(); break;
    default: r = v.round(); break;
  }
  at::Tensor q = at::minimum(at::maximum(r + z, at::full({}, qmin, x.options())),
                             at::full({}, qmax, x.options()));
  return ((q - z) * s).reshape(x.sizes());
}

std::vector<AffineGrid> affine_grid(const at::Tensor& scale, const at::Tensor& zero_point,
                                    int64_t channels, int64_t qmin, int64_t qmax) {
  const std::vector<float> s = float_params(scale, channels);
  const std::vector<float> zp = float_params(zero_point, channels);
  std::vector<AffineGrid> grid(channels);
  for (int64_t c = 0; c < channels; ++c)
    grid[c] = elem::grid(s[c], zp[c], static_cast<float>(qmin), static_cast<float>(qmax));
  return grid;
}

at::Tensor fake_quant_affine_forward(const at::Tensor& x_in, const at::Tensor& scale,
                                     const at::Tensor& zero_point, int64_t axis,
                                     int64_t group_size, int64_t qmin, int64_t qmax,
                                     int64_t rounding) {
  static const auto device_op = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("anybit::_fake_quant_affine_forward", "")
                                    .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                      int64_t, int64_t, int64_t, int64_t, int64_t)>();
  if (!fast_path_ok(x_in) && rounding != kStochastic && x_in.scalar_type() == at::kFloat &&
      has_device_kernel(device_op, x_in)) {
    check_range(qmin, qmax);
    return device_op.call(x_in, scale, zero_point, axis, group_size, qmin, qmax, rounding);
  }
  if (!fast_path_ok(x_in) || rounding == kStochastic)
    return fake_quant_affine_torchops(x_in, scale, zero_point, axis, group_size, qmin, qmax, rounding);
  at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  fake_quant_affine_forward_out(x, scale, zero_point, axis, group_size, qmin, qmax, rounding, y);
  return y;
}

void fake_quant_affine_forward_out(const at::Tensor& x, const at::Tensor& scale,
                                   const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                                   int64_t qmin, int64_t qmax, int64_t rounding, at::Tensor& y) {
  if (!fast_path_ok(x) || !x.is_contiguous() || !y.is_contiguous() || y.sizes() != x.sizes() ||
      y.scalar_type() != at::kFloat || rounding == kStochastic)
    throw Error("fake_quant_affine_forward_out: needs contiguous CPU float32 x and y of one "
                "shape and a deterministic rounding mode");
  check_range(qmin, qmax);
  check_rounding(rounding);
  ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_affine");
  const std::vector<AffineGrid> grid = affine_grid(scale, zero_point, L.channels, qmin, qmax);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for_each_channel_run(x.numel(), L, [&](int64_t b, int64_t e, int64_t c) {
    const float sc = grid[c].scale, inv = grid[c].inv, lo = grid[c].lo, hi = grid[c].hi;
    if (rounding == kHalfEven) {
      fq_span_half_even(px + b, py + b, e - b, inv, sc, lo, hi);
    } else {
      for (int64_t i = b; i < e; ++i) {
        float v = round_by_mode(px[i] * inv, rounding);
        py[i] = std::min(std::max(v, lo), hi) * sc;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_affine_backward_reference(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax,
    double grad_factor) {
  at::Tensor x = x_in.detach().to(at::kFloat).contiguous();
  at::Tensor g = grad_in.detach().to(at::kFloat).contiguous();
  ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_affine");
  std::vector<float> s = float_params(scale, L.channels);
  std::vector<float> z = integer_zero_points(zero_point, L.channels, qmin, qmax);
  std::vector<double> ds(L.channels, 0.0), dz(L.channels, 0.0);
  at::Tensor dx = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  const float* pg = g.data_ptr<float>();
  float* pdx = dx.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / L.inner) % L.channels;
    const float inv = 1.0f / s[c];
    const float q = z[c] + std::nearbyint(px[i] * inv);
    if (q < qmin) {
      pdx[i] = 0;
      ds[c] += pg[i] * (qmin - z[c]) * grad_factor;
      dz[c] += -pg[i] * s[c] * grad_factor;
    } else if (q > qmax) {
      pdx[i] = 0;
      ds[c] += pg[i] * (qmax - z[c]) * grad_factor;
      dz[c] += -pg[i] * s[c] * grad_factor;
    } else {
      pdx[i] = pg[i];
      const float x_fq = (q - z[c]) * s[c];
      ds[c] += pg[i] * (x_fq - px[i]) * inv * grad_factor;
    }
  }
  at::Tensor ts = at::empty({L.channels}, x.options()), tz = at::empty({L.channels}, x.options());
  for (int64_t c = 0; c < L.channels; ++c) {
    ts[c] = ds[c];
    tz[c] = dz[c];
  }
  return {dx.to(x_in.scalar_type()), ts.reshape(scale.sizes()), tz.reshape(zero_point.sizes())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_affine_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax,
    double grad_factor, bool need_scale_grad, bool need_zero_point_grad) {
  static const auto device_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("anybit::_fake_quant_affine_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, int64_t, int64_t, int64_t, int64_t,
                                                                double, bool, bool)>();
  if (!fast_path_ok(x_in) && x_in.scalar_type() == at::kFloat && has_device_kernel(device_op, x_in))
    return device_op.call(grad_in, x_in, scale, zero_point, axis, group_size, qmin, qmax, grad_factor,
                          need_scale_grad, need_zero_point_grad);
  if (!fast_path_ok(x_in)) {
    auto r = fake_quant_affine_backward_reference(grad_in.cpu(), x_in.cpu(), scale, zero_point,
                                                  axis, group_size, qmin, qmax, grad_factor);
    return {std::get<0>(r).to(x_in.device()), std::get<1>(r).to(scale.device()),
            std::get<2>(r).to(zero_point.device())};
  }
  at::Tensor x = x_in.contiguous();
  at::Tensor g = grad_in.to(at::kFloat).contiguous();
  ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, "fake_quant_affine");
  const std::vector<AffineGrid> grid = affine_grid(scale, zero_point, L.channels, qmin, qmax);
  at::Tensor dx = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  const float* pg = g.data_ptr<float>();
  float* pdx = dx.data_ptr<float>();
  const bool need_params = need_scale_grad || need_zero_point_grad;
  // Per-thread partial sums of ds and dz: fused with the dx pass so the tensor is read once.
  const int nthreads = at::get_num_threads();
  std::vector<std::vector<double>> acc(need_params ? nthreads : 0,
                                       std::vector<double>(2 * L.channels, 0.0));
  for_each_channel_run(x.numel(), L, [&](int64_t b, int64_t e, int64_t c) {
    const float sc = grid[c].scale, inv = grid[c].inv, lo = grid[c].lo, hi = grid[c].hi;
    if (!need_params) {
      fq_grad_span_ste(px + b, pg + b, pdx + b, e - b, inv, lo, hi);
      return;
    }
    auto& a = acc[at::get_thread_num()];
    // float partial sums over short blocks (vectorizable), double across blocks
    constexpr int64_t kBlock = 2048;
    for (int64_t bb = b; bb < e; bb += kBlock) {
      const int64_t ee = std::min(e, bb + kBlock);
      float ds = 0.0f, dz = 0.0f;
      fq_grad_span_lsq(px + bb, pg + bb, pdx + bb, ee - bb, inv, sc, lo, hi, &ds, &dz);
      a[2 * c] += ds;
      a[2 * c + 1] += dz;
    }
  });
  at::Tensor ts, tz;
  if (need_params) {
    ts = at::zeros({L.channels}, at::kDouble);
    tz = at::zeros({L.channels}, at::kDouble);
    double* ps = ts.data_ptr<double>();
    double* pz = tz.data_ptr<double>();
    for (const auto& a : acc)
      for (int64_t c = 0; c < L.channels; ++c) {
        ps[c] += a[2 * c];
        pz[c] += a[2 * c + 1];
      }
    ts = (ts * grad_factor).to(scale.scalar_type()).reshape(scale.sizes());
    tz = (tz * grad_factor).to(zero_point.scalar_type()).reshape(zero_point.sizes());
  }
  return {dx, ts, tz};
}

namespace {

// What the affine quantizer's backward needs, saved by the autograd functions that use it.
void save_affine(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                 int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax, double grad_factor) {
  ctx->save_for_backward({x, scale, zero_point});
  ctx->saved_data["axis"] = axis;
  ctx->saved_data["group"] = group_size;
  ctx->saved_data["qmin"] = qmin;
  ctx->saved_data["qmax"] = qmax;
  ctx->saved_data["gf"] = grad_factor;
}

// (dx, ds or undefined, dz or undefined) for the output gradient g
std::tuple<at::Tensor, at::Tensor, at::Tensor> saved_affine_backward(AutogradContext* ctx, const at::Tensor& g) {
  auto saved = ctx->get_saved_variables();
  const bool ns = saved[1].requires_grad(), nz = saved[2].requires_grad();
  auto r = fake_quant_affine_backward(g, saved[0], saved[1], saved[2], ctx->saved_data["axis"].toInt(),
                                      ctx->saved_data["group"].toInt(), ctx->saved_data["qmin"].toInt(),
                                      ctx->saved_data["qmax"].toInt(), ctx->saved_data["gf"].toDouble(), ns, nz);
  return {std::get<0>(r), ns ? std::get<1>(r) : at::Tensor(), nz ? std::get<2>(r) : at::Tensor()};
}

class FakeQuantAffineFn : public torch::autograd::Function<FakeQuantAffineFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                            int64_t qmin, int64_t qmax, int64_t rounding, double grad_factor) {
    save_affine(ctx, x, scale, zero_point, axis, group_size, qmin, qmax, grad_factor);
    return fake_quant_affine_forward(x, scale, zero_point, axis, group_size, qmin, qmax, rounding);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [dx, ds, dz] = saved_affine_backward(ctx, grads[0]);
    return {dx, ds, dz, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor fake_quant_affine(const at::Tensor& x, const at::Tensor& scale,
                             const at::Tensor& zero_point, int64_t axis, int64_t group_size,
                             int64_t qmin, int64_t qmax, int64_t rounding, double grad_factor) {
  return FakeQuantAffineFn::apply(x, scale, zero_point, axis, group_size, qmin, qmax, rounding,
                                  grad_factor);
}

// ---------------------------------------------------------------------------------
// QDrop: the affine quantizer with elements passed through at random
// ---------------------------------------------------------------------------------

namespace {

using elem::DropKey;
using elem::dropped;

// y[j] = x[j] where element start + j is dropped (y keeps its value elsewhere); with
// `zero`, y[j] = 0 there and x[j] elsewhere. Branch-free so that it vectorizes.
__attribute__((target_clones("avx2", "default"))) void qdrop_select(const float* __restrict x,
                                                                     float* __restrict y, int64_t n,
                                                                     uint32_t start, DropKey key, bool zero) {
  if (zero) {
    for (int64_t j = 0; j < n; ++j)
      y[j] = dropped(start + static_cast<uint32_t>(j), key.k1, key.k2, key.threshold) ? 0.0f : x[j];
  } else {
    for (int64_t j = 0; j < n; ++j)
      y[j] = dropped(start + static_cast<uint32_t>(j), key.k1, key.k2, key.threshold) ? x[j] : y[j];
  }
}

void qdrop_select_parallel(const float* x, float* y, int64_t n, const DropKey& key, bool zero) {
  at::parallel_for(0, n, 32768, [&](int64_t b, int64_t e) {
    qdrop_select(x + b, y + b, e - b, static_cast<uint32_t>(b), key, zero);
  });
}

// QDrop's mask shaped like x, on x's device: drawn there where the device has the kernel
at::Tensor drop_mask_like(const at::Tensor& x, double p, int64_t seed, int64_t stream) {
  static const auto device_op = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("anybit::_qdrop_mask", "")
                                    .typed<at::Tensor(const at::Tensor&, double, int64_t, int64_t)>();
  if (has_device_kernel(device_op, x)) return device_op.call(x, p, seed, stream);
  return qdrop_mask(x.numel(), p, seed, stream).reshape(x.sizes()).to(x.device());
}

void check_drop(const at::Tensor& x, double p) {
  if (!(p >= 0 && p <= 1)) throw Error("fake_quant_affine_drop: p must lie in [0, 1]");
  if (x.numel() > (int64_t{1} << 32)) throw Error("fake_quant_affine_drop: more than 2^32 elements");
}

class FakeQuantAffineDropFn : public torch::autograd::Function<FakeQuantAffineDropFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t axis, int64_t group_size, int64_t qmin,
                            int64_t qmax, double p, int64_t seed, int64_t stream, int64_t rounding,
                            double grad_factor) {
    check_drop(x, p);
    save_affine(ctx, x, scale, zero_point, axis, group_size, qmin, qmax, grad_factor);
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["stream"] = stream;
    at::Tensor y = fake_quant_affine_forward(x, scale, zero_point, axis, group_size, qmin, qmax, rounding);
    if (p <= 0) return y;
    if (!fast_path_ok(x) || !y.is_contiguous()) {
      return at::where(drop_mask_like(x, p, seed, stream), x, y);
    }
    const at::Tensor xc = x.contiguous();
    qdrop_select_parallel(xc.data_ptr<float>(), y.data_ptr<float>(), x.numel(), elem::drop_key(p, seed, stream), false);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const double p = ctx->saved_data["p"].toDouble();
    at::Tensor g = grads[0].to(at::kFloat).contiguous(), g_kept = g, mask;
    const bool fast = fast_path_ok(ctx->get_saved_variables()[0]) && g.device().is_cpu();
    const DropKey key = elem::drop_key(p, ctx->saved_data["seed"].toInt(), ctx->saved_data["stream"].toInt());
    if (p > 0) {
      if (fast) {  // the quantizer's gradient sees only the kept elements
        g_kept = at::empty_like(g);
        qdrop_select_parallel(g.data_ptr<float>(), g_kept.data_ptr<float>(), g.numel(), key, true);
      } else {
        mask = drop_mask_like(g, p, ctx->saved_data["seed"].toInt(), ctx->saved_data["stream"].toInt());
        g_kept = at::where(mask, at::zeros_like(g), g);
      }
    }
    auto [dx, ds, dz] = saved_affine_backward(ctx, g_kept);
    if (p > 0) {
      if (fast && dx.is_contiguous() && dx.scalar_type() == at::kFloat) {
        // the identity where dropped (the quantizer's pass left 0 there)
        qdrop_select_parallel(g.data_ptr<float>(), dx.data_ptr<float>(), g.numel(), key, false);
      } else {
        if (!mask.defined())
          mask = drop_mask_like(g, p, ctx->saved_data["seed"].toInt(), ctx->saved_data["stream"].toInt());
        dx = at::where(mask, g.to(dx.scalar_type()), dx);
      }
    }
    return {dx,           ds,           dz,           at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor qdrop_mask(int64_t n, double p, int64_t seed, int64_t stream) {
  const DropKey key = elem::drop_key(p, seed, stream);
  at::Tensor m = at::empty({n}, at::kBool);
  bool* pm = m.data_ptr<bool>();
  at::parallel_for(0, n, 32768, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pm[i] = dropped(static_cast<uint32_t>(i), key.k1, key.k2, key.threshold);
  });
  return m;
}

at::Tensor fake_quant_affine_drop(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                                  int64_t axis, int64_t group_size, int64_t qmin, int64_t qmax, double p,
                                  int64_t seed, int64_t stream, int64_t rounding, double grad_factor) {
  return FakeQuantAffineDropFn::apply(x, scale, zero_point, axis, group_size, qmin, qmax, p, seed, stream,
                                      rounding, grad_factor);
}

}  // namespace anybit

