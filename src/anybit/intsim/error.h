// The exception type of the integer engine. Plain C++17 so the engine stays embeddable
// without the rest of anybit: every message names the file (or model), the field and the
// offending value, e.g.
//   model/manifest.json: ops[3].weight: expected int8, int16 or int32 array of shape
//   [16,1,3,3], got float32 [16,3,3]
#pragma once

#include <stdexcept>
#include <string>

namespace anybit {
namespace intsim {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace intsim
}  // namespace anybit
