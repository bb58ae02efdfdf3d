// JPEG/PNG decoding; see image_decode.h.
//
// Both libraries report fatal errors through a callback that must not return, so each decode
// runs in a function that calls setjmp and holds only trivially destructible locals: the
// longjmp from the callback then skips no destructor, and the C++ objects (the pixel buffer)
// live in the caller, which turns the failure into an Error.
#include "anybit/data/image_decode.h"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>

#include <csetjmp>
#include <cstring>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {
namespace {

// ---- JPEG --------------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr mgr;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Corrupt-data warnings are tolerated (PIL tolerates them too), except a premature end of the
// data: libjpeg would pad the missing rows with grey, hiding a truncated file.
void jpeg_on_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error_exit(cinfo);
}

struct JpegDecode {
  jpeg_decompress_struct cinfo;
  JpegError err;
  bool created = false;
};

// Returns false after a libjpeg error (message in d->err.message).
bool jpeg_decode_c(JpegDecode* d, const uint8_t* data, size_t size, RgbImage* out, bool* too_large,
                   std::vector<uint8_t>* cmyk) {
  d->cinfo.err = jpeg_std_error(&d->err.mgr);
  d->err.mgr.error_exit = jpeg_on_error_exit;
  d->err.mgr.emit_message = jpeg_on_emit_message;
  if (setjmp(d->err.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  const bool is_cmyk = d->cinfo.jpeg_color_space == JCS_CMYK || d->cinfo.jpeg_color_space == JCS_YCCK;
  d->cinfo.out_color_space = is_cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&d->cinfo);
  const int64_t w = d->cinfo.output_width, h = d->cinfo.output_height;
  if (w * h > kMaxImagePixels) {
    *too_large = true;
    out->width = w;
    out->height = h;
    return false;
  }
  const int channels = d->cinfo.output_components;
  if (channels != (is_cmyk ? 4 : 3)) ERREXIT(&d->cinfo, JERR_CONVERSION_NOTIMPL);
  std::vector<uint8_t>& buf = is_cmyk ? *cmyk : out->pixels;
  buf.resize(static_cast<size_t>(w * h * channels));
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW row = buf.data() + static_cast<size_t>(d->cinfo.output_scanline) * w * channels;
    jpeg_read_scanlines(&d->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&d->cinfo);
  out->width = w;
  out->height = h;
  return true;
}

}  // namespace

RgbImage decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  JpegDecode d;
  RgbImage img;
  std::vector<uint8_t> cmyk;
  bool too_large = false;
  bool ok = false;
  try {
    ok = jpeg_decode_c(&d, data, size, &img, &too_large, &cmyk);
  } catch (...) {  // std::bad_alloc from the pixel buffer
    if (d.created) jpeg_destroy_decompress(&d.cinfo);
    throw;
  }
  const bool adobe = d.created && d.cinfo.saw_Adobe_marker;
  if (d.created) jpeg_destroy_decompress(&d.cinfo);
  if (too_large)
    throw Error(name + ": image of " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                " pixels is larger than the limit of " + std::to_string(kMaxImagePixels) + " pixels");
  if (!ok) throw Error(name + ": cannot decode JPEG: " + d.err.message);
  if (!cmyk.empty()) {
    // Adobe writes CMYK inverted (255 = no ink), and libjpeg passes the values through.
    img.pixels.resize(static_cast<size_t>(img.width * img.height * 3));
    for (size_t i = 0, n = img.pixels.size() / 3; i < n; ++i) {
      int c = cmyk[4 * i], m = cmyk[4 * i + 1], y = cmyk[4 * i + 2], k = cmyk[4 * i + 3];
      if (!adobe) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
      img.pixels[3 * i] = static_cast<uint8_t>((c * k + 127) / 255);
      img.pixels[3 * i + 1] = static_cast<uint8_t>((m * k + 127) / 255);
      img.pixels[3 * i + 2] = static_cast<uint8_t>((y * k + 127) / 255);
    }
  }
  return img;
}

// ---- PNG ---------------------------------------------------------------------------

namespace {

struct PngDecode {
  const uint8_t* data;
  size_t size, pos;
  char message[256];
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* d = static_cast<PngDecode*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof(d->message), "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* d = static_cast<PngDecode*>(png_get_io_ptr(png));
  if (n > d->size - d->pos) png_error(png, "truncated file");
  std::memcpy(out, d->data + d->pos, n);
  d->pos += n;
}

bool png_decode_c(png_structp png, png_infop info, RgbImage* out, bool* too_large) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  const int64_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  out->width = w;
  out->height = h;
  if (w * h > kMaxImagePixels) {
    *too_large = true;
    return false;
  }
  png_set_expand(png);  // palette -> RGB, gray < 8 bits -> 8 bits, tRNS -> alpha
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(w * 3)) png_error(png, "unexpected row size after conversion to RGB");
  out->pixels.resize(static_cast<size_t>(w * h * 3));
  for (int pass = 0; pass < passes; ++pass)
    for (int64_t y = 0; y < h; ++y) png_read_row(png, out->pixels.data() + y * w * 3, nullptr);
  png_read_end(png, nullptr);
  return true;
}

}  // namespace

RgbImage decode_png(const uint8_t* data, size_t size, const std::string& name) {
  PngDecode d{data, size, 0, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error(name + ": cannot decode PNG: out of memory");
  }
  png_set_read_fn(png, &d, png_read_from_memory);
  RgbImage img;
  bool too_large = false;
  bool ok = false;
  try {
    ok = png_decode_c(png, info, &img, &too_large);
  } catch (...) {  // std::bad_alloc from the pixel buffer
    png_destroy_read_struct(&png, &info, nullptr);
    throw;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (too_large)
    throw Error(name + ": image of " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                " pixels is larger than the limit of " + std::to_string(kMaxImagePixels) + " pixels");
  if (!ok) throw Error(name + ": cannot decode PNG: " + d.message);
  return img;
}

RgbImage decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
    return decode_jpeg(bytes.data(), bytes.size(), name);
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return decode_png(bytes.data(), bytes.size(), name);
  if (bytes.empty()) throw Error(name + ": empty file, expected a JPEG or PNG image");
  throw Error(name + ": not a JPEG or PNG image (unrecognized first bytes)");
}

}  // namespace data
}  // namespace anybit
