// Whole-file reads for the dataset readers: plain files and gzip files alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anybit {
namespace data {

// The bytes of `path`; throws Error("<what>: <path>: ...") if it is missing or unreadable.
std::vector<uint8_t> read_file_bytes(const std::string& what, const std::string& path);

// The decompressed bytes of a gzip file, or the bytes of a plain file (zlib reads those as is).
// A truncated or corrupt gzip stream throws Error("<what>: <path>: ...").
std::vector<uint8_t> read_file_maybe_gzip(const std::string& what, const std::string& path);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace data
}  // namespace anybit
