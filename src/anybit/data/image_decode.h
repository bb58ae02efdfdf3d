// JPEG and PNG decoding to 8-bit RGB with libjpeg(-turbo) and libpng.
//
// The result is what PIL's Image.open(f).convert("RGB") gives, up to decoder rounding:
// grayscale is replicated to three channels, palettes are expanded, alpha is dropped (not
// composited), 16-bit samples keep their high byte, and CMYK/YCCK JPEGs are converted with
// R = (255 - C)(255 - K) / 255 (Adobe's inverted CMYK handled). EXIF orientation is ignored,
// as torchvision's ImageFolder does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anybit {
namespace data {

struct RgbImage {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, row-major, interleaved R, G, B
};

// Larger images are refused rather than allocated (PIL's decompression-bomb limit).
constexpr int64_t kMaxImagePixels = 2 * 89478485;

// Decodes the JPEG or PNG in `bytes` (format from the magic bytes, not the file name); throws
// Error("<name>: ...") for another format, a corrupt or truncated image, or one too large.
RgbImage decode_image(const std::vector<uint8_t>& bytes, const std::string& name);

RgbImage decode_jpeg(const uint8_t* data, size_t size, const std::string& name);
RgbImage decode_png(const uint8_t* data, size_t size, const std::string& name);

}  // namespace data
}  // namespace anybit
