#include "kiln/types.hpp"

#include <algorithm>
#include <cctype>
#include <fmt/format.h>

namespace kiln {

std::string_view to_string(DType dtype) {
  switch (dtype) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

std::string_view to_string(Layout layout) { return layout == Layout::nchw ? "nchw" : "nhwc"; }

std::string_view to_string(Backend backend) { return backend == Backend::cpu ? "cpu" : "cuda"; }

std::int64_t size_of(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace

std::optional<DType> parse_dtype(std::string_view text) {
  std::string t = lower(text);
  if (t == "fp32" || t == "f32" || t == "float32" || t == "float") return DType::f32;
  if (t == "fp16" || t == "f16" || t == "float16" || t == "half") return DType::f16;
  if (t == "bf16" || t == "bfloat16") return DType::bf16;
  return std::nullopt;
}

std::optional<Layout> parse_layout(std::string_view text) {
  std::string t = lower(text);
  if (t == "nchw") return Layout::nchw;
  if (t == "nhwc") return Layout::nhwc;
  return std::nullopt;
}

std::string_view to_string(CpuConv conv) {
  switch (conv) {
    case CpuConv::automatic: return "auto";
    case CpuConv::kiln: return "kiln";
    case CpuConv::onednn: return "onednn";
  }
  return "unknown";
}

std::optional<CpuConv> parse_cpu_conv(std::string_view text) {
  std::string t = lower(text);
  if (t == "auto") return CpuConv::automatic;
  if (t == "kiln") return CpuConv::kiln;
  if (t == "onednn") return CpuConv::onednn;
  return std::nullopt;
}

bool has_onednn() { return KILN_HAVE_ONEDNN != 0; }

std::string Shape::str() const {
  if (rank == 3) return fmt::format("{}x{}x{}", c, h, w);
  return fmt::format("{}", c);
}

}  // namespace kiln
