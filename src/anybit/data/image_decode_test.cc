// JPEG/PNG decoding to RGB: the conversions PIL's convert("RGB") makes, and errors (never
// crashes) for truncated, corrupt or foreign files.
#include "anybit/data/image_decode.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>

#include "anybit/data/dataset.h"
#include "anybit/data/file_read.h"
#include "anybit/data/test_fixtures.h"

namespace anybit {
namespace data {
namespace {

using fixtures::expect_error;
using fixtures::make_temp_dir;
using fixtures::write_jpeg;
using fixtures::write_png;

std::vector<uint8_t> png_bytes(int w, int h, int channels, const std::vector<uint8_t>& px, int bits = 8) {
  const std::string path = make_temp_dir("decode_png") + "/a.png";
  write_png(path, w, h, channels, px, bits);
  return read_file_bytes("test", path);
}

std::vector<uint8_t> jpeg_bytes(int w, int h, int channels, const std::vector<uint8_t>& px) {
  const std::string path = make_temp_dir("decode_jpeg") + "/a.jpg";
  write_jpeg(path, w, h, channels, px, 100);
  return read_file_bytes("test", path);
}

TEST(DecodePng, RgbRoundTripsExactly) {
  std::vector<uint8_t> px(5 * 3 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 37);
  const RgbImage img = decode_image(png_bytes(5, 3, 3, px), "a.png");
  EXPECT_EQ(img.width, 5);
  EXPECT_EQ(img.height, 3);
  EXPECT_EQ(img.pixels, px);
}

TEST(DecodePng, GrayIsReplicatedAndAlphaIsDroppedNotComposited) {
  const RgbImage gray = decode_image(png_bytes(2, 1, 1, {10, 250}), "g.png");
  EXPECT_EQ(gray.pixels, (std::vector<uint8_t>{10, 10, 10, 250, 250, 250}));
  const RgbImage ga = decode_image(png_bytes(1, 1, 2, {77, 0}), "ga.png");
  EXPECT_EQ(ga.pixels, (std::vector<uint8_t>{77, 77, 77}));
  const RgbImage rgba = decode_image(png_bytes(1, 1, 4, {1, 2, 3, 0}), "rgba.png");
  EXPECT_EQ(rgba.pixels, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(DecodePng, SixteenBitSamplesKeepTheirHighByte) {
  const RgbImage img = decode_image(png_bytes(1, 1, 3, {0x12, 0xff, 0xab, 0x01, 0x00, 0x80}, 16), "16.png");
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0x12, 0xab, 0x00}));
}

TEST(DecodeJpeg, RgbAndGrayDecodeWithinCompressionError) {
  std::vector<uint8_t> px;
  for (int i = 0; i < 16 * 16; ++i) px.insert(px.end(), {200, 100, 50});
  const RgbImage rgb = decode_image(jpeg_bytes(16, 16, 3, px), "a.jpg");
  ASSERT_EQ(rgb.pixels.size(), px.size());
  for (size_t i = 0; i < px.size(); ++i) ASSERT_NEAR(rgb.pixels[i], px[i], 2) << i;
  const RgbImage gray = decode_image(jpeg_bytes(8, 8, 1, std::vector<uint8_t>(64, 90)), "g.jpg");
  for (size_t i = 0; i < gray.pixels.size(); i += 3) {
    ASSERT_NEAR(gray.pixels[i], 90, 1);
    ASSERT_EQ(gray.pixels[i], gray.pixels[i + 1]);
    ASSERT_EQ(gray.pixels[i], gray.pixels[i + 2]);
  }
}

TEST(DecodeImage, ForeignEmptyAndTruncatedFilesAreErrorsNamingThem) {
  expect_error([] { decode_image({'G', 'I', 'F', '8', '9', 'a'}, "x.gif"); }, {"x.gif: not a JPEG or PNG"});
  expect_error([] { decode_image({}, "empty.jpg"); }, {"empty.jpg: empty file"});
  std::vector<uint8_t> png = png_bytes(4, 4, 3, std::vector<uint8_t>(48, 9));
  png.resize(png.size() - 20);
  expect_error([&] { decode_image(png, "cut.png"); }, {"cut.png: cannot decode PNG"});
  std::vector<uint8_t> jpg = jpeg_bytes(32, 32, 3, std::vector<uint8_t>(32 * 32 * 3, 9));
  jpg.resize(jpg.size() / 2);
  expect_error([&] { decode_image(jpg, "cut.jpg"); }, {"cut.jpg: cannot decode JPEG"});
}

TEST(DecodeImage, RandomCorruptionNeverCrashes) {
  std::vector<uint8_t> px(24 * 24 * 3);
  std::mt19937 rng(5);
  for (uint8_t& v : px) v = static_cast<uint8_t>(rng());
  for (const std::vector<uint8_t>& good : {png_bytes(24, 24, 3, px), jpeg_bytes(24, 24, 3, px)}) {
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<uint8_t> b = good;
      for (int f = 0; f < 1 + trial % 5; ++f) b[3 + rng() % (b.size() - 3)] = static_cast<uint8_t>(rng());
      if (trial % 4 == 0) b.resize(3 + rng() % (b.size() - 3));
      try {
        const RgbImage img = decode_image(b, "fuzz");
        ASSERT_EQ(img.pixels.size(), static_cast<size_t>(img.width * img.height * 3));
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace
}  // namespace data
}  // namespace anybit
