// libFuzzer target over everything that reads untrusted bytes: the .npy parser, the
// manifest loader and, for every model that loads, a run of the engine (a model that
// passes validation must never make a kernel read out of bounds).
//
// Input: manifest text, optionally followed by "\n--\n" and the bytes of one .npy file
// that every array of the manifest resolves to. Build with Clang:
//   cmake -S src/anybit/intsim -B /tmp/fuzz -DCMAKE_CXX_COMPILER=clang++
//   cmake --build /tmp/fuzz --target fuzz_npy_manifest && /tmp/fuzz/fuzz_npy_manifest -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <string>

#include "anybit/base/npy.h"
#include "anybit/intsim/engine.h"

using namespace anybit;
using namespace anybit::intsim;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  try {
    parse_npy(data, size, "fuzz.npy");
  } catch (const Error&) {
  }
  const size_t sep = all.find("\n--\n");
  const std::string manifest = all.substr(0, sep);
  const std::string npy = sep == std::string::npos ? std::string() : all.substr(sep + 4);
  try {
    Model m = parse_manifest(manifest, "fuzz/manifest.json", [&](const std::string&) {
      return parse_npy(reinterpret_cast<const uint8_t*>(npy.data()), npy.size(), "fuzz/array.npy");
    });
    // adaptive_avgpool2d may make a tensor far larger than its input: keep each run short
    for (const auto& [name, t] : validate_model(m, "fuzz/manifest.json"))
      if (shape_numel(t.shape, name) > (int64_t{1} << 16)) return 0;
    std::vector<Tensor> inputs;
    for (const TensorSpec& in : m.inputs) {
      Tensor t;
      t.shape = in.shape;
      t.shape.insert(t.shape.begin(), 1);
      if (t.numel() > 4096) return 0;  // keep each run short
      t.data.assign(static_cast<size_t>(t.numel()), in.q.qmin);
      inputs.push_back(t);
    }
    for (KernelPath path : {KernelPath::kAuto, KernelPath::kReference}) {
      EngineOptions o;
      o.path = path;
      o.accumulator = {path == KernelPath::kAuto ? 32 : 8, Overflow::kWrap};
      Engine(m, o).run(inputs);
    }
  } catch (const Error&) {
  }
  return 0;
}
