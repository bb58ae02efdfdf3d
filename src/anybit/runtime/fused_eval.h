// Fast CPU evaluation of a frozen model, quantized or float, on oneDNN (the library
// LibTorch's own CPU convolutions run on).
//
// The graph is lowered layer by layer: each conv, linear or pooling op becomes one oneDNN
// primitive, and the chain of element-wise ops that follows it runs as that primitive's
// post-ops: fake-quantizers (x^ = round(clamp(x * inv, lo, hi)) * s, the same float
// operations as anybit's fake-quant kernel), inference BatchNorm (x * alpha + beta, as
// ATen computes it), ReLU / clamp, and a residual add. An activation is then written to
// memory once per layer instead of once per op, which is where a fake-quantized model
// spends its time (a quantizer after every module makes five passes over each conv output).
// Activations are kept channels-last (NHWC) between layers.
//
// The activations of modern networks (SiLU, sigmoid, Hardswish, Hardsigmoid, GELU) are
// post-ops too. Every other op (layer_norm, softmax, matmul, permute, reshape, cat, a
// product of two tensors...) runs between the layers through its own ATen operator, called
// exactly as the interpreter calls it, on views of oneDNN's buffers; what follows it is
// copied into the layout the next layer reads when it is not already in it. summary()
// says how many ops ran where.
//
// The TorchScript interpreter stays the reference: a graph with control flow that computes
// tensors or an in-place op outside the lowered set is not compiled (compile() returns
// null and names the op), and evaluate() compares the first batch with the interpreter
// before trusting the compiled model.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>

namespace torch {
namespace jit {
struct Module;
}  // namespace jit
}  // namespace torch

namespace anybit {

class FusedModel {
 public:
  // `frozen` is a module after torch::jit::freeze (weights and quantizer parameters are
  // constants). Returns null, with the reason in *why_not, when an op is not lowered.
  // With int8, a conv (ungrouped) or linear layer whose input comes from a per-tensor
  // quantizer of at most 8 bits and whose weights lie on an integer grid of at most 8 bits
  // runs in int8:
  // s_x * s_w * sum(q_x * q_w), exact integer arithmetic, which the float conv of the
  // fake-quantized values approximates (the results differ by the float conv's rounding).
  static std::unique_ptr<FusedModel> compile(const torch::jit::Module& frozen,
                                             std::string* why_not, bool int8 = true);
  ~FusedModel();
  // Whether oneDNN's int8 kernels compute exact int32 sums on this CPU: with VNNI (AVX-512
  // VNNI or AVX-VNNI). Without it oneDNN adds pairs of u8 x s8 products in saturating 16-bit
  // lanes (vpmaddubsw), which overflows on 8-bit data; compile() then keeps every layer in
  // float, and summary() says why. ONEDNN_MAX_CPU_ISA lowers what oneDNN uses, and this.
  static bool int8_exact_here();
  // x: float32 [N, C, H, W] (or [N, F], [N, T, F]...); returns the model's output as a new tensor.
  // Throws anybit::Error when this input shape cannot run on the compiled layers.
  at::Tensor forward(const at::Tensor& x);
  int primitives() const;  // oneDNN layers per forward
  int conv_layers() const;
  int fused_ops() const;   // graph ops that run as post-ops of a layer
  int onednn_ops() const;  // tensor ops lowered to oneDNN (layers, post-ops, no-ops)
  std::map<std::string, int> aten_ops() const;  // tensor ops run through ATen, by name
  // "41 of 44 ops on oneDNN, 12 of 16 conv and linear layers in int8; through ATen:
  // aten::softmax x2, ..."
  // (the int8 count is that of the plan for x's shape, after forward ran on it)
  std::string summary(const at::Tensor& x) const;
  // int8 convs and linear layers of the plan for this input shape (after forward ran on it)
  int int8_layers(const at::Tensor& x) const;
  // Bytes of the buffers that hold the oneDNN layers' outputs in the plan for x's shape
  // (after forward ran on it). A value's buffer is reused once no later step reads the
  // value or anything that may share its memory (a view, a list holding it).
  int64_t buffer_bytes(const at::Tensor& x) const;

 private:
  struct Impl;
  explicit FusedModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anybit
