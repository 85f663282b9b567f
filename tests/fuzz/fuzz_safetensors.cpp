// Fuzz harness: the safetensors reader, then matching what it read against a fixed model (as
// `kiln train --init` and `kiln eval --weights` do). The input is written to a file, since
// the reader works on files. Any input must be read consistently or refused with
// CheckpointError.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_util.hpp"
#include "kiln/kiln.hpp"
#include "tiny_model.hpp"

namespace {

void check(const kiln::NamedTensor& t) {
  std::int64_t elements = 1;
  for (std::int64_t d : t.dims) {
    if (d < 0) std::abort();
    elements *= d;  // the reader has checked that this fits
  }
  const std::size_t held = t.type == kiln::TensorType::f32 ? t.f32.size() : t.i64.size();
  if (held != static_cast<std::size_t>(elements)) std::abort();
  for (float v : t.f32)
    if (!std::isfinite(v)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::fuzz::Scratch scratch("safetensors");
  static const kiln::Graph graph = kiln::parse_spec(kiln::fuzz::kTinyModel, "tiny.yaml").graph;
  static const std::string path = scratch.file("input.safetensors");
  kiln::fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    kiln::SafetensorsFile file = kiln::read_safetensors(path);
    for (const kiln::NamedTensor& t : file.tensors) check(t);
    auto matched = kiln::match_weights(graph, file, path);
    if (matched.size() != graph.params().size()) std::abort();
    for (std::size_t i = 0; i < matched.size(); ++i)
      if (!matched[i] || matched[i]->f32.size() != static_cast<std::size_t>(graph.params()[i].elements)) std::abort();
  } catch (const kiln::CheckpointError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
