// The one exception type of anybit, shared by every layer (base/, data/, intsim/, quant/,
// the LibTorch core, the CLI and the Python binding). Plain C++17, so the data readers and
// the integer engine stay embeddable without the rest. Every message names the file (or
// model), the rule or field, and the offending value, e.g.
//   model/manifest.json: ops[3].weight: expected int8, int16 or int32 array of shape
//   [16,1,3,3], got float32 [16,3,3]
#pragma once

#include <stdexcept>
#include <string>

namespace anybit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  // "<where>: <what>", where names the file, rule or field
  Error(const std::string& where, const std::string& what) : std::runtime_error(where + ": " + what) {}
};

// The one line of a long error message that says what went wrong: the first line, or for
// the TorchScript interpreter's report ("The following operation failed in the TorchScript
// interpreter. Traceback ...") its last line, the error the failing op raised.
inline std::string error_summary(const std::string& what) {
  const std::string first = what.substr(0, what.find('\n'));
  if (first.find("TorchScript interpreter") == std::string::npos) return first;
  size_t end = what.find_last_not_of(" \n\r\t");
  if (end == std::string::npos) return first;
  const size_t newline = what.rfind('\n', end);
  const size_t begin = newline == std::string::npos ? 0 : newline + 1;
  return what.substr(begin, end + 1 - begin);
}

}  // namespace anybit
