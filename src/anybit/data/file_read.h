// Whole-file reads for the dataset readers: plain files and gzip files alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct gzFile_s;  // zlib's gzFile is gzFile_s*

namespace anybit {
namespace data {

// The bytes of `path`; throws Error("<what>: <path>: ...") if it is missing or unreadable.
std::vector<uint8_t> read_file_bytes(const std::string& what, const std::string& path);

// The decompressed bytes of a gzip file, or the bytes of a plain file (zlib reads those as is).
// A truncated or corrupt gzip stream throws Error("<what>: <path>: ...").
std::vector<uint8_t> read_file_maybe_gzip(const std::string& what, const std::string& path);

// One gzread of up to `want` bytes (< 2^31) from an open gzip (or plain) file into dst;
// returns the count, 0 at the end of the data. A stream cut off before its end throws
// Error("<what>: <path>: truncated gzip file ..."), damaged data Error("...: corrupt gzip
// data ..."); `have` (bytes read before) goes into the message.
size_t gzip_read(gzFile_s* file, uint8_t* dst, size_t want, const std::string& what, const std::string& path,
                 size_t have);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace data
}  // namespace anybit
