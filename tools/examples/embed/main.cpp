// Embedding kiln: build a small net with the C++ builder, train a few steps on a synthetic
// set, save a checkpoint, compile the same graph into an inference plan, load the
// checkpoint into it and check that it predicts the trainer's logits.
//
//   embed [DIR]   writes DIR/embed.safetensors (default: the system's temporary directory)
//
// Exits 0 when every check holds, 1 otherwise.
#include <kiln/kiln.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "embed: FAILED: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : std::filesystem::temp_directory_path();
  try {
    std::printf("kiln %s, %s, %d CUDA device(s)\n", KILN_VERSION_STRING, kiln::build_description().c_str(),
                kiln::cuda_device_count());

    // Errors are exceptions with structured fields: every problem, its layer and a hint.
    kiln::GraphBuilder bad("bad", kiln::Shape::chw(3, 32, 32), 10);
    bad.add(kiln::layers::conv(8, 35).named("huge")).add(kiln::layers::flatten()).add(kiln::layers::linear(10));
    try {
      bad.build();
      return fail("a 35x35 kernel on a 32x32 input was accepted");
    } catch (const kiln::GraphError& e) {
      const kiln::Diagnostic& d = e.diagnostics().front();
      std::printf("rejected: layer '%s': %s (exit code %d)\n", d.layer.c_str(), d.message.c_str(),
                  static_cast<int>(e.exit_code()));
      if (d.layer != "huge") return fail("the diagnostic names layer '" + d.layer + "', not 'huge'");
    }

    kiln::GraphBuilder b("embed", kiln::Shape::chw(3, 32, 32), /*classes=*/10);
    b.add(kiln::layers::conv(8, 3).pad(1).named("conv1"))
        .add(kiln::layers::relu())
        .add(kiln::layers::maxpool(4))
        .add(kiln::layers::flatten())
        .add(kiln::layers::linear(10).named("fc"));
    const kiln::Graph graph = b.build();
    std::printf("graph '%s': %zu layers, %lld parameters\n", graph.name().c_str(), graph.layers().size(),
                static_cast<long long>(graph.parameter_count()));

    const kiln::Cifar10 data = kiln::make_synthetic_cifar10({.train = 512, .test = 64, .seed = 1});

    kiln::TrainConfig config;
    config.batch = 32;
    config.lr = 0.05;
    config.epochs = 1;
    kiln::RunOptions run;
    run.device = kiln::Backend::cpu;
    run.max_steps = 8;
    run.evaluate = kiln::EvalPolicy::never;
    kiln::Trainer trainer(graph, config, run);
    std::vector<double> losses;
    trainer.on_step([&](const kiln::StepEvent& e) {
      losses.push_back(e.loss);
      std::printf("step %lld/%lld loss %.4f\n", static_cast<long long>(e.step), static_cast<long long>(e.total_steps), e.loss);
    });
    const kiln::TrainResult result = trainer.fit(data);
    if (result.steps != 8 || losses.size() != 8) return fail("expected 8 steps, ran " + std::to_string(result.steps));
    if (!std::all_of(losses.begin(), losses.end(), [](double l) { return std::isfinite(l); }))
      return fail("a loss is not finite");

    const kiln::Evaluation eval = trainer.evaluate(data.test);
    std::printf("test: accuracy %.3f, loss %.4f on %lld images\n", eval.accuracy, eval.loss, static_cast<long long>(eval.count));

    const std::string checkpoint = (dir / "embed.safetensors").string();
    trainer.save_weights(checkpoint);
    std::printf("saved %s\n", checkpoint.c_str());

    const std::int64_t n = data.test.size();
    const std::vector<float> expected = trainer.predict(data.test.images.data(), n);

    kiln::Plan plan = kiln::compile(graph, {.backend = kiln::Backend::cpu, .batch = 32});
    plan.load_weights(checkpoint);
    const std::vector<float> logits = plan.predict(data.test.images.data(), n);
    std::printf("plan: %s, activation arena %s\n", plan.describe().c_str(),
                kiln::format_bytes(plan.memory().arena_bytes).c_str());
    if (logits.size() != expected.size() || logits.size() != static_cast<std::size_t>(n * graph.classes()))
      return fail("predict returned " + std::to_string(logits.size()) + " logits");
    double max_diff = 0;
    for (std::size_t i = 0; i < logits.size(); ++i)
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(logits[i] - expected[i])));
    std::printf("reloaded checkpoint: %zu logits, max |difference| %g\n", logits.size(), max_diff);
    if (max_diff > 1e-5) return fail("the reloaded checkpoint predicts different logits");

    std::printf("embed: ok\n");
    return 0;
  } catch (const kiln::Error& e) {
    return fail(std::string("kiln error: ") + e.what());
  }
}
