// Test-only helpers: temp folders and small files in every format the readers take, written
// with the same libraries a user's tools would use (zlib, libpng, libjpeg).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {
namespace fixtures {

// A fresh, empty folder under the test temp dir.
std::string make_temp_dir(const std::string& name);

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& bytes);

// IDX: big-endian magic and dims, then the payload.
std::vector<uint8_t> idx_file(uint32_t magic, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload);

// A .npy file (format 1.0, or 2.0 when version2) with the given header fields and raw data.
std::vector<uint8_t> npy_file(const std::string& descr, const std::string& shape, const std::vector<uint8_t>& data,
                              bool version2 = false);

// PNG of `channels` 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) at 8 or 16 bits; pixels are
// row-major interleaved samples (16-bit ones as big-endian pairs).
void write_png(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels,
               int bit_depth = 8);
// Baseline JPEG of 1 (gray) or 3 (RGB) channels.
void write_jpeg(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels,
                int quality = 95);

// Runs fn and checks it throws Error with every fragment in its message.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << fragments.front() << "'";
  } catch (const Error& e) {
    for (const std::string& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "message: " << e.what() << "\nmissing: " << f;
  }
}

}  // namespace fixtures
}  // namespace data
}  // namespace anybit
