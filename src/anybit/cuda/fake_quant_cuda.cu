// CUDA kernels of the uniform quantizer and of QDrop's mask: one thread per element, grid-stride
// loops, the element math of quant/fake_quant_elem.h. See fake_quant_cuda.h.
#include "anybit/cuda/fake_quant_cuda.h"

#include <algorithm>

#include "anybit/quant/fake_quant_elem.h"

namespace anybit {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// enough blocks to fill the device several times over; the loops stride over the rest
unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 4)));
}

__device__ __forceinline__ elem::Grid grid_of(const AffineLaunch& a, int64_t i) {
  const int64_t c = (i / a.inner) % a.channels;
  return elem::grid(a.scale[c * a.scale_stride], a.zero_point[c * a.zero_point_stride], a.qmin, a.qmax);
}

__global__ void affine_forward_kernel(AffineLaunch a, const float* __restrict__ x, float* __restrict__ y,
                                      int rounding) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = elem::affine(x[i], grid_of(a, i), rounding);
}

__global__ void affine_backward_kernel(AffineLaunch a, const float* __restrict__ dy, const float* __restrict__ x,
                                       float* __restrict__ dx, float* __restrict__ ds, float* __restrict__ dz) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const elem::AffineGrad g = elem::affine_grad(x[i], dy[i], grid_of(a, i));
    dx[i] = g.dx;
    if (ds) ds[i] = g.ds;
    if (dz) dz[i] = g.dz;
  }
}

__global__ void qdrop_mask_kernel(bool* __restrict__ m, int64_t n, uint32_t k1, uint32_t k2, uint32_t threshold) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m[i] = elem::dropped(static_cast<uint32_t>(i), k1, k2, threshold);
}

}  // namespace

cudaError_t affine_forward(const AffineLaunch& a, const float* x, float* y, int rounding, cudaStream_t stream) {
  if (a.n > 0) affine_forward_kernel<<<blocks_for(a.n), kThreads, 0, stream>>>(a, x, y, rounding);
  return cudaGetLastError();
}

cudaError_t affine_backward(const AffineLaunch& a, const float* dy, const float* x, float* dx, float* ds, float* dz,
                            cudaStream_t stream) {
  if (a.n > 0) affine_backward_kernel<<<blocks_for(a.n), kThreads, 0, stream>>>(a, dy, x, dx, ds, dz);
  return cudaGetLastError();
}

cudaError_t qdrop_mask(bool* mask, int64_t n, uint32_t k1, uint32_t k2, uint32_t threshold, cudaStream_t stream) {
  if (n > 0) qdrop_mask_kernel<<<blocks_for(n), kThreads, 0, stream>>>(mask, n, k1, k2, threshold);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace anybit
