// ImageNet-style folders: one subfolder per class (sorted names give the labels), JPEG
// and PNG files decoded with libjpeg / libpng, then the standard evaluation transform:
// resize the shorter side to `resize` (bilinear, pixel centres aligned as in
// OpenCV/torchvision's tensor Resize without antialiasing), centre-crop `size`, /255,
// normalize with the ImageNet mean and std.
#include <cstddef>
#include <cstdio>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {
namespace {

namespace fs = std::filesystem;

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;  // h * w * 3
};

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jump, 1);
}

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  Image im;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error("imagefolder: " + path + ": cannot decode JPEG (" + err.msg + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  im.w = cinfo.output_width;
  im.h = cinfo.output_height;
  im.rgb.resize(static_cast<size_t>(im.w) * im.h * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = im.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * im.w * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return im;
}

Image decode_png(const std::string& path, const std::vector<uint8_t>& bytes) {
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()))
    throw Error("imagefolder: " + path + ": cannot decode PNG (" + img.message + ")");
  img.format = PNG_FORMAT_RGB;
  Image im;
  im.w = img.width;
  im.h = img.height;
  im.rgb.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, im.rgb.data(), 0, nullptr)) {
    std::string m = img.message;
    png_image_free(&img);
    throw Error("imagefolder: " + path + ": cannot decode PNG (" + m + ")");
  }
  return im;
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

class ImageFolder : public Dataset {
 public:
  ImageFolder(const std::string& dir, int size, int resize) : size_(size), resize_(resize) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error("imagefolder: " + dir + ": no such directory");
    std::vector<std::string> classes;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_directory()) classes.push_back(e.path().filename().string());
    std::sort(classes.begin(), classes.end());
    for (size_t c = 0; c < classes.size(); ++c) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(fs::path(dir) / classes[c], ec)) {
        const std::string x = lower_ext(e.path());
        if (e.is_regular_file() && (x == ".jpg" || x == ".jpeg" || x == ".png")) files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      for (auto& f : files) samples_.push_back({f, static_cast<int64_t>(c)});
    }
    if (samples_.empty())
      throw Error("imagefolder: " + dir + ": no .jpg/.jpeg/.png images in class subfolders");
  }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  std::vector<int64_t> sample_shape() const override { return {3, size_, size_}; }
  void get(int64_t i, float* out, int64_t* label) const override {
    const auto& s = samples_.at(i);
    std::vector<uint8_t> bytes = read_file_maybe_gz(s.first);
    Image im = lower_ext(s.first) == ".png" ? decode_png(s.first, bytes) : decode_jpeg(s.first, bytes);
    // shorter side to resize_, then centre crop size_ x size_
    const double scale = static_cast<double>(resize_) / std::min(im.w, im.h);
    const int nw = std::max(1, static_cast<int>(std::lround(im.w * scale)));
    const int nh = std::max(1, static_cast<int>(std::lround(im.h * scale)));
    if (nw < size_ || nh < size_)
      throw Error("imagefolder: " + s.first + ": resized image is smaller than the crop");
    const int x0 = (nw - size_) / 2, y0 = (nh - size_) / 2;
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
    const double sx = static_cast<double>(im.w) / nw, sy = static_cast<double>(im.h) / nh;
    for (int y = 0; y < size_; ++y) {
      const double fy = std::min(std::max((y + y0 + 0.5) * sy - 0.5, 0.0), im.h - 1.0);
      const int iy = static_cast<int>(fy), iy1 = std::min(iy + 1, im.h - 1);
      const double wy = fy - iy;
      for (int x = 0; x < size_; ++x) {
        const double fx = std::min(std::max((x + x0 + 0.5) * sx - 0.5, 0.0), im.w - 1.0);
        const int ix = static_cast<int>(fx), ix1 = std::min(ix + 1, im.w - 1);
        const double wx = fx - ix;
        for (int c = 0; c < 3; ++c) {
          auto px = [&](int yy, int xx) { return im.rgb[(static_cast<size_t>(yy) * im.w + xx) * 3 + c]; };
          const double v = (1 - wy) * ((1 - wx) * px(iy, ix) + wx * px(iy, ix1)) +
                           wy * ((1 - wx) * px(iy1, ix) + wx * px(iy1, ix1));
          out[(static_cast<size_t>(c) * size_ + y) * size_ + x] =
              (static_cast<float>(v / 255.0) - mean[c]) / stdv[c];
        }
      }
    }
    *label = s.second;
  }

 private:
  int size_, resize_;
  std::vector<std::pair<std::string, int64_t>> samples_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& dir, int size, int resize) {
  if (size < 1 || resize < size) throw Error("imagefolder: need 1 <= size <= resize");
  return std::make_unique<ImageFolder>(dir, size, resize);
}

}  // namespace data
}  // namespace anybit
