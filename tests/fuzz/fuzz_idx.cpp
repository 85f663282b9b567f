// Fuzz harness: the MNIST-layout IDX reader, plain and gzip. The first byte says which of the
// four files the rest of the input is (bits 0-1: train images, train labels, test images,
// test labels) and how it is stored (bits 2-3: 0 plain; 1 as the .gz file's raw bytes, which
// fuzzes the gzip stream itself; 2 gzip-compressed here, which fuzzes the IDX content behind
// a valid gzip stream; 3 plain, beside a stale .gz the reader must not prefer). The other
// three files are valid: two training images and labels, one test image and label, so a
// fuzzed file that agrees with its partner loads. load_idx must return a consistent dataset or
// throw DataError.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_util.hpp"
#include "kiln/kiln.hpp"

namespace {

constexpr const char* kFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                  "t10k-labels-idx1-ubyte"};

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// The valid file `index` of kFiles: 2 training, 1 test image (and label).
std::string valid_file(int index) {
  const std::uint32_t count = index < 2 ? 2 : 1;
  if (index % 2 == 0) return be32(0x803) + be32(count) + be32(28) + be32(28) + std::string(count * 784, '\x7f');
  return be32(0x801) + be32(count) + std::string(count, '\x03');
}

std::string gzip(std::string_view bytes) {
  z_stream zs{};
  if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&zs, bytes.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void check(const kiln::Dataset& d) {
  if (d.classes != 10 || d.sample != kiln::Shape::chw(1, 28, 28)) std::abort();
  if (d.images.size() != d.labels.size() * 784) std::abort();
  for (std::uint8_t label : d.labels)
    if (label >= 10) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const kiln::fuzz::Scratch scratch("idx");
  if (size == 0) return 0;
  const int fuzzed = data[0] & 3, storage = (data[0] >> 2) & 3;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (int f = 0; f < 4; ++f) {
    const std::string plain = scratch.file(kFiles[f]), gz = plain + ".gz";
    std::filesystem::remove(plain);
    std::filesystem::remove(gz);
    if (f != fuzzed) {
      kiln::fuzz::write_file(plain, valid_file(f));
    } else if (storage == 0) {
      kiln::fuzz::write_file(plain, input);
    } else if (storage == 1) {
      kiln::fuzz::write_file(gz, input);
    } else if (storage == 2) {
      kiln::fuzz::write_file(gz, gzip(input));
    } else {
      kiln::fuzz::write_file(plain, input);
      kiln::fuzz::write_file(gz, "stale");
    }
  }
  try {
    kiln::Splits d = kiln::load_idx(scratch.dir().string(), kiln::DataFormat::mnist);
    check(d.train);
    check(d.test);
  } catch (const kiln::DataError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
