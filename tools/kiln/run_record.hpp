#pragma once

// run.yaml: what a run is, written into its folder when it starts, read back by
// `kiln train --resume DIR` so that the folder alone resumes it.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/kiln.hpp"

namespace kiln::cli {

struct RunRecord {
  std::string version, commit, build;  // kiln's (commit: the one its build was configured from)
  std::vector<std::string> command;    // the command line that started the run
  std::string cwd;                     // where it ran
  std::string model_file, model_name;  // model_file absolute
  std::string data_dir;                // absolute; empty: the synthetic set made in memory
  std::string data_description;
  std::string data_fingerprint;        // "file size hash; ..." of the data files (data_fingerprint())
  std::string data_format = "cifar10"; // format_name() (a record without one is from when CIFAR-10 was the only format)
  std::string data_label;              // CIFAR-100: "fine" or "coarse"; empty otherwise
  std::int64_t val_count = 0;          // --val-split: images held out (hold_out), 0: none
  std::uint64_t val_seed = 0;          // ... with this seed
  std::vector<std::string> class_names;  // the data's, in label order (empty when it names none)
  bool resize = true;                  // image folders: images of another size were resized (--no-resize: refused)
  std::string backend, layout, dtype;
  std::string cpu_conv = "auto";       // a record from before --cpu-conv has none: auto
  int threads = 0;
  TrainConfig train;                   // the recipe with every flag applied (the fields below), mean and std included
  std::optional<std::int64_t> steps;   // --steps of the command that started the run
  std::string init;                    // --init, absolute; empty: none
};

// The YAML text of a record (JSON-quoted strings: YAML reads them).
std::string to_yaml(const RunRecord& r);

// Reads `path`; throws Error (exit 1) naming the file and what is wrong with it.
RunRecord read_run_record(const std::string& path);

// `path` as the first argument of eval and predict: a run folder's record, or nothing for a
// model spec. A directory without run.yaml is a usage error saying what to give.
std::optional<RunRecord> open_run_folder(const std::string& path, const char* command);

// Writes DIR/run.yaml atomically (a temporary file renamed over it).
void write_run_record(const std::string& dir, const RunRecord& r);

// Size and a 64-bit FNV-1a hash of every regular file below `dir`: each file of `dir` itself
// by name, the files of each subfolder (an image folder's classes) together: what tells a
// resumed run that its data changed. Reads every byte once (about 0.2 s for CIFAR-10).
std::string data_fingerprint(const std::string& dir);

}  // namespace kiln::cli
