// What model.cc (validation), model_read.cc (the manifest) and model_write.cc (saving) share.
// Internal to intsim/.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "anybit/base/error.h"
#include "anybit/base/npy.h"

namespace anybit {
namespace intsim {
namespace detail {

constexpr const char* kFormatName = "anybit-int";
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kMaxDim = kInt32Max;
constexpr int64_t kMaxElements = int64_t{1} << 31;

[[noreturn]] inline void fail(const std::string& origin, const std::string& field, const std::string& what) {
  throw Error(origin + ": " + field + ": " + what);
}

inline std::string ints_str(const std::vector<int64_t>& v) { return shape_str(v); }

inline std::string range_str(int64_t lo, int64_t hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// Array file names are relative to the model directory and may not leave it. Returns
// what is wrong with `file`, or "" if nothing.
std::string array_file_name_problem(const std::string& file);

}  // namespace detail
}  // namespace intsim
}  // namespace anybit
