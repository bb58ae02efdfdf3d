// A terminal progress bar with count, rate and ETA on stderr, redrawn at most 10 times a
// second; silent when disabled, when stderr is not a terminal, or when the environment
// sets ANYBIT_NO_PROGRESS.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace anybit {
namespace data {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  ~ProgressBar();
  void update(int64_t done);
  void finish();

 private:
  void draw(bool final);
  std::string label_;
  int64_t total_, done_ = 0;
  bool on_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace data
}  // namespace anybit
