// Devices other than the CPU: the CUDA kernels of libanybit_cuda (cuda/ops_cuda.cc) and the
// `--device` option of the front ends.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

namespace anybit {

// Loads libanybit_cuda from the directory libanybit_torch was loaded from (the build tree, or
// the Python package), once; later calls return the first answer. Returns "" when its kernels
// are registered, or why not (not built: LibTorch without CUDA or no nvcc; the loader's error).
std::string load_cuda_kernels();

// Whether `op` (one of quant/ops.cc's device ops) has a kernel for x's device, a CUDA device
// with libanybit_cuda loaded. The autograd functions ask with the handle they call through;
// without a kernel they use their ATen-op compositions.
bool has_device_kernel(const c10::OperatorHandle& op, const at::Tensor& x);

// Parses `--device` ("cpu", "cuda", "cuda:N"), loads the CUDA kernels for a CUDA device and
// checks that the device exists; throws anybit::Error naming the option and the reason.
c10::Device parse_device(const std::string& spec);

}  // namespace anybit
