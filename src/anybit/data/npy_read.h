// A minimal, strict reader of NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// Accepted: C order, little-endian (or byte-sized) dtypes '<f4', '<f8', '|u1', '|i1', '<i4', '<i8',
// '|b1'; a header that is exactly the Python dict literal np.save writes
// ({'descr': ..., 'fortran_order': False, 'shape': (...), }); data of exactly the size the shape
// needs. Everything else throws Error naming the file: nothing is guessed, and no byte outside
// the buffer is ever read, whatever the file holds.
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anybit {
namespace data {

struct NpyArray {
  std::string descr;           // e.g. "<f4"
  size_t item_size = 0;        // bytes per element
  std::vector<int64_t> shape;  // empty for a scalar
  std::vector<uint8_t> data;   // prod(shape) * item_size bytes, C order, little-endian

  int64_t element_count() const;
};

// Parses the bytes of a .npy file; `name` (the path) is used in error messages.
NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name);

// Reads and parses a .npy file.
NpyArray read_npy(const std::string& path);

}  // namespace data
}  // namespace anybit
