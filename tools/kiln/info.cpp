// kiln info: what kiln was built with and what it finds at run time: devices, compute
// capability, memory, driver, runtime, cuDNN and cuBLAS versions.
#include <fmt/format.h>

#include "cli.hpp"

namespace kiln::cli {

namespace {

int run_info(bool json) {
  auto devices = cuda_devices();
  RuntimeInfo rt = cuda_runtime_info();
  if (json) {
    nlohmann::json j{{"version", KILN_VERSION_STRING}, {"built_with", build_description()},
                     {"driver", rt.driver},           {"runtime", rt.runtime},
                     {"cudnn", rt.cudnn},             {"cublas", rt.cublas}};
    j["devices"] = nlohmann::json::array();
    for (const auto& d : devices)
      j["devices"].push_back({{"index", d.index}, {"name", d.name}, {"compute_capability", fmt::format("{}.{}", d.major, d.minor)},
                              {"memory_bytes", d.memory_bytes}, {"free_bytes", d.free_bytes}, {"multiprocessors", d.multiprocessors}});
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("kiln {} (built with {})\n", KILN_VERSION_STRING, build_description());
  if (!built_with_cuda()) {
    fmt::print("no CUDA backend in this build\n");
    return 0;
  }
  fmt::print("driver {}  runtime {}  cuDNN {}  cuBLAS {}\n", rt.driver.empty() ? "none" : rt.driver, rt.runtime, rt.cudnn,
             rt.cublas);
  if (devices.empty()) fmt::print("devices: none ({})\n", cuda_unavailable_reason());
  for (const auto& d : devices)
    fmt::print("device {}: {}, compute capability {}.{}, {} multiprocessors, {} memory ({} free)\n", d.index, d.name, d.major,
               d.minor, d.multiprocessors, format_bytes(d.memory_bytes), format_bytes(d.free_bytes));
  return 0;
}

}  // namespace

void add_info(CLI::App& root, std::vector<Command>& commands) {
  auto json = std::make_shared<bool>(false);
  CLI::App* app = root.add_subcommand("info", "Show devices, compute capability, memory, driver, runtime, cuDNN and cuBLAS versions");
  app->add_flag("--json", *json, "Print JSON");
  commands.push_back({app, [json] { return run_info(*json); }});
}

}  // namespace kiln::cli
