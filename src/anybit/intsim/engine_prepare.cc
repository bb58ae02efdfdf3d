// A conv2d or linear layer made ready to run (weight offsets and packing, the overflow bound
// that picks its kernel), and the geometry and requantization helpers of the ops.
#include <algorithm>
#include <climits>
#include <cmath>

#include "anybit/intsim/engine_internal.h"

namespace anybit {
namespace intsim {
namespace detail {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Largest |q - z| over a tensor's integer range.
int64_t max_abs_offset(const QuantParams& q) {
  return std::max(int64_t{q.qmax} - q.zero_point, int64_t{q.zero_point} - q.qmin);
}

Conv2dGeometry conv_geometry(const Op& op, const std::vector<int64_t>& in_shape_nchw) {
  Conv2dGeometry g;
  g.batch = in_shape_nchw[0];
  g.in_channels = in_shape_nchw[1];
  g.in_h = in_shape_nchw[2];
  g.in_w = in_shape_nchw[3];
  g.out_channels = op.out_channels;
  g.kernel_h = op.kernel[0], g.kernel_w = op.kernel[1];
  g.stride_h = op.stride[0], g.stride_w = op.stride[1];
  g.pad_h = op.padding[0], g.pad_w = op.padding[1];
  g.dilation_h = op.dilation[0], g.dilation_w = op.dilation[1];
  g.groups = op.groups;
  return g;
}

// Prepares a conv2d or linear layer; `info` gets its full scale. A MAC model that perturbs
// weights changes w - z_w here, before the bound and the packing see them.
PreparedLayer prepare_layer(const Op& op, const TensorInfo& in, const EngineOptions& options,
                            const MacModel& mac, MacLayer& info) {
  PreparedLayer p;
  p.out_channels = op.out_channels;
  p.patch = numel_of(op.weight.shape) / op.out_channels;
  p.w_offset.resize(op.weight.data.size());
  std::vector<int32_t> lo(static_cast<size_t>(p.out_channels)), hi(lo.size());
  for (int64_t o = 0; o < p.out_channels; ++o) {
    const int64_t zw = op.weight_zero_point.size() == 1 ? op.weight_zero_point[0] : op.weight_zero_point[o];
    lo[o] = static_cast<int32_t>(op.weight_qmin - zw);  // fit int32: checked by validate_model
    hi[o] = static_cast<int32_t>(op.weight_qmax - zw);
    for (int64_t k = 0; k < p.patch; ++k) {
      const size_t i = static_cast<size_t>(o * p.patch + k);
      p.w_offset[i] = static_cast<int32_t>(op.weight.data[i] - zw);
    }
  }
  if (mac.perturbs_weights()) mac.perturb_weights(info, p.w_offset.data(), lo.data(), hi.data());
  bool w_fits_int16 = true, w_fits_16_bits = true;
  for (int32_t v : p.w_offset) {
    w_fits_int16 = w_fits_int16 && v >= -32768 && v <= 32767;
    w_fits_16_bits = w_fits_16_bits && v > -65536 && v < 65536;
  }
  // The bound: no partial sum of any order can exceed |bias| + max|x - z| * sum|w - z_w|.
  // In 128 bits it cannot overflow (2^32 * 2^31 * 2^32 at most). Without the bias it is
  // the layer's full scale. The sums of squared products stay below max|x - z|^2 *
  // sum (w - z_w)^2.
  const int64_t acc_max = (int64_t{1} << (options.accumulator.bits - 1)) - 1;
  const unsigned __int128 x_max = static_cast<unsigned __int128>(max_abs_offset(in.q));
  bool bounded = true, squares_fit = w_fits_16_bits && x_max < 65536, squares_fit_f64 = squares_fit;
  unsigned __int128 full_scale = 0;
  for (int64_t o = 0; o < p.out_channels; ++o) {
    unsigned __int128 w_sum = 0, w_sq_sum = 0;
    for (int64_t k = 0; k < p.patch; ++k) {
      const int64_t v = p.w_offset[static_cast<size_t>(o * p.patch + k)];
      w_sum += static_cast<unsigned __int128>(v < 0 ? -v : v);
      w_sq_sum += static_cast<unsigned __int128>(v * v);
    }
    const int64_t b = op.bias.empty() ? 0 : op.bias.data[static_cast<size_t>(o)];
    const unsigned __int128 bound = static_cast<unsigned __int128>(b < 0 ? -b : b) + x_max * w_sum;
    bounded = bounded && bound <= static_cast<unsigned __int128>(acc_max);
    full_scale = std::max(full_scale, x_max * w_sum);
    if (squares_fit) {  // x_max < 2^16: the product stays below 2^96
      const unsigned __int128 sq_bound = x_max * x_max * w_sq_sum;
      squares_fit = (w_sq_sum >> 64) == 0 && sq_bound < (static_cast<unsigned __int128>(1) << 64);
      squares_fit_f64 = squares_fit_f64 && sq_bound < (static_cast<unsigned __int128>(1) << 53);
    }
    squares_fit_f64 = squares_fit_f64 && squares_fit;  // every channel's bound
  }
  info.full_scale = static_cast<double>(full_scale);
  const int64_t x_lo = int64_t{in.q.qmin} - in.q.zero_point;
  const int64_t x_hi = int64_t{in.q.qmax} - in.q.zero_point;
  p.int16_operands = w_fits_int16 && x_lo >= -32768 && x_hi <= 32767;
  const auto* perturber = dynamic_cast<const SumPerturbingMac*>(&mac);
  // A sum-perturbing model runs on the fast kernels unless it needs the sums of squared
  // products where they cannot be computed exactly in 64 bits (then per dot product).
  const bool fast_perturb = perturber && (!perturber->needs_squares() || squares_fit);
  if (options.path == KernelPath::kReference)
    p.kernel = LayerKernel::kReference;
  else if (options.path == KernelPath::kPerDotProduct || !(mac.is_exact() || fast_perturb))
    p.kernel = LayerKernel::kMac;
  else
    p.kernel = bounded ? LayerKernel::kFast : LayerKernel::kStepwise;
  p.perturb = fast_perturb && perturber->perturbs_sums() && p.kernel != LayerKernel::kMac &&
              p.kernel != LayerKernel::kReference;
  if (p.perturb && perturber->needs_squares()) {
    const bool conv = op.kind == OpKind::kConv2d;
    p.w_sq.resize(p.w_offset.size());
    for (int64_t o = 0; o < p.out_channels; ++o)
      for (int64_t k = 0; k < p.patch; ++k) {
        const int64_t v = p.w_offset[static_cast<size_t>(o * p.patch + k)];
        p.w_sq[static_cast<size_t>(conv ? o * p.patch + k : k * p.out_channels + o)] = static_cast<uint32_t>(v * v);
      }
    if (conv && squares_fit_f64) p.w_sq_f64.assign(p.w_sq.begin(), p.w_sq.end());
  }

  if (p.kernel == LayerKernel::kStepwise && p.int16_operands)
    p.w_offset16.assign(p.w_offset.begin(), p.w_offset.end());
  if (p.kernel == LayerKernel::kFast) {
    const bool conv = op.kind == OpKind::kConv2d;
    // The geometry of one image: packing needs only the channels and the kernel.
    const Conv2dGeometry g =
        conv ? conv_geometry(op, {1, in.shape[0], in.shape[1], in.shape[2]}) : Conv2dGeometry{};
    if (p.int16_operands) {
      const std::vector<int16_t> w16(p.w_offset.begin(), p.w_offset.end());
      p.packed16 = conv ? pack_conv2d_weights(g, w16.data())
                        : pack_linear_weights(p.out_channels, p.patch, w16.data());
    } else {
      p.packed32 = conv ? pack_conv2d_weights(g, p.w_offset.data())
                        : pack_linear_weights(p.out_channels, p.patch, p.w_offset.data());
    }
  }
  return p;
}

namespace {

// row(base, M_c) for every [batch][channel] row of `inner` accumulators.
template <typename Row>
void for_each_channel_row(int64_t batch, int64_t channels, int64_t inner, const std::vector<DyadicMultiplier>& m,
                          Row row) {
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      row((n * channels + c) * inner, m.size() == 1 ? m[0] : m[static_cast<size_t>(c)]);
}

}  // namespace

// y = requantize_dyadic(acc, M[channel], ...) over [batch][channels][inner].
void requantize_channels(const int32_t* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y) {
  for_each_channel_row(batch, channels, inner, m, [&](int64_t base, const DyadicMultiplier& mc) {
    requantize_int32(acc + base, inner, 0, mc, q.zero_point, q.qmin, q.qmax, y + base);
  });
}

void requantize_channels(const int64_t* acc, int64_t batch, int64_t channels, int64_t inner,
                         const std::vector<DyadicMultiplier>& m, const QuantParams& q,
                         int32_t* y) {
  for_each_channel_row(batch, channels, inner, m, [&](int64_t base, const DyadicMultiplier& mc) {
    for (int64_t i = 0; i < inner; ++i)
      y[base + i] = requantize_dyadic(acc[base + i], mc, q.zero_point, q.qmin, q.qmax);
  });
}

Pool2dGeometry pool_geometry(const Op& op, const std::vector<int64_t>& in_nchw,
                             const std::vector<int64_t>& out_chw) {
  Pool2dGeometry g;
  g.batch = in_nchw[0];
  g.channels = in_nchw[1];
  g.in_h = in_nchw[2];
  g.in_w = in_nchw[3];
  g.out_h = out_chw[1];
  g.out_w = out_chw[2];
  if (op.kind == OpKind::kGlobalAvgPool) {
    g.kernel_h = g.in_h, g.kernel_w = g.in_w;  // one window: the whole plane
    return g;
  }
  if (op.kind == OpKind::kAdaptiveAvgPool2d) return g;  // windows from the sizes alone
  g.kernel_h = op.kernel[0], g.kernel_w = op.kernel[1];
  g.stride_h = op.stride[0], g.stride_w = op.stride[1];
  g.pad_h = op.padding[0], g.pad_w = op.padding[1];
  g.dilation_h = op.dilation[0], g.dilation_w = op.dilation[1];
  return g;
}

// The accumulators of a conv2d or linear layer on its fast or stepwise kernel (bias may be
// null); the stepwise kernels add their overflow events to *overflows.
void exact_sums(const PreparedLayer& L, bool conv, const Conv2dGeometry& g, int64_t batch, int64_t in_features,
                const int32_t* xd, int32_t zx, const int32_t* bias, int32_t* acc, const AccumulatorSpec& spec,
                int64_t* overflows, KernelScratch& scratch) {
  if (L.kernel == LayerKernel::kFast && conv && L.int16_operands)
    conv2d_acc32(g, xd, zx, L.packed16, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast && conv)
    conv2d_acc32(g, xd, zx, L.packed32, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast && L.int16_operands)
    linear_acc32(batch, xd, zx, L.packed16, bias, acc, scratch);
  else if (L.kernel == LayerKernel::kFast)
    linear_acc32(batch, xd, zx, L.packed32, bias, acc, scratch);
  else if (conv && L.int16_operands)
    conv2d_int16_stepwise(g, xd, zx, L.w_offset16.data(), bias, spec, acc, overflows, scratch);
  else if (conv)
    conv2d_int32_stepwise(g, xd, zx, L.w_offset.data(), bias, spec, acc, overflows, scratch);
  else if (L.int16_operands)
    linear_int16_stepwise(batch, in_features, L.out_channels, xd, zx, L.w_offset16.data(), bias, spec, acc,
                          overflows, scratch);
  else
    linear_int32_stepwise(batch, in_features, L.out_channels, xd, zx, L.w_offset.data(), bias, spec, acc,
                          overflows, scratch);
}

}  // namespace detail
}  // namespace intsim
}  // namespace anybit
