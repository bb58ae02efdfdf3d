// The fast and the plug-in (MAC) variants of the integer kernels, pooling and add. The
// reference twins live in kernels_reference.cc; see kernels.h for the contract.
#include "anybit/intsim/kernels.h"

#include <algorithm>
#include <cstdlib>

namespace anybit {
namespace intsim {
namespace {

// Inner loops run over blocks of this many elements with a constant trip count: GCC's
// -O2 cost model ("very cheap") only vectorizes loops whose vector code replaces the
// scalar code entirely, which a constant multiple of the vector width guarantees.
constexpr int64_t kBlock = 16;

// out[p] += wk * col[p]. No overflow by the caller's bound, so int32 arithmetic is exact.
template <typename T>
inline void axpy_acc32(int32_t* __restrict out, const T* __restrict col, int32_t wk, int64_t n) {
  int64_t p = 0;
  for (; p + kBlock <= n; p += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) out[p + j] += wk * static_cast<int32_t>(col[p + j]);
  for (; p < n; ++p) out[p] += wk * static_cast<int32_t>(col[p]);
}

// The same for four output rows at once: each block of col is loaded once for four
// weights, which halves the memory traffic of the inner loop.
template <typename T>
inline void axpy4_acc32(int32_t* __restrict o0, int32_t* __restrict o1, int32_t* __restrict o2,
                        int32_t* __restrict o3, const T* __restrict col, int32_t w0, int32_t w1,
                        int32_t w2, int32_t w3, int64_t n) {
  int64_t p = 0;
  for (; p + kBlock <= n; p += kBlock) {
    for (int64_t j = 0; j < kBlock; ++j) {
      const int32_t c = col[p + j];
      o0[p + j] += w0 * c;
      o1[p + j] += w1 * c;
      o2[p + j] += w2 * c;
      o3[p + j] += w3 * c;
    }
  }
  for (; p < n; ++p) {
    const int32_t c = col[p];
    o0[p] += w0 * c, o1[p] += w1 * c, o2[p] += w2 * c, o3[p] += w3 * c;
  }
}

// sum a[i] * b[i] in kBlock partial sums. Reordering is exact: every partial sum is bounded
// by sum |a[i] b[i]|, which the caller's bound keeps inside int32.
template <typename T>
inline int32_t dot_acc32(const T* __restrict a, const T* __restrict b, int64_t n) {
  int32_t part[kBlock] = {};
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    for (int64_t j = 0; j < kBlock; ++j)
      part[j] += static_cast<int32_t>(a[i + j]) * static_cast<int32_t>(b[i + j]);
  int32_t s = 0;
  for (int64_t j = 0; j < kBlock; ++j) s += part[j];
  for (; i < n; ++i) s += static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]);
  return s;
}

// im2col of one group of one image: col[k][p] = x - z_x (0 for padding), k = (c, ky, kx),
// p = (oy, ox). Rows over p are what the conv inner loop streams through.
template <typename T>
void im2col_offset(const Conv2dGeometry& g, const int32_t* x_group, int32_t x_zero_point,
                   T* col) {
  const int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW;
  const int64_t Cg = g.in_channels / g.groups;
  T* dst = col;
  for (int64_t c = 0; c < Cg; ++c) {
    const int32_t* xc = x_group + c * g.in_h * g.in_w;
    for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
      for (int64_t kx = 0; kx < g.kernel_w; ++kx, dst += P) {
        for (int64_t oy = 0; oy < OH; ++oy) {
          T* row = dst + oy * OW;
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) {
            std::fill(row, row + OW, T{0});
            continue;
          }
          const int32_t* xr = xc + iy * g.in_w;
          for (int64_t ox = 0; ox < OW; ++ox) {
            const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
            row[ox] = (ix >= 0 && ix < g.in_w) ? static_cast<T>(xr[ix] - x_zero_point) : T{0};
          }
        }
      }
    }
  }
}

template <typename T>
void conv2d_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point, const T* w,
                  const int32_t* bias, int32_t* acc) {
  const int64_t P = g.out_h() * g.out_w();
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t K = g.patch_size();
  std::vector<T> col(static_cast<size_t>(K * P));
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int32_t* xg = x + (n * g.in_channels + grp * Cg) * g.in_h * g.in_w;
      im2col_offset(g, xg, x_zero_point, col.data());
      for (int64_t o = 0; o < Og; ++o) {
        const int64_t oc = grp * Og + o;
        int32_t* out = acc + (n * g.out_channels + oc) * P;
        std::fill(out, out + P, bias ? bias[oc] : 0);
      }
      int64_t o = 0;
      for (; o + 4 <= Og; o += 4) {
        const int64_t oc = grp * Og + o;
        int32_t* out = acc + (n * g.out_channels + oc) * P;
        const T* wr = w + oc * K;
        for (int64_t k = 0; k < K; ++k)
          axpy4_acc32(out, out + P, out + 2 * P, out + 3 * P, col.data() + k * P, wr[k],
                      wr[K + k], wr[2 * K + k], wr[3 * K + k], P);
      }
      for (; o < Og; ++o) {
        const int64_t oc = grp * Og + o;
        int32_t* out = acc + (n * g.out_channels + oc) * P;
        const T* wr = w + oc * K;
        for (int64_t k = 0; k < K; ++k) axpy_acc32(out, col.data() + k * P, wr[k], P);
      }
    }
  }
}

template <typename T>
void linear_acc32(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                  int32_t x_zero_point, const T* w, const int32_t* bias, int32_t* acc) {
  std::vector<T> row(static_cast<size_t>(in_features));
  for (int64_t n = 0; n < batch; ++n) {
    const int32_t* xn = x + n * in_features;
    for (int64_t i = 0; i < in_features; ++i) row[i] = static_cast<T>(xn[i] - x_zero_point);
    for (int64_t o = 0; o < out_features; ++o)
      acc[n * out_features + o] =
          (bias ? bias[o] : 0) + dot_acc32(w + o * in_features, row.data(), in_features);
  }
}

// One dot product through the MAC, with the bookkeeping both layer kinds share.
struct MacDriver {
  MacModel& mac;
  Accumulator& acc;
  MacStats* stats;
  Accumulator exact_acc;  // a second register: the exact result must not count overflows twice
  MacContext ctx;

  MacDriver(MacModel& m, Accumulator& a, MacStats* s, std::string_view layer, const char* op)
      : mac(m), acc(a), stats(s), exact_acc(a.spec()) {
    ctx.layer = layer;
    ctx.op = op;
    ctx.acc = &acc;
  }

  int64_t run(const int32_t* xv, const int32_t* wv, size_t n, const int32_t* bias, int64_t oc) {
    int64_t r = acc.fit(mac.dot(xv, wv, n, ctx));
    if (stats) {
      ++stats->dot_products;
      if (!mac.is_exact()) {
        const int64_t e = dot_exact(xv, wv, n, exact_acc);
        const int64_t err = std::llabs(r - e);
        stats->sum_abs_error += static_cast<double>(err);
        stats->max_abs_error = std::max(stats->max_abs_error, err);
      }
    }
    if (bias) r = acc.add(r, bias[oc]);
    return r;
  }
};

}  // namespace

void conv2d_int16_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int16_t* w, const int32_t* bias, int32_t* acc) {
  conv2d_acc32<int16_t>(g, x, x_zero_point, w, bias, acc);
}

void conv2d_int32_acc32(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                        const int32_t* w, const int32_t* bias, int32_t* acc) {
  conv2d_acc32<int32_t>(g, x, x_zero_point, w, bias, acc);
}

void linear_int16_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int16_t* w,
                        const int32_t* bias, int32_t* acc) {
  linear_acc32<int16_t>(batch, in_features, out_features, x, x_zero_point, w, bias, acc);
}

void linear_int32_acc32(int64_t batch, int64_t in_features, int64_t out_features,
                        const int32_t* x, int32_t x_zero_point, const int32_t* w,
                        const int32_t* bias, int32_t* acc) {
  linear_acc32<int32_t>(batch, in_features, out_features, x, x_zero_point, w, bias, acc);
}

void conv2d_int_mac(const Conv2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                    const int32_t* w, const int32_t* bias, MacModel& mac, std::string_view layer,
                    Accumulator& acc, int64_t* out, MacStats* stats) {
  const int64_t OH = g.out_h(), OW = g.out_w(), P = OH * OW;
  const int64_t Cg = g.in_channels / g.groups, Og = g.out_channels / g.groups;
  const int64_t K = g.patch_size();
  // Patches laid out [P][K] so each dot product sees two contiguous vectors.
  std::vector<int32_t> col(static_cast<size_t>(K * P));
  std::vector<int32_t> patches(static_cast<size_t>(K * P));
  MacDriver driver(mac, acc, stats, layer, "conv2d");
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int32_t* xg = x + (n * g.in_channels + grp * Cg) * g.in_h * g.in_w;
      im2col_offset(g, xg, x_zero_point, col.data());
      for (int64_t k = 0; k < K; ++k)
        for (int64_t p = 0; p < P; ++p) patches[p * K + k] = col[k * P + p];
      for (int64_t o = 0; o < Og; ++o) {
        const int64_t oc = grp * Og + o;
        const int32_t* wr = w + oc * K;
        int64_t* dst = out + (n * g.out_channels + oc) * P;
        driver.ctx.batch = n;
        driver.ctx.channel = oc;
        for (int64_t p = 0; p < P; ++p) {
          driver.ctx.y = p / OW;
          driver.ctx.x = p % OW;
          dst[p] = driver.run(patches.data() + p * K, wr, static_cast<size_t>(K), bias, oc);
        }
      }
    }
  }
}

void linear_int_mac(int64_t batch, int64_t in_features, int64_t out_features, const int32_t* x,
                    int32_t x_zero_point, const int32_t* w, const int32_t* bias, MacModel& mac,
                    std::string_view layer, Accumulator& acc, int64_t* out, MacStats* stats) {
  std::vector<int32_t> row(static_cast<size_t>(in_features));
  MacDriver driver(mac, acc, stats, layer, "linear");
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t i = 0; i < in_features; ++i) row[i] = x[n * in_features + i] - x_zero_point;
    driver.ctx.batch = n;
    for (int64_t o = 0; o < out_features; ++o) {
      driver.ctx.channel = o;
      out[n * out_features + o] =
          driver.run(row.data(), w + o * in_features, static_cast<size_t>(in_features), bias, o);
    }
  }
}

void maxpool2d_int(const Pool2dGeometry& g, const int32_t* x, int32_t qmin, int32_t* y) {
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int32_t* yc = y + nc * g.out_h * g.out_w;
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        // Every value is >= qmin, so starting there is the max of the real elements; a
        // window of padding only (impossible after validation) gives qmin, as -inf would.
        int32_t m = qmin;
        for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) continue;
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
            if (ix >= 0 && ix < g.in_w) m = std::max(m, xc[iy * g.in_w + ix]);
          }
        }
        yc[oy * g.out_w + ox] = m;
      }
    }
  }
}

void avgpool2d_sum_int(const Pool2dGeometry& g, const int32_t* x, int32_t x_zero_point,
                       Accumulator& acc, int64_t* sum) {
  for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
    const int32_t* xc = x + nc * g.in_h * g.in_w;
    int64_t* sc = sum + nc * g.out_h * g.out_w;
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        int64_t s = 0;
        for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
          const int64_t iy = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
          if (iy < 0 || iy >= g.in_h) continue;
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t ix = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
            if (ix >= 0 && ix < g.in_w)
              s = acc.add(s, static_cast<int64_t>(xc[iy * g.in_w + ix]) - x_zero_point);
          }
        }
        sc[oy * g.out_w + ox] = s;
      }
    }
  }
}

void add_int(const AddParams& p, const int32_t* a, const int32_t* b, int64_t n, int32_t* y) {
  const int64_t scale_up = int64_t{1} << p.left_shift;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t a_shifted = saturate_int32((static_cast<int64_t>(a[i]) - p.a_zero_point) * scale_up);
    const int32_t b_shifted = saturate_int32((static_cast<int64_t>(b[i]) - p.b_zero_point) * scale_up);
    const int32_t a_scaled = multiply_by_dyadic(a_shifted, p.a_multiplier);
    const int32_t b_scaled = multiply_by_dyadic(b_shifted, p.b_multiplier);
    // Each scaled input is at most half the int32 range when M_a, M_b <= 1/2 (TFLite's
    // choice); saturating keeps other multipliers defined.
    const int32_t raw_sum = saturate_int32(static_cast<int64_t>(a_scaled) + b_scaled);
    y[i] = requantize_dyadic(raw_sum, p.out_multiplier, p.out_zero_point, p.qmin, p.qmax);
  }
}

}  // namespace intsim
}  // namespace anybit
