// Fuzz harness: the CIFAR-10 binary reader. The input is cut at each occurrence of kSeparator
// into up to seven parts: data_batch_1.bin ... data_batch_5.bin, test_batch.bin and
// batches.meta.txt, in that order; a file whose part is absent is not written, so missing files
// are fuzzed too. load_cifar10 must return a consistent dataset or throw DataError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_util.hpp"
#include "kiln/kiln.hpp"

namespace {

constexpr std::string_view kSeparator = "\n=kiln-file=\n";
constexpr const char* kFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                  "data_batch_5.bin", "test_batch.bin",   "batches.meta.txt"};

void check(const kiln::Dataset& d) {
  const auto pixels = static_cast<std::size_t>(kiln::cifar10_record_bytes - 1);
  if (d.images.size() != d.labels.size() * pixels) std::abort();
  for (std::uint8_t label : d.labels)
    if (label >= 10) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::fuzz::Scratch scratch("cifar10");
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (const char* f : kFiles) std::filesystem::remove(scratch.file(f));
  for (const char* f : kFiles) {
    if (rest.empty()) break;
    std::size_t cut = rest.find(kSeparator);
    kiln::fuzz::write_file(scratch.file(f), rest.substr(0, cut));
    rest = cut == std::string_view::npos ? std::string_view{} : rest.substr(cut + kSeparator.size());
  }
  try {
    kiln::Cifar10 c = kiln::load_cifar10(scratch.dir().string());
    check(c.train);
    check(c.test);
  } catch (const kiln::DataError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
