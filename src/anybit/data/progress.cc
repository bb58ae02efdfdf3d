#include "anybit/data/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace anybit {
namespace data {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total) {
  on_ = enabled && total > 0 && isatty(2) && !std::getenv("ANYBIT_NO_PROGRESS");
  start_ = last_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done) {
  done_ = done;
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(100) && done_ < total_) return;
  last_ = now;
  draw(false);
}

void ProgressBar::draw(bool final) {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ ? static_cast<double>(done_) / total_ : 1.0;
  const int width = 30, fill = static_cast<int>(frac * width);
  std::string bar(fill, '#');
  bar += std::string(width - fill, '.');
  const double rate = el > 0 ? done_ / el : 0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0;
  std::fprintf(stderr, "\r%-10s [%s] %lld/%lld  %.0f/s  %s %.0fs  ", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), rate,
               final ? "took" : "eta", final ? el : eta);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!on_) return;
  draw(true);
  std::fprintf(stderr, "\n");
}

}  // namespace data
}  // namespace anybit
