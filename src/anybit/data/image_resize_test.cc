// Resize + center crop: the geometry torchvision uses, the filter taps worked out by hand from
// PIL's formula, and the crop-only implementation held bit-exact to the plain reference.
#include "anybit/data/image_resize.h"

#include <gtest/gtest.h>

#include <random>

namespace anybit {
namespace data {
namespace {

TEST(ResizeCropPlan, FollowsTorchvisionResizeAndCenterCrop) {
  // a 500x375 (WxH) photo: Resize(256) -> 341x256, CenterCrop(224) at top 16, left round(58.5) = 58
  ResizeCropPlan p = plan_resize_center_crop(375, 500, 256, 224);
  EXPECT_EQ(p.resized_height, 256);
  EXPECT_EQ(p.resized_width, 341);  // int(256 * 500 / 375) = int(341.33)
  EXPECT_EQ(p.top, 16);
  EXPECT_EQ(p.left, 58);
  // portrait, and a tie that rounds up to the even 60: round(59.5)
  p = plan_resize_center_crop(700, 400, 256, 224);
  EXPECT_EQ(p.resized_width, 256);
  EXPECT_EQ(p.resized_height, 448);
  EXPECT_EQ(p.top, 112);
  p = plan_resize_center_crop(343, 256, 256, 224);
  EXPECT_EQ(p.resized_height, 343);
  EXPECT_EQ(p.top, 60);
}

TEST(BilinearAntialiasTaps, HalvingWidensTheTriangleToTwoPixels) {
  // centre (x + 0.5) * 2, weights 1 - |j - centre + 0.5| / 2 normalized: [.75 .75 .25] / 1.75
  const AxisTaps t = bilinear_antialias_taps(4, 2, 0, 2);
  EXPECT_EQ(t.first, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(t.count, (std::vector<int64_t>{3, 3}));
  EXPECT_FLOAT_EQ(t.weights[0], 0.75f / 1.75f);
  EXPECT_FLOAT_EQ(t.weights[1], 0.75f / 1.75f);
  EXPECT_FLOAT_EQ(t.weights[2], 0.25f / 1.75f);
  EXPECT_FLOAT_EQ(t.weights[t.max_taps + 0], 0.25f / 1.75f);
  EXPECT_FLOAT_EQ(t.weights[t.max_taps + 2], 0.75f / 1.75f);
}

TEST(BilinearAntialiasTaps, DoublingIsPlainBilinearWithHalfPixelCentresAndClampedEdges) {
  const AxisTaps t = bilinear_antialias_taps(2, 4, 0, 4);
  // output 0 sits at source -0.25 (clamped to 0); 1 at 0.25; 2 at 0.75; 3 at 1.25 (clamped to 1)
  const float expect[4][2] = {{1, 0}, {0.75f, 0.25f}, {0.25f, 0.75f}, {0, 1}};
  for (int x = 0; x < 4; ++x) {
    float w[2] = {0, 0};
    for (int64_t k = 0; k < t.count[x]; ++k) w[t.first[x] + k] = t.weights[x * t.max_taps + k];
    EXPECT_FLOAT_EQ(w[0], expect[x][0]) << "output " << x;
    EXPECT_FLOAT_EQ(w[1], expect[x][1]) << "output " << x;
  }
}

RgbImage random_image(int64_t h, int64_t w, std::mt19937& rng) {
  RgbImage img;
  img.height = h;
  img.width = w;
  img.pixels.resize(h * w * 3);
  for (uint8_t& v : img.pixels) v = static_cast<uint8_t>(rng());
  return img;
}

TEST(ResizeCenterCrop, HalvingARowAveragesWithTheTriangleFilter) {
  // rows 0 10 20 30 -> (0*.75 + 10*.75 + 20*.25) / 1.75 = 7.14 and 22.86, rounded to 7 and 23
  RgbImage img;
  img.height = img.width = 4;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) img.pixels.insert(img.pixels.end(), {uint8_t(10 * x), uint8_t(10 * y), 200});
  std::vector<uint8_t> out(3 * 2 * 2);
  resize_center_crop_bilinear_antialias(img, 2, 2, out.data());
  EXPECT_EQ(out, (std::vector<uint8_t>{7, 23, 7, 23, 7, 7, 23, 23, 200, 200, 200, 200}));
}

TEST(ResizeCenterCrop, SameSizeIsTheIdentity) {
  std::mt19937 rng(1);
  const RgbImage img = random_image(9, 9, rng);
  std::vector<uint8_t> out(3 * 81);
  resize_center_crop_bilinear_antialias(img, 9, 9, out.data());
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < 81; ++k) ASSERT_EQ(out[c * 81 + k], img.pixels[k * 3 + c]);
}

TEST(ResizeCenterCrop, CropOnlyMatchesTheFullResizeReferenceBitForBit) {
  std::mt19937 rng(2024);
  struct Case {
    int64_t h, w, resize, size;
  };
  const Case cases[] = {{1, 1, 4, 3},    {1, 40, 8, 8},  {40, 1, 8, 5},    {31, 47, 16, 13}, {47, 31, 16, 16},
                        {100, 60, 24, 20}, {7, 300, 9, 9}, {64, 64, 64, 32}, {13, 17, 40, 33}, {250, 180, 32, 28}};
  for (const Case& c : cases) {
    const RgbImage img = random_image(c.h, c.w, rng);
    std::vector<uint8_t> fast(3 * c.size * c.size), ref(fast.size());
    resize_center_crop_bilinear_antialias(img, c.resize, c.size, fast.data());
    resize_center_crop_bilinear_antialias_reference(img, c.resize, c.size, ref.data());
    ASSERT_EQ(fast, ref) << c.h << "x" << c.w << " resize " << c.resize << " crop " << c.size;
  }
}

TEST(ResizeCenterCrop, ConstantImageStaysExactlyConstant) {
  for (uint8_t v : {0, 1, 128, 254, 255}) {
    RgbImage img;
    img.height = 37;
    img.width = 23;
    img.pixels.assign(37 * 23 * 3, v);
    std::vector<uint8_t> out(3 * 10 * 10);
    resize_center_crop_bilinear_antialias(img, 11, 10, out.data());
    for (uint8_t o : out) ASSERT_EQ(o, v);
  }
}

}  // namespace
}  // namespace data
}  // namespace anybit
