// For tests: a fresh empty directory under the system temp dir, removed by the destructor.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace anybit {
namespace testing {

class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ = (std::filesystem::temp_directory_path() /
             ("anybit_" + tag + "_" + std::to_string(rd()) + std::to_string(rd())))
                .string();
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace testing
}  // namespace anybit
