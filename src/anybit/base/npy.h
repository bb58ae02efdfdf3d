// NumPy .npy files (format versions 1.0, 2.0 and 3.0): the array container of the
// exported integer model and of .npy datasets, read and written here only:
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//
// Supported: C order, little-endian int8, uint8, int16, int32, int64, float32, float64.
// Everything else (Fortran order, big endian, object or structured dtypes, a truncated
// header or payload, trailing bytes) is rejected with an Error naming the file and the
// problem: these files come from other programs, and a silently misread weight is worse
// than no weight.
//
// Values are decoded from little-endian bytes explicitly, so reading does not depend on
// the host's byte order or on the alignment of the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "anybit/base/error.h"

namespace anybit {

enum class DType { kInt8, kUInt8, kInt16, kInt32, kInt64, kFloat32, kFloat64 };

const char* dtype_name(DType d);      // "int8", ... as NumPy names them
size_t dtype_size(DType d);           // bytes per element
bool dtype_is_integer(DType d);
// Parses "int8", "uint8", ... ; throws Error on anything else.
DType parse_dtype_name(const std::string& name);

struct NpyArray {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // empty for a 0-d array (one element)
  std::vector<uint8_t> bytes;  // C-order payload, little endian

  int64_t size() const;  // number of elements
  // Element i as an integer (integer dtypes) or as a double (any dtype).
  int64_t int_at(int64_t i) const;
  double double_at(int64_t i) const;

  // Element-wise conversions. to_int32 throws Error (naming `what`) for a float dtype or a
  // value outside int32.
  std::vector<int32_t> to_int32(const std::string& what) const;
  std::vector<double> to_double() const;

  // Builds an array from integers; throws Error (naming `what`) if a value does not fit.
  static NpyArray from_ints(DType dtype, std::vector<int64_t> shape,
                            const std::vector<int32_t>& values, const std::string& what);
  static NpyArray from_int64s(DType dtype, std::vector<int64_t> shape,
                              const std::vector<int64_t>& values, const std::string& what);
  static NpyArray from_doubles(DType dtype, std::vector<int64_t> shape,
                               const std::vector<double>& values);
};

// "[16,1,3,3]"
std::string shape_str(const std::vector<int64_t>& shape);

// Parses a whole .npy file held in memory; `name` is used in error messages.
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& name);
// The bytes of a .npy file (version 1.0, or 2.0 when the header needs it).
std::vector<uint8_t> serialize_npy(const NpyArray& array);

NpyArray read_npy(const std::string& path);
// Writes to a temporary file in the same directory and renames it over `path`, so a
// reader never sees half a file.
void write_npy(const std::string& path, const NpyArray& array);

// The same temp-then-rename write for any bytes (used for manifest.json).
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
// Whole file into memory; throws Error naming the file if it cannot be read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace anybit
