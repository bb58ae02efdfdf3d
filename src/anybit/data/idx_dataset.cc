// MNIST / Fashion-MNIST IDX reader. Both files are read whole once; get() is a table lookup.
//
// IDX layout: a big-endian u32 magic 0x00000803 (unsigned bytes, 3 dimensions) followed by the
// u32 sizes N, H, W and N*H*W pixel bytes; labels: magic 0x00000801, N, then N label bytes.
#include <array>
#include <cstdio>

#include "anybit/data/file_read.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803, kLabelsMagic = 0x00000801;

uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string hex32(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// The plain file if present, else the .gz one.
std::string find_idx_file(const std::string& scheme, const std::string& dir, const std::string& base) {
  const std::string plain = dir + "/" + base;
  if (path_exists(plain)) return plain;
  if (path_exists(plain + ".gz")) return plain + ".gz";
  throw Error(scheme + ": " + plain + ".gz: no such file (nor " + base + " uncompressed)");
}

class IdxDataset : public Dataset {
 public:
  IdxDataset(std::string scheme, std::vector<uint8_t> images, std::vector<uint8_t> labels, int64_t n, int64_t h,
             int64_t w)
      : scheme_(std::move(scheme)), images_(std::move(images)), labels_(std::move(labels)), n_(n), h_(h), w_(w) {
    for (int v = 0; v < 256; ++v) scaled_[v] = static_cast<float>(v) / 255.0f;
  }
  int64_t size() const override { return n_; }
  std::vector<int64_t> sample_shape() const override { return {1, h_, w_}; }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index(scheme_, index, n_);
    const int64_t per = h_ * w_;
    const uint8_t* p = images_.data() + 16 + index * per;
    for (int64_t k = 0; k < per; ++k) out[k] = scaled_[p[k]];
    *label = labels_[8 + index];
  }

 private:
  std::string scheme_;
  std::vector<uint8_t> images_, labels_;  // whole files, headers included
  int64_t n_, h_, w_;
  std::array<float, 256> scaled_;  // v / 255
};

}  // namespace

std::unique_ptr<Dataset> open_idx_dataset(const std::string& scheme, const std::string& dir, bool train) {
  if (!path_exists(dir)) throw Error(scheme + ": " + dir + ": no such directory");
  if (!is_directory(dir)) throw Error(scheme + ": " + dir + ": not a directory");
  const std::string prefix = train ? "train" : "t10k";
  const std::string ipath = find_idx_file(scheme, dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = find_idx_file(scheme, dir, prefix + "-labels-idx1-ubyte");
  std::vector<uint8_t> im = read_file_maybe_gzip(scheme, ipath);
  std::vector<uint8_t> lb = read_file_maybe_gzip(scheme, lpath);

  // the magic first: a wrong file is more often the wrong kind than a short one
  if (im.size() >= 4 && load_be32(im.data()) != kImagesMagic)
    throw Error(scheme + ": " + ipath + ": bad magic " + hex32(load_be32(im.data())) + ", expected " +
                hex32(kImagesMagic) + " (IDX unsigned-byte images)");
  if (im.size() < 16)
    throw Error(scheme + ": " + ipath + ": truncated: " + std::to_string(im.size()) +
                " bytes, shorter than the 16-byte IDX header");
  if (lb.size() >= 4 && load_be32(lb.data()) != kLabelsMagic)
    throw Error(scheme + ": " + lpath + ": bad magic " + hex32(load_be32(lb.data())) + ", expected " +
                hex32(kLabelsMagic) + " (IDX unsigned-byte labels)");
  if (lb.size() < 8)
    throw Error(scheme + ": " + lpath + ": truncated: " + std::to_string(lb.size()) +
                " bytes, shorter than the 8-byte IDX header");

  const int64_t n = load_be32(im.data() + 4), h = load_be32(im.data() + 8), w = load_be32(im.data() + 12);
  if (h < 1 || w < 1 || h > 16384 || w > 16384)
    throw Error(scheme + ": " + ipath + ": corrupt header: image size " + std::to_string(h) + "x" + std::to_string(w));
  const int64_t per = h * w, held = static_cast<int64_t>(im.size()) - 16;  // n * per < 2^60
  if (held != n * per)
    throw Error(scheme + ": " + ipath + ": " + (held < n * per ? "truncated" : "corrupt") + ": header says " +
                std::to_string(n) + " images of " + std::to_string(h) + "x" + std::to_string(w) + ", file holds " +
                (held % per ? std::to_string(held / per) + " and " + std::to_string(held % per) + " bytes"
                            : std::to_string(held / per)));
  const int64_t nl = load_be32(lb.data() + 4), lheld = static_cast<int64_t>(lb.size()) - 8;
  if (lheld != nl)
    throw Error(scheme + ": " + lpath + ": " + (lheld < nl ? "truncated" : "corrupt") + ": header says " +
                std::to_string(nl) + " labels, file holds " + std::to_string(lheld));
  if (nl != n)
    throw Error(scheme + ": " + lpath + ": " + std::to_string(nl) + " labels, but " + ipath + " holds " +
                std::to_string(n) + " images");
  for (int64_t i = 0; i < n; ++i)
    if (lb[8 + i] > 9)
      throw Error(scheme + ": " + lpath + ": label " + std::to_string(lb[8 + i]) + " of sample " + std::to_string(i) +
                  " is outside 0..9");
  return std::make_unique<IdxDataset>(scheme, std::move(im), std::move(lb), n, h, w);
}

}  // namespace data
}  // namespace anybit
