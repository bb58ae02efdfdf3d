// What mac.cc (the models) and mac_spec.cc (their string form) share. Internal to intsim/.
#pragma once

#include <string>

namespace anybit {
namespace intsim {
namespace detail {

// The shortest decimal form that reads back as the same double (integers without a point).
std::string format_double(double v);

}  // namespace detail
}  // namespace intsim
}  // namespace anybit
