// Dataset readers; see dataset.h for the spec grammar. Files are read whole and
// validated before a single sample is served, so a truncated file fails at open.
#include "anybit/data/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace anybit {
namespace data {
namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

// An in-memory dataset of uint8 or float samples.
class MemoryDataset : public Dataset {
 public:
  std::vector<int64_t> shape;   // C, H, W
  std::vector<uint8_t> bytes;   // uint8 samples, or
  std::vector<float> floats;    // float samples
  std::vector<int64_t> labels;
  std::vector<float> mean, std;  // per channel, applied after /255 (empty: none)
  int64_t limit = -1;

  int64_t size() const override {
    const int64_t n = static_cast<int64_t>(labels.size());
    return limit >= 0 ? std::min(limit, n) : n;
  }
  std::vector<int64_t> sample_shape() const override { return shape; }
  void get(int64_t i, float* out, int64_t* label) const override {
    if (i < 0 || i >= size()) throw Error("sample index " + std::to_string(i) + " out of range");
    int64_t per = 1;
    for (int64_t s : shape) per *= s;
    const int64_t plane = shape.size() >= 1 ? per / shape[0] : per;
    if (!floats.empty()) {
      std::copy(floats.begin() + i * per, floats.begin() + (i + 1) * per, out);
    } else {
      const uint8_t* p = bytes.data() + i * per;
      for (int64_t k = 0; k < per; ++k) {
        float v = p[k] / 255.0f;
        if (!mean.empty()) {
          const int64_t c = k / plane;
          v = (v - mean[c]) / std[c];
        }
        out[k] = v;
      }
    }
    *label = labels[i];
  }
};

std::unique_ptr<Dataset> open_idx(const std::string& scheme, const std::string& dir,
                                  const std::string& split_name) {
  if (!is_dir(dir)) throw Error(scheme + ": " + dir + ": no such directory");
  const std::string prefix = split_name == "train" ? "train" : "t10k";
  auto find = [&](const std::string& base) {
    for (const std::string& p : {dir + "/" + base + ".gz", dir + "/" + base})
      if (exists(p)) return p;
    throw Error(scheme + ": " + dir + "/" + base + "[.gz]: file not found");
  };
  const std::string ip = find(prefix + "-images-idx3-ubyte");
  const std::string lp = find(prefix + "-labels-idx1-ubyte");
  std::vector<uint8_t> im = read_file_maybe_gz(ip), lb = read_file_maybe_gz(lp);
  if (im.size() < 16 || be32(im.data()) != 0x00000803)
    throw Error(scheme + ": " + ip + ": not an IDX image file (bad magic)");
  if (lb.size() < 8 || be32(lb.data()) != 0x00000801)
    throw Error(scheme + ": " + lp + ": not an IDX label file (bad magic)");
  const int64_t n = be32(im.data() + 4), h = be32(im.data() + 8), w = be32(im.data() + 12);
  const int64_t nl = be32(lb.data() + 4);
  if (h <= 0 || w <= 0 || h > 4096 || w > 4096) throw Error(scheme + ": " + ip + ": bad image size");
  if (static_cast<int64_t>(im.size()) - 16 < n * h * w)
    throw Error(scheme + ": " + ip + ": truncated: header says " + std::to_string(n) + " images of " +
                std::to_string(h) + "x" + std::to_string(w) + ", file holds " +
                std::to_string((im.size() - 16) / (h * w)));
  if (static_cast<int64_t>(lb.size()) - 8 < nl)
    throw Error(scheme + ": " + lp + ": truncated: header says " + std::to_string(nl) + " labels");
  if (nl != n)
    throw Error(scheme + ": " + lp + ": " + std::to_string(nl) + " labels for " + std::to_string(n) + " images");
  auto d = std::make_unique<MemoryDataset>();
  d->shape = {1, h, w};
  d->bytes.assign(im.begin() + 16, im.begin() + 16 + n * h * w);
  d->labels.assign(lb.begin() + 8, lb.begin() + 8 + n);
  return d;
}

std::unique_ptr<Dataset> open_cifar10(const std::string& dir, const std::string& split_name) {
  if (!is_dir(dir)) throw Error("cifar10: " + dir + ": no such directory");
  std::vector<std::string> files;
  if (split_name == "train") {
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  } else {
    files.push_back(dir + "/test_batch.bin");
  }
  auto d = std::make_unique<MemoryDataset>();
  d->shape = {3, 32, 32};
  d->mean = {0.4914f, 0.4822f, 0.4465f};
  d->std = {0.2470f, 0.2435f, 0.2616f};
  constexpr size_t kRecord = 1 + 3072;
  for (const auto& f : files) {
    if (!exists(f)) throw Error("cifar10: " + f + ": file not found");
    std::vector<uint8_t> b = read_file_maybe_gz(f);
    if (b.empty() || b.size() % kRecord != 0)
      throw Error("cifar10: " + f + ": truncated or corrupt: " + std::to_string(b.size()) +
                  " bytes is not a whole number of 3073-byte records");
    for (size_t r = 0; r < b.size(); r += kRecord) {
      if (b[r] > 9) throw Error("cifar10: " + f + ": label " + std::to_string(b[r]) + " outside 0..9");
      d->labels.push_back(b[r]);
      d->bytes.insert(d->bytes.end(), b.begin() + r + 1, b.begin() + r + kRecord);
    }
  }
  return d;
}

// ---- .npy ---------------------------------------------------------------------------

struct Npy {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

Npy read_npy(const std::string& path) {
  std::vector<uint8_t> b = read_file_maybe_gz(path);
  auto bad = [&](const std::string& why) { return Error("npy: " + path + ": " + why); };
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) throw bad("not a .npy file (bad magic)");
  const int major = b[6];
  size_t hlen, off;
  if (major == 1) {
    hlen = b[8] | (size_t{b[9]} << 8);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) throw bad("truncated header");
    hlen = b[8] | (size_t{b[9]} << 8) | (size_t{b[10]} << 16) | (size_t{b[11]} << 24);
    off = 12;
  } else {
    throw bad("unsupported .npy version " + std::to_string(major));
  }
  if (b.size() < off + hlen) throw bad("truncated header");
  const std::string h(reinterpret_cast<const char*>(b.data() + off), hlen);
  Npy n;
  auto field = [&](const std::string& key) {
    auto k = h.find("'" + key + "'");
    if (k == std::string::npos) throw bad("header has no '" + key + "'");
    auto colon = h.find(':', k);
    if (colon == std::string::npos) throw bad("malformed header");
    return colon + 1;
  };
  size_t p = field("descr");
  auto q1 = h.find('\'', p), q2 = q1 == std::string::npos ? q1 : h.find('\'', q1 + 1);
  if (q2 == std::string::npos) throw bad("malformed descr");
  n.descr = h.substr(q1 + 1, q2 - q1 - 1);
  p = field("fortran_order");
  if (h.compare(h.find_first_not_of(' ', p), 4, "True") == 0) throw bad("Fortran order is not supported");
  p = field("shape");
  auto l = h.find('(', p), r = h.find(')', p);
  if (l == std::string::npos || r == std::string::npos) throw bad("malformed shape");
  for (const auto& tok : split(h.substr(l + 1, r - l - 1), ',')) {
    std::string t;
    for (char c : tok)
      if (!std::isspace(static_cast<unsigned char>(c))) t += c;
    if (t.empty()) continue;
    for (char c : t)
      if (!std::isdigit(static_cast<unsigned char>(c))) throw bad("malformed shape");
    n.shape.push_back(std::stoll(t));
  }
  size_t item;
  if (n.descr == "<f4") item = 4;
  else if (n.descr == "|u1" || n.descr == "<u1") item = 1;
  else if (n.descr == "<i8") item = 8;
  else if (n.descr == "<i4") item = 4;
  else throw bad("unsupported dtype '" + n.descr + "' (expected float32, uint8, int32 or int64)");
  size_t count = 1;
  for (int64_t s : n.shape) count *= static_cast<size_t>(s);
  const size_t start = off + hlen;
  if (b.size() - start < count * item)
    throw bad("truncated: shape needs " + std::to_string(count * item) + " bytes of data, file holds " +
              std::to_string(b.size() - start));
  n.data.assign(b.begin() + start, b.begin() + start + count * item);
  return n;
}

std::unique_ptr<Dataset> open_npy(const std::string& xpath, const std::string& ypath) {
  Npy x = read_npy(xpath);
  if (x.shape.size() < 2) throw Error("npy: " + xpath + ": expected images [N, ...], got rank " + std::to_string(x.shape.size()));
  const int64_t n = x.shape[0];
  auto d = std::make_unique<MemoryDataset>();
  d->shape.assign(x.shape.begin() + 1, x.shape.end());
  if (x.descr == "<f4") {
    d->floats.resize(x.data.size() / 4);
    std::memcpy(d->floats.data(), x.data.data(), x.data.size());
  } else if (x.descr == "|u1" || x.descr == "<u1") {
    d->bytes = std::move(x.data);
  } else {
    throw Error("npy: " + xpath + ": images must be float32 or uint8, got '" + x.descr + "'");
  }
  if (ypath.empty()) {
    d->labels.assign(n, 0);
  } else {
    Npy y = read_npy(ypath);
    if (y.shape.size() != 1 || y.shape[0] != n)
      throw Error("npy: " + ypath + ": expected " + std::to_string(n) + " labels (shape [N])");
    d->labels.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      if (y.descr == "<i8") {
        int64_t v;
        std::memcpy(&v, y.data.data() + 8 * i, 8);
        d->labels[i] = v;
      } else if (y.descr == "<i4") {
        int32_t v;
        std::memcpy(&v, y.data.data() + 4 * i, 4);
        d->labels[i] = v;
      } else {
        throw Error("npy: " + ypath + ": labels must be int32 or int64, got '" + y.descr + "'");
      }
    }
  }
  return d;
}

}  // namespace

std::vector<uint8_t> read_file_maybe_gz(const std::string& path) {
  if (!exists(path)) throw Error(path + ": file not found");
  std::vector<uint8_t> out;
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  uint8_t buf[1 << 16];
  for (;;) {
    const int r = gzread(f, buf, sizeof(buf));
    if (r < 0) {
      int errnum = 0;
      std::string msg = gzerror(f, &errnum);
      gzclose(f);
      throw Error(path + ": corrupt or truncated (" + msg + ")");
    }
    if (r == 0) break;
    out.insert(out.end(), buf, buf + r);
  }
  // gzread stops quietly at a truncated gzip stream: check the stream ended cleanly
  int errnum = 0;
  gzerror(f, &errnum);
  const bool eof = gzeof(f);
  gzclose(f);
  if (errnum != Z_OK && errnum != Z_STREAM_END) throw Error(path + ": corrupt or truncated gzip data");
  if (!eof) throw Error(path + ": truncated");
  return out;
}

std::unique_ptr<Dataset> open_dataset(const std::string& spec) {
  std::vector<std::string> parts = split(spec, ':');
  int64_t limit = -1;
  std::vector<std::string> rest;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].rfind("limit=", 0) == 0) {
      try {
        limit = std::stoll(parts[i].substr(6));
      } catch (const std::exception&) {
        throw Error("data spec '" + spec + "': limit must be an integer");
      }
      if (limit < 1) throw Error("data spec '" + spec + "': limit must be positive");
    } else {
      rest.push_back(parts[i]);
    }
  }
  const std::string scheme = parts.empty() ? "" : parts[0];
  std::unique_ptr<Dataset> d;
  if (scheme == "fmnist" || scheme == "mnist") {
    std::string dir = rest.size() > 0 && !rest[0].empty() ? rest[0] : "/usr/share/datasets/fashion-mnist";
    std::string sp = rest.size() > 1 ? rest[1] : "test";
    if (scheme == "mnist" && (rest.empty() || rest[0].empty()))
      throw Error("data spec '" + spec + "': mnist needs a directory, e.g. mnist:/path/to/mnist:test");
    if (sp != "train" && sp != "test") throw Error("data spec '" + spec + "': split must be train or test");
    d = open_idx(scheme, dir, sp);
  } else if (scheme == "cifar10") {
    if (rest.empty()) throw Error("data spec '" + spec + "': cifar10 needs a directory");
    std::string sp = rest.size() > 1 ? rest[1] : "test";
    if (sp != "train" && sp != "test") throw Error("data spec '" + spec + "': split must be train or test");
    d = open_cifar10(rest[0], sp);
  } else if (scheme == "imagefolder") {
    if (rest.empty() || rest[0].empty()) throw Error("data spec '" + spec + "': imagefolder needs a directory");
    int size = 224, resize = 256;
    for (size_t i = 1; i < rest.size(); ++i) {
      auto eq = rest[i].find('=');
      const std::string k = rest[i].substr(0, eq);
      int v = 0;
      try {
        v = eq == std::string::npos ? -1 : std::stoi(rest[i].substr(eq + 1));
      } catch (const std::exception&) {
        v = -1;
      }
      if (k == "size" && v > 0) size = v;
      else if (k == "resize" && v > 0) resize = v;
      else throw Error("data spec '" + spec + "': unknown option '" + rest[i] + "' (expected size=N, resize=N)");
    }
    if (size > resize && resize == 256) resize = size;
    d = open_image_folder(rest[0], size, resize);
    if (limit > 0) throw Error("data spec '" + spec + "': limit is not supported for imagefolder yet");
    return d;
  } else if (scheme == "npy") {
    if (rest.empty() || rest[0].empty()) throw Error("data spec '" + spec + "': npy needs IMAGES.npy[:LABELS.npy]");
    d = open_npy(rest[0], rest.size() > 1 ? rest[1] : "");
  } else {
    throw Error("data spec '" + spec + "': unknown scheme '" + scheme +
                "' (expected fmnist, mnist, cifar10, imagefolder or npy)");
  }
  if (limit > 0) static_cast<MemoryDataset*>(d.get())->limit = limit;
  return d;
}

}  // namespace data
}  // namespace anybit
