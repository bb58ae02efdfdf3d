// Helpers the fake-quant kernels share (fake_quant.cc: integer grids; fake_quant_float.cc:
// minifloat and block formats). Internal to quant/.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "anybit/quant/fake_quant.h"

namespace anybit {
namespace fq {

constexpr int64_t kGrain = 1 << 15;

inline std::vector<float> float_params(const at::Tensor& t, int64_t n) {
  at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  std::vector<float> out(n);
  const float* p = c.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) out[i] = c.numel() == 1 ? p[0] : p[i];
  return out;
}

// Calls fn(begin, end, channel) over [0, n) split into runs sharing one channel,
// in parallel.
template <typename Fn>
void for_each_channel_run(int64_t n, const ChannelLayout& L, Fn fn) {
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    int64_t i = b;
    while (i < e) {
      const int64_t blk = i / L.inner;
      const int64_t c = blk % L.channels;
      const int64_t end = std::min(e, (blk + 1) * L.inner);
      fn(i, end, c);
      i = end;
    }
  });
}

inline bool fast_path_ok(const at::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == at::kFloat;
}

// Shape that broadcasts one value per channel against x (for the ATen-op fallbacks).
inline at::Tensor per_channel_view(const at::Tensor& p, const at::Tensor& x, int64_t axis,
                                   int64_t group_size, int64_t channels) {
  if (channels == 1) return p.reshape({});
  if (group_size > 0) return p.reshape({channels, 1});
  std::vector<int64_t> shape(x.dim(), 1);
  shape[axis] = channels;
  return p.reshape(shape);
}

inline at::Tensor grouped(const at::Tensor& x, int64_t group_size) {
  return group_size > 0 ? x.reshape({-1, group_size}) : x;
}

// The reference twins' element loop, plain and one element at a time:
//   y[i] = f(x[i] * (1/s[c]), c, i) * s[c],  c the channel (or group) of element i,
// on the CPU in float32, returned in x's dtype.
template <typename F>
at::Tensor reference_map(const at::Tensor& x_in, const at::Tensor& scale, int64_t axis, int64_t group_size,
                         const char* what, F f) {
  const at::Tensor x = x_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const ChannelLayout L = channel_layout(x, scale.numel(), axis, group_size, what);
  const std::vector<float> s = float_params(scale, L.channels);
  at::Tensor y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / L.inner) % L.channels;
    py[i] = f(px[i] * (1.0f / s[c]), c, i) * s[c];
  }
  return y.to(x_in.scalar_type());
}

}  // namespace fq
}  // namespace anybit
