// Resize + center crop; the formulas are in image_resize.h.
#include "anybit/data/image_resize.h"

#include <algorithm>
#include <cmath>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {
namespace {

// Python's round(diff / 2) for a non-negative integer diff: ties go to the even neighbour.
int64_t half_round_even(int64_t diff) {
  const int64_t k = diff / 2;
  if (diff % 2 == 0) return k;
  return k % 2 == 0 ? k : k + 1;
}

uint8_t round_to_u8(float v) {
  return static_cast<uint8_t>(std::floor(std::min(255.0f, std::max(0.0f, v)) + 0.5f));
}

}  // namespace

ResizeCropPlan plan_resize_center_crop(int64_t height, int64_t width, int64_t resize, int64_t size) {
  if (height < 1 || width < 1) throw Error("cannot resize an empty image");
  if (size < 1 || resize < size)
    throw Error("resize (" + std::to_string(resize) + ") must be at least the crop size (" + std::to_string(size) +
                ") and the crop size at least 1");
  ResizeCropPlan p;
  const int64_t shorter = std::min(height, width), longer = std::max(height, width);
  // torchvision: int(requested_short * long / short), true division then truncation
  const auto resized_longer =
      static_cast<int64_t>(static_cast<double>(resize * longer) / static_cast<double>(shorter));
  p.resized_height = height <= width ? resize : resized_longer;
  p.resized_width = height <= width ? resized_longer : resize;
  p.size = size;
  p.top = half_round_even(p.resized_height - size);
  p.left = half_round_even(p.resized_width - size);
  return p;
}

AxisTaps bilinear_antialias_taps(int64_t in_size, int64_t out_size, int64_t out_begin, int64_t out_end) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // the triangle's support is 1, widened when shrinking
  AxisTaps t;
  t.max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  const int64_t n = out_end - out_begin;
  t.first.resize(n);
  t.count.resize(n);
  t.weights.assign(n * t.max_taps, 0.0f);
  std::vector<double> w(t.max_taps);
  for (int64_t i = 0; i < n; ++i) {
    const double center = (static_cast<double>(out_begin + i) + 0.5) * scale;
    // C truncation, as in PIL, then clipped to the image
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t count = std::min(hi - lo, t.max_taps);
    double sum = 0;
    for (int64_t k = 0; k < count; ++k) {
      const double x = std::abs((static_cast<double>(lo + k) - center + 0.5) / filter_scale);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      sum += w[k];
    }
    t.first[i] = lo;
    t.count[i] = std::max<int64_t>(count, 0);
    for (int64_t k = 0; k < count; ++k) t.weights[i * t.max_taps + k] = static_cast<float>(sum > 0 ? w[k] / sum : 0.0);
  }
  return t;
}

void resize_center_crop_bilinear_antialias(const RgbImage& image, int64_t resize, int64_t size, uint8_t* out) {
  const ResizeCropPlan p = plan_resize_center_crop(image.height, image.width, resize, size);
  const AxisTaps xt = bilinear_antialias_taps(image.width, p.resized_width, p.left, p.left + size);
  const AxisTaps yt = bilinear_antialias_taps(image.height, p.resized_height, p.top, p.top + size);
  // source rows the crop reads
  const int64_t row0 = yt.first.front();
  int64_t row1 = row0;
  for (int64_t y = 0; y < size; ++y) row1 = std::max(row1, yt.first[y] + yt.count[y]);

  // horizontal pass over those rows, crop columns only: tmp[row - row0][x][c]
  std::vector<float> tmp(static_cast<size_t>((row1 - row0) * size * 3));
  for (int64_t r = row0; r < row1; ++r) {
    const uint8_t* src = image.pixels.data() + r * image.width * 3;
    float* dst = tmp.data() + (r - row0) * size * 3;
    for (int64_t x = 0; x < size; ++x) {
      const float* w = xt.weights.data() + x * xt.max_taps;
      const uint8_t* s = src + xt.first[x] * 3;
      float a0 = 0, a1 = 0, a2 = 0;
      for (int64_t k = 0; k < xt.count[x]; ++k) {
        a0 += w[k] * s[3 * k];
        a1 += w[k] * s[3 * k + 1];
        a2 += w[k] * s[3 * k + 2];
      }
      dst[3 * x] = a0, dst[3 * x + 1] = a1, dst[3 * x + 2] = a2;
    }
  }
  // vertical pass, written planar
  const int64_t plane = size * size;
  for (int64_t y = 0; y < size; ++y) {
    const float* w = yt.weights.data() + y * yt.max_taps;
    const float* s = tmp.data() + (yt.first[y] - row0) * size * 3;
    for (int64_t x = 0; x < size; ++x) {
      float a0 = 0, a1 = 0, a2 = 0;
      for (int64_t k = 0; k < yt.count[y]; ++k) {
        const float* q = s + k * size * 3 + 3 * x;
        a0 += w[k] * q[0];
        a1 += w[k] * q[1];
        a2 += w[k] * q[2];
      }
      out[y * size + x] = round_to_u8(a0);
      out[plane + y * size + x] = round_to_u8(a1);
      out[2 * plane + y * size + x] = round_to_u8(a2);
    }
  }
}

void resize_center_crop_bilinear_antialias_reference(const RgbImage& image, int64_t resize, int64_t size,
                                                     uint8_t* out) {
  const ResizeCropPlan p = plan_resize_center_crop(image.height, image.width, resize, size);
  const int64_t h = image.height, w = image.width, rh = p.resized_height, rw = p.resized_width;
  const AxisTaps xt = bilinear_antialias_taps(w, rw, 0, rw);
  const AxisTaps yt = bilinear_antialias_taps(h, rh, 0, rh);
  auto src = [&](int64_t y, int64_t x, int c) { return static_cast<float>(image.pixels[(y * w + x) * 3 + c]); };
  std::vector<float> wide(static_cast<size_t>(h * rw * 3));  // resized along x only
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < rw; ++x)
      for (int c = 0; c < 3; ++c) {
        float acc = 0;
        for (int64_t k = 0; k < xt.count[x]; ++k) acc += xt.weights[x * xt.max_taps + k] * src(y, xt.first[x] + k, c);
        wide[(y * rw + x) * 3 + c] = acc;
      }
  std::vector<uint8_t> resized(static_cast<size_t>(rh * rw * 3));
  for (int64_t y = 0; y < rh; ++y)
    for (int64_t x = 0; x < rw; ++x)
      for (int c = 0; c < 3; ++c) {
        float acc = 0;
        for (int64_t k = 0; k < yt.count[y]; ++k)
          acc += yt.weights[y * yt.max_taps + k] * wide[((yt.first[y] + k) * rw + x) * 3 + c];
        resized[(y * rw + x) * 3 + c] = round_to_u8(acc);
      }
  for (int c = 0; c < 3; ++c)
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x)
        out[(c * size + y) * size + x] = resized[((p.top + y) * rw + p.left + x) * 3 + c];
}

}  // namespace data
}  // namespace anybit
