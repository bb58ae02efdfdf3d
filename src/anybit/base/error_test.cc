// error_summary: the line of a long message that says what went wrong.
#include "anybit/base/error.h"

#include <gtest/gtest.h>

namespace anybit {
namespace {

TEST(ErrorSummary, FirstLineOfAPlainMessage) {
  EXPECT_EQ(error_summary("expected 3 inputs, but got only 2\nDeclaration: forward(...)"),
            "expected 3 inputs, but got only 2");
  EXPECT_EQ(error_summary("one line"), "one line");
  EXPECT_EQ(error_summary(""), "");
}

TEST(ErrorSummary, LastLineOfTheTorchScriptInterpretersReport) {
  const std::string what =
      "The following operation failed in the TorchScript interpreter.\n"
      "Traceback of TorchScript (most recent call last):\n"
      "  File \"code/__torch__/torch/nn/modules/activation.py\", line 61, in forward\n"
      "    _3 = torch._native_multi_head_attention(query, key, value)\n"
      "RuntimeError: MultiheadAttention does not support NestedTensor outside of its fast path\n\n";
  EXPECT_EQ(error_summary(what),
            "RuntimeError: MultiheadAttention does not support NestedTensor outside of its fast path");
  // nothing after the first line: that line
  EXPECT_EQ(error_summary("The following operation failed in the TorchScript interpreter."),
            "The following operation failed in the TorchScript interpreter.");
}

}  // namespace
}  // namespace anybit
