// A terminal progress bar for long loops (calibration, evaluation):
//
//   calibrate [##########..........]  512/1024   1843/s  eta 0:00:01
//
// drawn on stderr with '\r', redrawn at most 10 times a second, and off when stderr is not a
// terminal, when the environment sets ANYBIT_NO_PROGRESS, or when the caller passes
// enabled = false. finish() (or the destructor) draws the final state and ends the line.
//
//   ProgressBar bar("calibrate", total);
//   for (...) bar.update(done);
//   bar.finish();
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
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(int64_t done);  // `done` items of `total` are complete
  void finish();
  bool enabled() const { return on_; }

 private:
  void draw(bool final);
  std::string label_;
  int64_t total_, done_ = 0;
  bool on_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// One line of the bar (without '\r'): the label, a 20-cell bar, done/total, the rate and the
// remaining time, or the time taken when `final`. Exposed for the tests.
std::string format_progress_line(const std::string& label, int64_t done, int64_t total, double elapsed_s,
                                 bool final);

// "m:ss", or "h:mm:ss" from an hour on.
std::string format_duration(double seconds);

}  // namespace data
}  // namespace anybit
