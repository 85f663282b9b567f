// kiln: the command line. A thin client of libkiln: parsing, printing and exit codes.
#include <cstdio>
#include <fmt/format.h>

#include "cli.hpp"

namespace kiln::cli {

nlohmann::json to_json(const Diagnostic& d) {
  return {{"severity", d.severity == Severity::error ? "error" : "warning"},
          {"file", d.loc.file},
          {"line", d.loc.line},
          {"column", d.loc.column},
          {"layer", d.layer},
          {"context", d.context},
          {"message", d.message},
          {"notes", d.notes},
          {"hint", d.hint}};
}

void print_warnings(const Graph& graph) {
  for (const auto& w : graph.warnings()) fmt::print(stderr, "{}", w.format());
}

namespace {
std::vector<std::string> g_command_line;
}

void set_command_line(int argc, char** argv) { g_command_line.assign(argv, argv + argc); }
const std::vector<std::string>& command_line() { return g_command_line; }

}  // namespace kiln::cli

int main(int argc, char** argv) {
  using namespace kiln;
  cli::set_command_line(argc, argv);
  CLI::App app{"kiln: a CUDA-native CNN training engine. Models are validated when the graph is built.", "kiln"};
  app.set_version_flag("--version", fmt::format("kiln {} ({})", KILN_VERSION_STRING, build_description()));
  app.require_subcommand(1);
  std::vector<cli::Command> commands;
  cli::add_check(app, commands);
  cli::add_train(app, commands);
  cli::add_eval(app, commands);
  cli::add_bench(app, commands);
  cli::add_synth(app, commands);
  cli::add_info(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return static_cast<int>(ExitCode::usage);
  }

  for (auto& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const GraphError& e) {
      for (const auto& d : e.diagnostics()) fmt::print(stderr, "{}", d.format());
      return static_cast<int>(e.exit_code());
    } catch (const Error& e) {
      fmt::print(stderr, "kiln {}: error: {}\n", command.app->get_name(), e.what());
      return static_cast<int>(e.exit_code());
    } catch (const std::exception& e) {
      fmt::print(stderr, "kiln {}: internal error: {}\n", command.app->get_name(), e.what());
      return static_cast<int>(ExitCode::runtime);
    }
  }
  return static_cast<int>(ExitCode::usage);
}
