// Image folders: one folder per class of PNG/JPEG files, in DIR/train/<class>/ and
// DIR/test/<class>/, or DIR/<class>/ alone. Every image is decoded and brought to the model's
// input once; the results are cached outside the data folder and reused while a file's
// size and modification time stay the same.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>

#include "data/data_files.hpp"
#include "kiln/data.hpp"
#include "kiln/error.hpp"
#include "math/rng.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace detail {

bool image_extension(const std::filesystem::path& path) {
  std::string e = path.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

std::atomic<std::int64_t> g_folder_decodes{0};
std::int64_t folder_decodes() { return g_folder_decodes.load(); }

}  // namespace detail

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'I', 'M', 'G', '1'};
constexpr std::size_t kMaxClasses = 256;  // labels are bytes

std::vector<std::string> sorted_subdirectories(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

struct Entry {
  std::string relative;  // to the data directory: "train/cat/001.png"
  std::uint8_t label = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};

struct Stat {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};

Stat stat_of(const fs::path& p) {
  struct stat st{};
  if (::stat(p.c_str(), &st) != 0) return {};
  return {static_cast<std::uint64_t>(st.st_size), static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// The class folders' image files in sorted order; other files are counted in `skipped`.
std::vector<Entry> list_split(const fs::path& root, const fs::path& split, const std::vector<std::string>& classes,
                              std::int64_t& skipped) {
  std::vector<Entry> entries;
  for (std::size_t k = 0; k < classes.size(); ++k) {
    const fs::path folder = root / split / classes[k];
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) continue;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file(ec) && detail::image_extension(it->path())) files.push_back(it->path());
      else ++skipped;
    }
    if (ec) throw DataError(folder.string(), -1, fmt::format("{}: cannot list it: {}", folder.string(), ec.message()));
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
      const Stat st = stat_of(f);
      entries.push_back({fs::relative(f, root).string(), static_cast<std::uint8_t>(k), st.size, st.mtime_ns});
    }
  }
  return entries;
}

fs::path cache_root(const LoadOptions& o) {
  if (!o.cache_dir.empty()) return o.cache_dir;
  if (const char* d = std::getenv("KILN_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return fs::path(d) / "kiln";
  if (const char* d = std::getenv("HOME"); d && *d) return fs::path(d) / ".cache" / "kiln";
  return {};
}

// The cache file of one (data directory, sample shape, resize) triple.
fs::path cache_file(const fs::path& root_dir, const fs::path& data_dir, const LoadOptions& o) {
  const std::string key = fmt::format("{}|{}x{}x{}|{}", data_dir.string(), o.sample.c, o.sample.h, o.sample.w, o.resize);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ull;
  return root_dir / fmt::format("folder-{:016x}.cache", math::mix64(h));
}

struct Cached {
  std::uint64_t size;
  std::int64_t mtime_ns;
  std::vector<std::uint8_t> pixels;
};

// Reads a cache file; anything malformed yields an empty cache (it is rebuilt), never an error.
std::map<std::string, Cached> read_cache(const fs::path& file, std::int64_t bytes_per_image) {
  std::map<std::string, Cached> cache;
  std::ifstream in(file, std::ios::binary);
  if (!in) return cache;
  char magic[8];
  std::uint64_t count = 0;
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0 || !in.read(reinterpret_cast<char*>(&count), 8)) return {};
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint32_t length = 0;
    Cached c{};
    if (!in.read(reinterpret_cast<char*>(&length), 4) || length > 4096) return {};
    std::string path(length, '\0');
    c.pixels.resize(static_cast<std::size_t>(bytes_per_image));
    if (!in.read(path.data(), length) || !in.read(reinterpret_cast<char*>(&c.size), 8) ||
        !in.read(reinterpret_cast<char*>(&c.mtime_ns), 8) ||
        !in.read(reinterpret_cast<char*>(c.pixels.data()), static_cast<std::streamsize>(c.pixels.size())))
      return {};
    cache.emplace(std::move(path), std::move(c));
  }
  return cache;
}

std::string cache_bytes(const std::vector<Entry>& entries, const std::vector<std::vector<std::uint8_t>>& pixels) {
  std::string out(kMagic, 8);
  const std::uint64_t count = entries.size();
  out.append(reinterpret_cast<const char*>(&count), 8);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto length = static_cast<std::uint32_t>(entries[i].relative.size());
    out.append(reinterpret_cast<const char*>(&length), 4);
    out += entries[i].relative;
    out.append(reinterpret_cast<const char*>(&entries[i].size), 8);
    out.append(reinterpret_cast<const char*>(&entries[i].mtime_ns), 8);
    out.append(reinterpret_cast<const char*>(pixels[i].data()), pixels[i].size());
  }
  return out;
}

Dataset empty_dataset(const std::string& source, const Shape& sample, const std::vector<std::string>& classes) {
  Dataset d;
  d.source = source;
  d.sample = sample;
  d.classes = static_cast<int>(classes.size());
  d.class_names = classes;
  return d;
}

}  // namespace

Splits load_image_folder(const std::string& dir, const LoadOptions& options) {
  detail::require_directory(dir, "image folder", "one folder of PNG/JPEG files per class",
                            "arrange it as DIR/train/<class>/ and DIR/test/<class>/, or DIR/<class>/");
  const fs::path root(dir);
  std::error_code ec;
  const bool two_level = fs::is_directory(root / "train", ec) && !sorted_subdirectories(root / "train").empty();
  const fs::path train_dir = two_level ? fs::path("train") : fs::path();
  const std::vector<std::string> classes = sorted_subdirectories(root / train_dir);
  if (classes.empty())
    throw DataError(dir, -1, fmt::format("{}: no class folders (expected {}/<class>/ with PNG or JPEG files)", dir,
                                         (root / train_dir).lexically_normal().string()));
  if (classes.size() > kMaxClasses)
    throw DataError(dir, -1, fmt::format("{}: {} class folders; kiln's labels are bytes, so at most {} classes", dir,
                                         classes.size(), kMaxClasses));
  if (two_level)
    for (const std::string& c : sorted_subdirectories(root / "test"))
      if (!std::binary_search(classes.begin(), classes.end(), c))
        throw DataError((root / "test" / c).string(), -1,
                        fmt::format("{}: class '{}' of the test split has no folder in {}/train (the classes are the "
                                    "training folders: {})",
                                    (root / "test" / c).string(), c, dir, fmt::join(classes, ", ")));
  std::int64_t skipped = 0;
  std::vector<Entry> train = list_split(root, train_dir, classes, skipped);
  std::vector<Entry> test = two_level ? list_split(root, "test", classes, skipped) : std::vector<Entry>{};
  if (train.empty())
    throw DataError(dir, -1, fmt::format("{}: the class folders hold no PNG or JPEG files", dir));
  if (skipped > 0)
    std::fprintf(stderr, "kiln: skipped %lld files without an image extension (.png, .jpg, .jpeg) in %s\n",
                 static_cast<long long>(skipped), dir.c_str());

  // Cached images are reused while their file's size and modification time are unchanged.
  const std::int64_t bytes = options.sample.elements();
  const fs::path data_dir = fs::weakly_canonical(fs::absolute(root), ec);
  const fs::path cache_dir = options.no_cache ? fs::path() : cache_root(options);
  const fs::path file = cache_dir.empty() ? fs::path() : cache_file(cache_dir, data_dir, options);
  std::map<std::string, Cached> cache = file.empty() ? std::map<std::string, Cached>{} : read_cache(file, bytes);

  std::vector<Entry> all = train;
  all.insert(all.end(), test.begin(), test.end());
  std::vector<std::vector<std::uint8_t>> pixels(all.size());
  std::vector<std::exception_ptr> failed(all.size());
  std::int64_t reused = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    auto it = cache.find(all[i].relative);
    if (it != cache.end() && it->second.size == all[i].size && it->second.mtime_ns == all[i].mtime_ns) {
      pixels[i] = std::move(it->second.pixels);
      ++reused;
    }
  }
#pragma omp parallel for schedule(dynamic, 16)
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(all.size()); ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (!pixels[k].empty()) continue;
    try {
      const std::string path = (root / all[k].relative).string();
      pixels[k] = fit_image(decode_image(path), options.sample, options.resize, path).pixels;
      ++detail::g_folder_decodes;
    } catch (...) {
      failed[k] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : failed)  // the first bad file in sorted order
    if (e) std::rethrow_exception(e);
  if (!file.empty() && (reused != static_cast<std::int64_t>(all.size()) || cache.size() != all.size())) {
    try {
      fs::create_directories(cache_dir);
      detail::write_atomically(file, cache_bytes(all, pixels));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: cannot write the image cache in %s (%s); going on without it\n", cache_dir.c_str(), e.what());
    }
  }

  Splits data;
  data.format = DataFormat::folder;
  data.train = empty_dataset(dir, options.sample, classes);
  data.test = empty_dataset(dir, options.sample, classes);
  for (std::size_t i = 0; i < all.size(); ++i) {
    Dataset& d = i < train.size() ? data.train : data.test;
    d.images.insert(d.images.end(), pixels[i].begin(), pixels[i].end());
    d.labels.push_back(all[i].label);
  }
  return data;
}

}  // namespace kiln
