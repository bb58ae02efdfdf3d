// MNIST / Fashion-MNIST IDX reader. The labels are read whole; the images too, except a
// gzip image file whose trailer (ISIZE, the uncompressed size mod 2^32) agrees with its
// header: that one is inflated on demand, up to the furthest sample asked for, so
// calibrating on the first 1024 of 60000 training images does not inflate 47 MB.
// get() is a table lookup.
//
// IDX layout: a big-endian u32 magic 0x00000803 (unsigned bytes, 3 dimensions) followed by the
// u32 sizes N, H, W and N*H*W pixel bytes; labels: magic 0x00000801, N, then N label bytes.
#include <zlib.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

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

// The bytes of a gzip file whose uncompressed size is known, inflated on demand.
class LazyGzipBytes {
 public:
  // Null when `path` is not gzip or its trailer does not give 16 + n * h * w bytes for
  // the IDX header it starts with (then the whole-file read reports what is wrong).
  static std::unique_ptr<LazyGzipBytes> open(const std::string& what, const std::string& path) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    uint8_t magic[2], trailer[4];
    if (!f || std::fread(magic, 1, 2, f.get()) != 2 || magic[0] != 0x1f || magic[1] != 0x8b) return nullptr;
    if (std::fseek(f.get(), -4, SEEK_END) != 0 || std::fread(trailer, 1, 4, f.get()) != 4) return nullptr;
    const uint32_t isize = uint32_t{trailer[0]} | (uint32_t{trailer[1]} << 8) | (uint32_t{trailer[2]} << 16) |
                           (uint32_t{trailer[3]} << 24);
    auto lazy = std::unique_ptr<LazyGzipBytes>(new LazyGzipBytes(what, path));
    if (!lazy->file_) return nullptr;
    uint8_t head[16];
    if (gzread(lazy->file_.get(), head, 16) != 16 || load_be32(head) != kImagesMagic) return nullptr;
    const uint64_t n = load_be32(head + 4), h = load_be32(head + 8), w = load_be32(head + 12);
    const uint64_t size = 16 + n * h * w;
    if (h < 1 || w < 1 || h > 16384 || w > 16384 || static_cast<uint32_t>(size) != isize) return nullptr;
    lazy->size_ = size;
    lazy->data_.reset(new uint8_t[size]);  // not value-initialized: pages are touched as inflated
    std::memcpy(lazy->data_.get(), head, 16);
    lazy->have_ = 16;
    return lazy;
  }
  const uint8_t* header() const { return data_.get(); }
  uint64_t size() const { return size_; }
  // Bytes [0, end) are inflated when this returns.
  const uint8_t* upto(uint64_t end) const {
    if (have_.load(std::memory_order_acquire) >= end) return data_.get();
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t have = have_.load(std::memory_order_relaxed);
    const uint64_t target = std::min(size_, std::max(end, have + (uint64_t{1} << 20)));  // read ahead 1 MB
    while (have < target) {
      const size_t got = gzip_read(file_.get(), data_.get() + have, std::min<uint64_t>(target - have, 1u << 30),
                                   what_, path_, have);
      if (got == 0)  // the stream ended cleanly before the size its trailer gives
        throw Error(what_ + ": " + path_ + ": truncated gzip file (the data ends after " + std::to_string(have) +
                    " of " + std::to_string(size_) + " bytes)");
      have += got;
      have_.store(have, std::memory_order_release);
    }
    return data_.get();
  }

 private:
  LazyGzipBytes(std::string what, std::string path)
      : what_(std::move(what)), path_(std::move(path)), file_(gzopen(path_.c_str(), "rb"), &gzclose) {
    if (file_) gzbuffer(file_.get(), 1 << 18);
  }
  std::string what_, path_;
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file_;
  std::unique_ptr<uint8_t[]> data_;
  uint64_t size_ = 0;
  mutable std::atomic<uint64_t> have_{0};
  mutable std::mutex mu_;
};

class IdxDataset : public Dataset {
 public:
  IdxDataset(std::string scheme, std::vector<uint8_t> images, std::unique_ptr<LazyGzipBytes> lazy,
             std::vector<uint8_t> labels, int64_t n, int64_t h, int64_t w)
      : scheme_(std::move(scheme)),
        images_(std::move(images)),
        lazy_(std::move(lazy)),
        labels_(std::move(labels)),
        n_(n),
        h_(h),
        w_(w) {
    for (int v = 0; v < 256; ++v) scaled_[v] = static_cast<float>(v) / 255.0f;
  }
  int64_t size() const override { return n_; }
  std::vector<int64_t> sample_shape() const override { return {1, h_, w_}; }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index(scheme_, index, n_);
    const int64_t per = h_ * w_;
    const uint8_t* base = lazy_ ? lazy_->upto(16 + (index + 1) * per) : images_.data();
    const uint8_t* p = base + 16 + index * per;
    for (int64_t k = 0; k < per; ++k) out[k] = scaled_[p[k]];
    *label = labels_[8 + index];
  }

 private:
  std::string scheme_;
  std::vector<uint8_t> images_;            // the whole file, header included (unless lazy_)
  std::unique_ptr<LazyGzipBytes> lazy_;
  std::vector<uint8_t> labels_;            // the whole file, header included
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
  std::unique_ptr<LazyGzipBytes> lazy = LazyGzipBytes::open(scheme, ipath);
  std::vector<uint8_t> im = lazy ? std::vector<uint8_t>(lazy->header(), lazy->header() + 16)
                                 : read_file_maybe_gzip(scheme, ipath);
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
  const int64_t per = h * w;  // n * per < 2^60
  const int64_t held = lazy ? static_cast<int64_t>(lazy->size()) - 16 : static_cast<int64_t>(im.size()) - 16;
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
  if (lazy) im.clear();
  return std::make_unique<IdxDataset>(scheme, std::move(im), std::move(lazy), std::move(lb), n, h, w);
}

}  // namespace data
}  // namespace anybit
