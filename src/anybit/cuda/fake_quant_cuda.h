// Launchers of the CUDA fake-quant kernels (fake_quant_cuda.cu, compiled by nvcc without
// LibTorch's headers). Pointers are device pointers; every launcher queues its kernel on
// `stream` and returns cudaGetLastError(). The element math is quant/fake_quant_elem.h, the
// same functions the CPU kernels are tested against; the registered ops are ops_cuda.cc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace anybit {
namespace cuda {

// Element i belongs to channel (i / inner) % channels (quant/fake_quant.h's ChannelLayout);
// scale[c * scale_stride], zero_point[c * zero_point_stride] (stride 0: one shared value).
struct AffineLaunch {
  int64_t n = 0, channels = 1, inner = 1;
  const float* scale = nullptr;
  const float* zero_point = nullptr;
  int64_t scale_stride = 1, zero_point_stride = 1;
  float qmin = 0, qmax = 0;
};

// y = x^ (rounding: 0 half even, 1 half away, 2 floor)
cudaError_t affine_forward(const AffineLaunch& a, const float* x, float* y, int rounding, cudaStream_t stream);
// dx; and, where ds / dz are not null, each element's LSQ step and zero-point terms (summed
// per channel by the caller)
cudaError_t affine_backward(const AffineLaunch& a, const float* dy, const float* x, float* dx, float* ds, float* dz,
                            cudaStream_t stream);
// QDrop's mask of n elements: true where element i passes unquantized (elem::dropped)
cudaError_t qdrop_mask(bool* mask, int64_t n, uint32_t k1, uint32_t k2, uint32_t threshold, cudaStream_t stream);

}  // namespace cuda
}  // namespace anybit
