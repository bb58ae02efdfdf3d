// The progress bar's text, and its silence when stderr is not a terminal.
#include "anybit/data/progress.h"

#include <gtest/gtest.h>

namespace anybit {
namespace data {
namespace {

TEST(ProgressLine, ShowsTheBarCountRateAndEta) {
  EXPECT_EQ(format_progress_line("calibrate", 50, 100, 2.0, false),
            "calibrate [##########..........] 50/100  25/s  eta 0:02");
}

TEST(ProgressLine, FinalLineSaysHowLongItTook) {
  EXPECT_EQ(format_progress_line("evaluate", 10, 10, 75.4, true), "evaluate [####################] 10/10  0/s  took 1:15");
}

TEST(ProgressLine, UnknownRateGivesAnUnknownEta) {
  EXPECT_EQ(format_progress_line("x", 0, 10, 0.0, false), "x [....................] 0/10  0/s  eta ?");
}

TEST(ProgressLine, DurationsFromAnHourOnShowHours) {
  EXPECT_EQ(format_duration(59.6), "1:00");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(-1), "0:00");
}

TEST(ProgressBar, DrawsNothingWhenStderrIsNotATerminal) {
  ::testing::internal::CaptureStderr();
  {
    ProgressBar bar("calibrate", 100);
    EXPECT_FALSE(bar.enabled());
    for (int i = 1; i <= 100; ++i) bar.update(i);
    bar.finish();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
}  // namespace data
}  // namespace anybit
