// kiln: the command line. A thin client of libkiln: parsing, printing and exit codes.
#include <algorithm>
#include <cstdio>
#include <fmt/format.h>

#include "cli.hpp"
#include "util/text.hpp"

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

namespace {

std::string names(const std::vector<std::string_view>& v, const char* prefix = "") {
  std::string out;
  for (auto n : v) out += fmt::format("{}{}{}", out.empty() ? "" : ", ", prefix, n);
  return out;
}

// What CLI11 would answer with "A subcommand is required" or "The following arguments were
// not expected: 1 --epoch", in kiln's words: the command and the flag named, and the closest
// one when it looks like a typo (the spec checker's suggestion). Empty when the line is fine.
std::string unknown_command_or_flag(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return {};
  const std::string first = argv[1];
  if (first.empty() || first[0] == '-') return {};
  std::vector<std::string_view> commands;
  const CLI::App* command = nullptr;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    commands.push_back(sub->get_name());
    if (sub->get_name() == first) command = sub;
  }
  if (!command) {
    const std::string guess = kiln::detail::closest(first, commands);
    return fmt::format("kiln: error: unknown command '{}'{}\n    commands: {}\n", first,
                       guess.empty() ? "" : fmt::format("; did you mean '{}'?", guess), names(commands));
  }
  std::vector<std::string> flags;
  for (const CLI::Option* opt : command->get_options())
    for (const std::string& n : opt->get_lnames()) flags.push_back("--" + n);
  std::vector<std::string_view> views(flags.begin(), flags.end());
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;  // what follows is positional
    if (arg.size() < 3 || arg.substr(0, 2) != "--") continue;
    const std::string_view flag = arg.substr(0, arg.find('='));
    if (std::find(views.begin(), views.end(), flag) != views.end()) continue;
    const std::string guess = kiln::detail::closest(flag, views);
    return fmt::format("kiln {}: error: unknown flag {}{}\n    hint: kiln {} --help lists its flags\n", first, flag,
                       guess.empty() ? "" : fmt::format("; did you mean {}?", guess), first);
  }
  return {};
}

}  // namespace

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
  cli::add_predict(app, commands);
  cli::add_bench(app, commands);
  cli::add_synth(app, commands);
  cli::add_info(app, commands);

  if (const std::string problem = cli::unknown_command_or_flag(app, argc, argv); !problem.empty()) {
    fmt::print(stderr, "{}", problem);
    return static_cast<int>(ExitCode::usage);
  }
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
