#include "anybit/quant/device.h"

#include <ATen/Context.h>
#include <dlfcn.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "anybit/base/error.h"

namespace anybit {

std::string load_cuda_kernels() {
  static std::once_flag once;
  static std::string why;
  std::call_once(once, [] {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&load_cuda_kernels), &info) == 0 || !info.dli_fname) {
      why = "cannot locate libanybit_torch";
      return;
    }
    std::string dir(info.dli_fname);
    dir = dir.find('/') == std::string::npos ? "." : dir.substr(0, dir.rfind('/'));
    const std::string path = dir + "/libanybit_cuda.so";
    if (::access(path.c_str(), R_OK) != 0) {
      why = path + " does not exist: anybit was built without CUDA (its LibTorch has no CUDA, or CMake found no nvcc)";
      return;
    }
    if (!dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* e = dlerror();
      why = "cannot load " + path + ": " + (e ? e : "unknown error");
    }
  });
  return why;
}

bool has_device_kernel(const c10::OperatorHandle& op, const at::Tensor& x) {
  return x.is_cuda() && op.hasKernelForDispatchKey(c10::DispatchKey::CUDA);
}

c10::Device parse_device(const std::string& spec) {
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(spec);
  } catch (const std::exception&) {
    throw Error("--device " + spec + ": expected cpu, cuda or cuda:N");
  }
  if (d.is_cpu()) return d;
  if (!d.is_cuda()) throw Error("--device " + spec + ": anybit runs on cpu or cuda");
  const std::string why = load_cuda_kernels();
  if (!why.empty()) throw Error("--device " + spec + ": " + why);
  if (!at::hasCUDA() || at::getNumGPUs() == 0)
    throw Error("--device " + spec + ": no CUDA device is visible (torch.cuda.is_available() is false here)");
  if (d.has_index() && static_cast<size_t>(d.index()) >= at::getNumGPUs())
    throw Error("--device " + spec + ": there are " + std::to_string(at::getNumGPUs()) + " CUDA devices");
  return d;
}

}  // namespace anybit
