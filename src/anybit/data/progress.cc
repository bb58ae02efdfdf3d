// Terminal progress bar; see progress.h.
#include "anybit/data/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace anybit {
namespace data {

std::string format_duration(double seconds) {
  const long long s = std::isfinite(seconds) && seconds > 0 ? std::llround(seconds) : 0;
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

std::string format_progress_line(const std::string& label, int64_t done, int64_t total, double elapsed_s,
                                 bool final) {
  constexpr int kCells = 20;
  const double frac = total > 0 ? std::min(1.0, std::max(0.0, static_cast<double>(done) / total)) : 1.0;
  const int filled = static_cast<int>(frac * kCells);
  const double rate = elapsed_s > 0 ? done / elapsed_s : 0;
  std::string time = final ? "took " + format_duration(elapsed_s)
                           : "eta " + (rate > 0 ? format_duration((total - done) / rate) : std::string("?"));
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s [%s%s] %lld/%lld  %.0f/s  %s", label.c_str(), std::string(filled, '#').c_str(),
                std::string(kCells - filled, '.').c_str(), static_cast<long long>(done),
                static_cast<long long>(total), rate, time.c_str());
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total) {
  on_ = enabled && total > 0 && isatty(STDERR_FILENO) && !std::getenv("ANYBIT_NO_PROGRESS");
  start_ = std::chrono::steady_clock::now();
  last_draw_ = start_ - std::chrono::seconds(1);  // the first update draws
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done) {
  done_ = done;
  if (!on_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;  // a terminal redraw is slow
  last_draw_ = now;
  draw(false);
}

void ProgressBar::draw(bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  // trailing blanks erase the tail of a longer previous line
  std::fprintf(stderr, "\r%s    ", format_progress_line(label_, done_, total_, elapsed, final).c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!on_) return;
  draw(true);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace data
}  // namespace anybit
