// Whole-file reads; see file_read.h.
#include "anybit/data/file_read.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "anybit/data/dataset.h"

namespace anybit {
namespace data {

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace {

[[noreturn]] void throw_open_error(const std::string& what, const std::string& path, int err) {
  if (err == ENOENT) throw Error(what + ": " + path + ": no such file");
  if (is_directory(path)) throw Error(what + ": " + path + ": is a directory, expected a file");
  throw Error(what + ": " + path + ": cannot open: " + std::strerror(err));
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& what, const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw_open_error(what, path, errno);
  std::vector<uint8_t> out;
  struct stat st;
  if (::fstat(fileno(f.get()), &st) == 0 && S_ISREG(st.st_mode)) out.reserve(st.st_size);
  if (is_directory(path)) throw Error(what + ": " + path + ": is a directory, expected a file");
  uint8_t buf[1 << 16];
  for (;;) {
    const size_t got = std::fread(buf, 1, sizeof(buf), f.get());
    out.insert(out.end(), buf, buf + got);
    if (got < sizeof(buf)) break;
  }
  if (std::ferror(f.get())) throw Error(what + ": " + path + ": read error: " + std::strerror(errno));
  return out;
}

size_t gzip_read(gzFile_s* file, uint8_t* dst, size_t want, const std::string& what, const std::string& path,
                 size_t have) {
  const int got = gzread(file, dst, static_cast<unsigned>(want));
  int code = Z_OK;
  if (got < 0) throw Error(what + ": " + path + ": corrupt gzip data (" + gzerror(file, &code) + ")");
  if (got > 0) return static_cast<size_t>(got);
  // gzread returns the data it could inflate from a cut-off stream and only records the
  // problem (Z_BUF_ERROR, "unexpected end of file"): ask for it explicitly.
  const std::string msg = gzerror(file, &code);
  if (code == Z_BUF_ERROR)
    throw Error(what + ": " + path + ": truncated gzip file (" + msg + " after " + std::to_string(have) +
                " bytes of data)");
  if (code != Z_OK) throw Error(what + ": " + path + ": corrupt gzip data (" + msg + ")");
  return 0;
}

std::vector<uint8_t> read_file_maybe_gzip(const std::string& what, const std::string& path) {
  if (is_directory(path)) throw Error(what + ": " + path + ": is a directory, expected a file");
  errno = 0;
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), &gzclose);
  if (!f) throw_open_error(what, path, errno ? errno : ENOMEM);
  gzbuffer(f.get(), 1 << 18);
  std::vector<uint8_t> out(1 << 20);
  size_t have = 0;
  for (;;) {
    if (have == out.size()) out.resize(out.size() * 2);
    const size_t got = gzip_read(f.get(), out.data() + have, std::min<size_t>(out.size() - have, 1u << 30), what,
                                 path, have);
    if (got == 0) break;
    have += got;
  }
  out.resize(have);
  out.shrink_to_fit();
  return out;
}

}  // namespace data
}  // namespace anybit
