#pragma once

// What the dataset readers and writers share: reading a whole file with kiln's errors,
// optional class-name files, atomic writes, and the writers of the formats other than
// CIFAR-10 (write_data() dispatches to them).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/data.hpp"

namespace kiln::detail {

// The bytes of `path`. `what` names what the file should be ("a CIFAR-10 batch file"), for
// the message when `path` is a directory. Refuses FIFOs and devices before opening them.
std::vector<std::uint8_t> read_file(const std::string& path, const char* what);

// Whether `path` exists. A search permission denied on the way is not "missing": it says so.
bool present(const std::filesystem::path& path);

// Throws DataError unless `dir` is an existing directory. `format` names the set ("CIFAR-10"),
// `holds` the files it should hold, `hint` how to get them.
void require_directory(const std::string& dir, const char* format, const char* holds, const char* hint);

// Non-empty lines, trailing spaces and CRs removed; empty when the file is absent or unreadable.
std::vector<std::string> read_class_names(const std::string& path);

// Creates `dir` (and its parents) or throws DataError naming it.
void make_directory(const std::string& dir);

// Writes `bytes` to `path` through a temporary file in the same directory, fsynced and
// renamed over the target, so a crash leaves either the old file or the new one.
void write_atomically(const std::filesystem::path& path, const std::string& bytes);

// Makes the renames into `dir` durable.
void sync_directory(const std::string& dir);

// One name a line, as batches.meta.txt and CIFAR-100's label-name files hold them.
std::string name_lines(const std::vector<std::string>& names);

// The writers behind write_data(): each refuses, before writing anything, what its reader
// would reject.
void write_cifar100(const Splits& data, const std::string& dir);
void write_idx(const Splits& data, const std::string& dir);

// CIFAR-100's superclass (0..19) of each fine class (0..99), as the official files pair them.
extern const std::uint8_t kCifar100Coarse[100];
// The official names of CIFAR-100's 20 superclasses (coarse_label_names.txt).
std::vector<std::string> cifar100_coarse_names();
// The class names of the synthetic CIFAR-100 set: "disc-red" .. (fine), "disc-red-to-green" .. (coarse).
std::vector<std::string> synthetic_cifar100_names(Cifar100Label label);
// "0" .. "9" for MNIST; "T-shirt/top" .. "Ankle boot" for Fashion-MNIST.
std::vector<std::string> idx_class_names(DataFormat format);

// Whether `path` has an image folder's extension: .png, .jpg or .jpeg, in any case.
bool image_extension(const std::filesystem::path& path);

// How many images load_image_folder() has decoded in this process (not taken from its
// cache): what tests of the cache count.
std::int64_t folder_decodes();

}  // namespace kiln::detail
