// The geometric part of the ImageNet evaluation transform, torchvision's
//   Resize(resize)  ->  CenterCrop(size)
// on an 8-bit RGB image, producing the crop as planar 8-bit [3, size, size].
//
// Resize: the shorter side becomes `resize`, the longer int(resize * long / short) (torchvision's
// rule). The filter is PIL's antialiased bilinear resampling (Image.resize(..., BILINEAR), which
// torchvision uses on PIL images, and torch's interpolate(mode="bilinear", antialias=True)): a
// separable triangle filter whose support widens by the scale factor when shrinking, so every
// source pixel contributes (no aliasing); when enlarging it is plain bilinear interpolation with
// half-pixel centres (align_corners=False). For output index x along an axis of scale s = in/out:
//   centre = (x + 0.5) s,   support = max(s, 1),
//   taps j in [int(centre - support + 0.5), int(centre + support + 0.5)) clipped to [0, in),
//   w_j = max(0, 1 - |j - centre + 0.5| / max(s, 1)),  normalized to sum 1.
// Rows are filtered first along x, then along y, in float, and the result is rounded to 8 bits
// (PIL also rounds between the two passes; the results differ by at most one level).
// CenterCrop: top = round((H - size) / 2) with Python's round-half-to-even, likewise left.
#pragma once

#include <cstdint>
#include <vector>

#include "anybit/data/image_decode.h"

namespace anybit {
namespace data {

struct ResizeCropPlan {
  int64_t resized_height = 0, resized_width = 0;  // after Resize
  int64_t top = 0, left = 0, size = 0;            // the crop window in the resized image
};

// Requires 1 <= size <= resize and a non-empty image.
ResizeCropPlan plan_resize_center_crop(int64_t height, int64_t width, int64_t resize, int64_t size);

// The filter taps of output indices [out_begin, out_end) when resampling an axis from in_size
// to out_size samples (formula above).
struct AxisTaps {
  int64_t max_taps = 0;
  std::vector<int64_t> first;  // first source index per output index
  std::vector<int64_t> count;  // number of taps per output index
  std::vector<float> weights;  // max_taps per output index, normalized
};
AxisTaps bilinear_antialias_taps(int64_t in_size, int64_t out_size, int64_t out_begin, int64_t out_end);

// Resize + center crop, computing only the pixels inside the crop; out is [3, size, size].
void resize_center_crop_bilinear_antialias(const RgbImage& image, int64_t resize, int64_t size, uint8_t* out);

// The same, written plainly: resize the whole image, then cut the crop out of it. Bit-identical
// to the function above (same taps, same summation order); the tests hold them together.
void resize_center_crop_bilinear_antialias_reference(const RgbImage& image, int64_t resize, int64_t size,
                                                     uint8_t* out);

}  // namespace data
}  // namespace anybit
