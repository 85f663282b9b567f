// kiln::compile and kiln::Plan through libkiln.so, as a program that embeds kiln sees them:
// this test links the shared library and includes only <kiln/kiln.hpp>.
#include <gtest/gtest.h>

#include <kiln/kiln.hpp>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

kiln::Graph small_graph(const std::string& name = "small") {
  kiln::GraphBuilder b(name, kiln::Shape::chw(3, 8, 8), 4);
  b.add(kiln::layers::conv(6, 3).pad(1).named("conv1"))
      .add(kiln::layers::batchnorm().named("bn1"))
      .add(kiln::layers::relu())
      .add(kiln::layers::maxpool(2))
      .add(kiln::layers::flatten())
      .add(kiln::layers::linear(4).named("fc"));
  return b.build();
}

kiln::Dataset small_data(std::int64_t n, std::uint8_t seed) {
  kiln::Dataset d;
  d.source = "test";
  d.sample = kiln::Shape::chw(3, 8, 8);
  d.classes = 4;
  d.images.resize(static_cast<std::size_t>(n * d.sample.elements()));
  for (std::size_t i = 0; i < d.images.size(); ++i) d.images[i] = static_cast<std::uint8_t>((i * 37 + seed * 11) % 251);
  for (std::int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<std::uint8_t>((i + seed) % 4));
  return d;
}

const kiln::Target cpu{kiln::Backend::cpu, 5, kiln::DType::f32, kiln::Layout::nchw};

kiln::CompileOptions one_thread(std::uint64_t seed = 0) {
  kiln::CompileOptions o;
  o.threads = 1;
  o.seed = seed;
  return o;
}

std::string temp_file(const std::string& name) {
  // The process id: two builds testing at once must not share files.
  return (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()) + ".safetensors")).string();
}

}  // namespace

TEST(Plan, DescribesWhatItWasCompiledFor) {
  const kiln::Graph g = small_graph();
  kiln::Plan plan = kiln::compile(g, cpu, one_thread());
  EXPECT_EQ(plan.graph().name(), "small");
  EXPECT_EQ(plan.target().backend, kiln::Backend::cpu);
  EXPECT_EQ(plan.batch(), 5);
  EXPECT_EQ(plan.memory().batch, 5);
  EXPECT_EQ(plan.memory().arena_bytes, kiln::plan_memory(g, 5).arena_bytes);
  EXPECT_EQ(plan.describe(), "cpu, 1 thread");
}

TEST(Plan, PredictsInBatchesOfItsSize) {
  const kiln::Graph g = small_graph();
  kiln::Plan plan = kiln::compile(g, cpu, one_thread());
  const kiln::Dataset d = small_data(12, 1);  // 5 + 5 + 2
  const std::vector<float> all = plan.predict(d.images.data(), d.size());
  ASSERT_EQ(all.size(), 12u * 4u);
  // The same images one at a time give the same logits: batching does not change them.
  const auto bytes = static_cast<std::size_t>(g.input_shape().elements());
  for (std::int64_t i = 0; i < d.size(); ++i) {
    std::vector<float> one = plan.predict(std::span<const std::uint8_t>(d.image(i), bytes));
    ASSERT_EQ(one.size(), 4u);
    for (std::size_t k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(one[k], all[static_cast<std::size_t>(i) * 4 + k]) << i;
  }
  EXPECT_TRUE(plan.predict(d.images.data(), 0).empty());
  EXPECT_THROW(plan.predict(std::span<const std::uint8_t>(d.images.data(), bytes + 1)), kiln::UsageError);
}

TEST(Plan, SameSeedSameWeightsAsTheTrainer) {
  const kiln::Graph g = small_graph();
  kiln::TrainConfig config;
  config.batch = 5;
  config.seed = 7;
  config.mean = {0.5f, 0.5f, 0.5f};
  config.std = {0.25f, 0.25f, 0.25f};
  kiln::RunOptions run;
  run.threads = 1;
  kiln::Trainer trainer(g, config, run);
  kiln::CompileOptions options = one_thread(7);
  options.mean = config.mean;
  options.std = config.std;
  kiln::Plan plan = kiln::compile(g, cpu, options);
  const std::string path = temp_file("plan-trainer");
  trainer.save_weights(path);
  const kiln::SafetensorsFile file = kiln::read_safetensors(path);
  std::filesystem::remove(path);
  for (std::size_t i = 0; i < g.params().size(); ++i) {
    const kiln::NamedTensor* t = file.find(g.params()[i].name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(plan.read_param(i), t->f32) << g.params()[i].name;
  }
  const kiln::Dataset d = small_data(7, 2);
  EXPECT_EQ(plan.predict(d.images.data(), d.size()), trainer.predict(d.images.data(), d.size()));
}

TEST(Plan, WeightsMoveBetweenPlansInMemoryAndThroughFiles) {
  const kiln::Graph g = small_graph();
  kiln::Plan a = kiln::compile(g, cpu, one_thread(1));
  kiln::Plan b = kiln::compile(g, cpu, one_thread(2));
  const kiln::Dataset d = small_data(6, 3);
  ASSERT_NE(a.predict(d.images.data(), d.size()), b.predict(d.images.data(), d.size()));

  b.set_weights(a.weights());
  EXPECT_EQ(a.predict(d.images.data(), d.size()), b.predict(d.images.data(), d.size()));

  std::vector<float> w = a.read_param("fc.weight");
  std::transform(w.begin(), w.end(), w.begin(), [](float x) { return x * 2.0f; });
  a.write_param(g.find("fc")->params[0], w);
  EXPECT_EQ(a.read_param("fc.weight"), w);
  const std::string path = temp_file("plan-weights");
  a.save_weights(path);
  kiln::Plan c = kiln::compile(g, {kiln::Backend::cpu, 3}, one_thread(3));
  c.load_weights(path);
  std::filesystem::remove(path);
  EXPECT_EQ(c.read_param("fc.weight"), w);
  EXPECT_EQ(c.predict(d.images.data(), d.size()), a.predict(d.images.data(), d.size()));
}

TEST(Plan, RejectsWeightsOfAnotherModelAndKeepsItsOwn) {
  kiln::GraphBuilder other("other", kiln::Shape::chw(3, 8, 8), 4);
  other.add(kiln::layers::conv(6, 3).pad(1).named("conv1")).add(kiln::layers::flatten()).add(kiln::layers::linear(4).named("head"));
  kiln::Plan theirs = kiln::compile(other.build(), cpu, one_thread());
  kiln::Plan plan = kiln::compile(small_graph(), cpu, one_thread());
  const std::vector<float> before = plan.read_param("conv1.weight");
  try {
    plan.set_weights(theirs.weights(), "theirs.safetensors");
    FAIL() << "expected a CheckpointError";
  } catch (const kiln::CheckpointError& e) {
    EXPECT_EQ(e.file(), "theirs.safetensors");
    EXPECT_EQ(e.exit_code(), kiln::ExitCode::invalid_input);
    const auto& names = e.tensors();
    EXPECT_NE(std::find(names.begin(), names.end(), "fc.weight"), names.end()) << e.what();
    EXPECT_NE(std::find(names.begin(), names.end(), "head.weight"), names.end()) << e.what();
  }
  EXPECT_EQ(plan.read_param("conv1.weight"), before);
  EXPECT_THROW(plan.load_weights("/nonexistent/kiln/weights.safetensors"), kiln::CheckpointError);
}

TEST(Plan, ParameterAccessIsChecked) {
  const kiln::Graph g = small_graph();
  kiln::Plan plan = kiln::compile(g, cpu, one_thread());
  EXPECT_EQ(plan.read_param("bn1.running_var"), std::vector<float>(6, 1.0f));
  EXPECT_THROW(plan.read_param("nope.weight"), kiln::UsageError);
  EXPECT_THROW(plan.read_param(g.params().size()), kiln::UsageError);
  EXPECT_THROW(plan.write_param(0, std::vector<float>(3, 0.0f)), kiln::UsageError);
}

TEST(Plan, EvaluateAgreesWithPredict) {
  const kiln::Graph g = small_graph();
  kiln::Plan plan = kiln::compile(g, cpu, one_thread(4));
  const kiln::Dataset d = small_data(13, 4);
  const std::vector<float> logits = plan.predict(d.images.data(), d.size());
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < d.size(); ++i) {
    const float* row = logits.data() + i * 4;
    correct += (std::max_element(row, row + 4) - row) == d.labels[static_cast<std::size_t>(i)];
  }
  const kiln::Evaluation e = plan.evaluate(d);
  EXPECT_EQ(e.count, 13);
  EXPECT_DOUBLE_EQ(e.accuracy, static_cast<double>(correct) / 13.0);
  EXPECT_GT(e.loss, 0.0);
  ASSERT_EQ(e.confusion.size(), 4u);
  std::int64_t total = 0;
  for (const auto& row : e.confusion)
    for (auto c : row) total += c;
  EXPECT_EQ(total, 13);

  kiln::Dataset wrong = small_data(2, 0);
  wrong.classes = 10;
  EXPECT_THROW(plan.evaluate(wrong), kiln::GraphError);
}

// The error `f` throws, which must be an `E`; a test failure when it throws nothing.
template <class E, class F>
std::optional<E> thrown(F f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  ADD_FAILURE() << "expected an exception";
  return std::nullopt;
}

bool says(const std::optional<kiln::Error>& e, const std::string& text) {
  return e && std::string(e->what()).find(text) != std::string::npos;
}

TEST(Plan, CompileRejectsWhatTheBackendCannotRun) {
  const kiln::Graph g = small_graph();
  EXPECT_NO_THROW(kiln::compile(g, {kiln::Backend::cpu, 4, kiln::DType::f16}));  // emulated in fp32
  EXPECT_THROW(kiln::compile(g, {kiln::Backend::cpu, 4, static_cast<kiln::DType>(9)}), kiln::UsageError);
  EXPECT_NO_THROW(kiln::compile(g, {kiln::Backend::cpu, 4, kiln::DType::f32, kiln::Layout::nhwc}));  // the CPU runs both
  EXPECT_THROW(kiln::compile(g, {kiln::Backend::cpu, 0}), kiln::UsageError);
  kiln::CompileOptions two_channels;
  two_channels.mean = {0.5f, 0.5f};
  two_channels.std = {0.5f, 0.5f};
  const auto channels = thrown<kiln::UsageError>([&] { kiln::compile(g, cpu, two_channels); });
  EXPECT_TRUE(says(channels, "3 input channels"));
  EXPECT_TRUE(channels && channels->exit_code() == kiln::ExitCode::usage);
  if (kiln::cuda_device_count() == 0) {
    EXPECT_THROW(kiln::compile(g, {kiln::Backend::cuda, 4}), kiln::DeviceError);
  }
  kiln::CompileOptions zero_std;
  zero_std.std = {0.25f, 0.0f, 0.25f};
  EXPECT_TRUE(says(thrown<kiln::UsageError>([&] { kiln::compile(g, cpu, zero_std); }),
                   "normalization of channel 1: mean 0.4822 and std 0"));
}

// A Dataset filled in by a program is checked as a file would be: one image per label, every
// label below the model's classes.
TEST(Plan, EvaluateRejectsABrokenDataset) {
  const kiln::Graph g = small_graph();
  kiln::Plan plan = kiln::compile(g, cpu, one_thread());
  kiln::Dataset bad_label = small_data(6, 7);
  bad_label.source = "mine";
  bad_label.labels[4] = 4;
  const auto label = thrown<kiln::DataError>([&] { plan.evaluate(bad_label); });
  EXPECT_TRUE(says(label, "mine: record 4 has label 4, not below the 4 classes"));
  EXPECT_TRUE(label && label->record() == 4);
  kiln::Dataset short_images = small_data(6, 7);
  short_images.source = "mine";
  short_images.images.resize(short_images.images.size() - 1);
  EXPECT_TRUE(says(thrown<kiln::DataError>([&] { plan.evaluate(short_images); }), "mine: 6 labels need"));
}

TEST(Plan, MovesLeaveAWorkingPlan) {
  const kiln::Graph g = small_graph();
  kiln::Plan a = kiln::compile(g, cpu, one_thread());
  const kiln::Dataset d = small_data(3, 5);
  const std::vector<float> expected = a.predict(d.images.data(), d.size());
  kiln::Plan b = std::move(a);
  EXPECT_EQ(b.predict(d.images.data(), d.size()), expected);
  a = kiln::compile(small_graph("again"), cpu, one_thread());
  EXPECT_EQ(a.graph().name(), "again");
}
