// Fuzz harness: the CIFAR-100 binary reader. The first byte picks the label (even: fine, odd:
// coarse); the rest is cut at each occurrence of kSeparator into up to four parts: train.bin,
// test.bin, fine_label_names.txt and coarse_label_names.txt, in that order; a file whose part
// is absent is not written, so missing files are fuzzed too. load_cifar100 must return a
// consistent dataset or throw DataError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_util.hpp"
#include "kiln/kiln.hpp"

namespace {

constexpr std::string_view kSeparator = "\n=kiln-file=\n";
constexpr const char* kFiles[] = {"train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"};

void check(const kiln::Dataset& d, int classes) {
  if (d.classes != classes || d.sample != kiln::Shape::chw(3, 32, 32)) std::abort();
  if (d.images.size() != d.labels.size() * 3072) std::abort();
  for (std::uint8_t label : d.labels)
    if (label >= classes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::fuzz::Scratch scratch("cifar100");
  if (size == 0) return 0;
  const bool coarse = (data[0] & 1) != 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (const char* f : kFiles) std::filesystem::remove(scratch.file(f));
  for (const char* f : kFiles) {
    if (rest.empty()) break;
    std::size_t cut = rest.find(kSeparator);
    kiln::fuzz::write_file(scratch.file(f), rest.substr(0, cut));
    rest = cut == std::string_view::npos ? std::string_view{} : rest.substr(cut + kSeparator.size());
  }
  try {
    kiln::Splits c = kiln::load_cifar100(scratch.dir().string(), coarse ? kiln::Cifar100Label::coarse : kiln::Cifar100Label::fine);
    check(c.train, coarse ? 20 : 100);
    check(c.test, coarse ? 20 : 100);
  } catch (const kiln::DataError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
