// What histogram.cc and calibrator.cc share: per-channel views of [outer, channels, inner]
// data, and number formatting for messages. Internal to calib/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace anybit {
namespace calib {
namespace detail {

constexpr double kInf = std::numeric_limits<double>::infinity();

// v as a message shows it (the shortest default stream form).
inline std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Copies channel c of x viewed as [outer, channels, inner] into out ([outer * inner]).
inline void gather_channel(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t c,
                           std::vector<float>& out) {
  out.resize(outer * inner);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = x + (o * channels + c) * inner;
    std::copy(src, src + inner, out.begin() + o * inner);
  }
}

// Throws std::invalid_argument naming `who` for a negative view.
inline void check_view(const char* who, int64_t outer, int64_t channels, int64_t inner) {
  if (outer < 0 || channels < 0 || inner < 0)
    throw std::invalid_argument(std::string(who) + ": negative view (outer " +
                                std::to_string(outer) + ", channels " + std::to_string(channels) +
                                ", inner " + std::to_string(inner) + ")");
}

}  // namespace detail
}  // namespace calib
}  // namespace anybit
