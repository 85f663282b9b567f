// The YAML spec parser: keys, types, references and their diagnostics.
#include "test_util.hpp"

namespace kiln::test {
namespace {

const char* kHeader = "name: t\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n";
std::string spec(const std::string& layers) { return std::string(kHeader) + layers; }
const char* kTail = "  - {op: flatten}\n  - {op: linear, out: 10}\n";

TEST(SpecParser, ExampleFromTheReadmeParses) {
  Spec s = parse_spec(
      "name: cifar_quick\ninput: [3, 32, 32]\nclasses: 10\nlayers:\n"
      "  - {name: conv1, op: conv, out: 32, kernel: 5, pad: 2}\n"
      "  - {name: pool1, op: maxpool, kernel: 3, stride: 2, ceil: true}\n"
      "  - {op: relu}\n  - {op: flatten}\n  - {name: fc1, op: linear, out: 10}\ntrain: {}\n",
      "quick.yaml");
  const Graph& g = s.graph;
  EXPECT_EQ(g.name(), "cifar_quick");
  ASSERT_EQ(g.layers().size(), 6u);
  EXPECT_EQ(g.layers()[3].name, "relu3");  // unnamed: op + position from 1
  EXPECT_EQ(g.layers()[4].name, "flatten4");
  EXPECT_EQ(g.find("pool1")->shape, Shape::chw(32, 16, 16));
  EXPECT_EQ(g.find("flatten4")->shape, Shape::vec(8192));
  EXPECT_EQ(g.output().shape, Shape::vec(10));
  EXPECT_EQ(g.find("conv1")->loc.line, 5);
  EXPECT_EQ(g.find("conv1")->loc.column, 5);
}

TEST(SpecParser, UnknownOpSuggestsClosest) {
  auto d = only_error(spec("  - {name: c, op: conv2d, out: 8, kernel: 3}\n") + kTail);
  EXPECT_EQ(d.layer, "c");
  EXPECT_EQ(d.message, "unknown op 'conv2d'");
  EXPECT_EQ(d.hint, "did you mean 'conv'?");
  EXPECT_EQ(d.loc.line, 5);
  EXPECT_EQ(d.loc.column, 19);  // the op's value
  auto d2 = only_error(spec("  - {op: frobnicate}\n") + kTail);
  EXPECT_TRUE(contains(d2.hint, "ops are: conv, maxpool, avgpool")) << d2.hint;
}

TEST(SpecParser, UnknownKeySuggestsClosest) {
  // Two problems: the typo, and the missing kernel it leaves behind.
  auto errors = errors_of(spec("  - {name: c, op: conv, out: 8, kernal: 3}\n") + kTail);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].message, "missing required key 'kernel'");
  EXPECT_EQ(errors[0].hint, "conv needs: out, kernel");
  EXPECT_EQ(errors[1].message, "unknown key 'kernal' for op conv");
  EXPECT_EQ(errors[1].hint, "did you mean 'kernel'?");
  EXPECT_EQ(errors[1].loc.column, 33);
}

TEST(SpecParser, UnknownKeyWithoutCloseMatchListsKeys) {
  auto d = only_error(spec("  - {op: relu, colour: red}\n") + kTail);
  EXPECT_EQ(d.message, "unknown key 'colour' for op relu");
  EXPECT_EQ(d.hint, "relu takes no options besides name and from");
  auto d2 = only_error(spec("  - {op: maxpool, kernel: 2, zzzzzz: 1}\n") + kTail);
  EXPECT_EQ(d2.hint, "maxpool takes: kernel, stride, pad, ceil");
}

TEST(SpecParser, MissingRequiredKeys) {
  auto d = only_error(spec("  - {name: fc, op: linear}\n"));
  EXPECT_EQ(d.layer, "fc");
  EXPECT_EQ(d.message, "missing required key 'out'");
  auto d2 = only_error(spec("  - {name: s, op: scale}\n") + kTail);
  EXPECT_EQ(d2.message, "missing required key 'factor'");
  auto d3 = only_error(spec("  - {name: x, kernel: 3}\n") + kTail);
  EXPECT_EQ(d3.message, "has no 'op'");
  EXPECT_EQ(d3.layer, "x");
}

TEST(SpecParser, WrongValueTypes) {
  auto d = only_error(spec("  - {name: c, op: conv, out: 3.5, kernel: 3}\n") + kTail);
  EXPECT_EQ(d.message, "'out' must be an integer, got '3.5'");
  EXPECT_EQ(d.loc.column, 30);
  auto d2 = only_error(spec("  - {name: c, op: conv, out: 8, kernel: [3, 3, 3]}\n") + kTail);
  EXPECT_EQ(d2.message, "'kernel' must be an integer or a list [h, w], got a list");
  auto d3 = only_error(spec("  - {name: c, op: conv, out: 8, kernel: 3, bias: maybe}\n") + kTail);
  EXPECT_EQ(d3.message, "'bias' must be true or false, got 'maybe'");
  auto d4 = only_error(spec("  - {name: d, op: dropout, p: lots}\n") + kTail);
  EXPECT_EQ(d4.message, "'p' must be a number, got 'lots'");
  auto d5 = only_error(spec("  - {name: p, op: maxpool, kernel: 2, pad: same}\n") + kTail);
  EXPECT_EQ(d5.message, "'pad' must be an integer or a list [h, w], got 'same'");
  auto d6 = only_error("name: t\ninput: [3, x, 32]\nclasses: 10\nlayers:\n" + std::string(kTail));
  EXPECT_EQ(d6.message, "'input' must be a list of integers [C, H, W], got a list");
}

TEST(SpecParser, NumbersMayBeArithmetic) {
  Spec s = parse_spec(spec("  - {op: flatten}\n  - {op: linear, out: 10}\n  - {name: s, op: scale, factor: 1/9}\n"));
  EXPECT_DOUBLE_EQ(s.graph.find("s")->attrs.factor, 1.0 / 9.0);
  Spec s2 = parse_spec(spec("  - {op: flatten}\n  - {op: linear, out: 10}\n  - {name: s, op: scale, factor: '2*(1+0.5)'}\n"));
  EXPECT_DOUBLE_EQ(s2.graph.find("s")->attrs.factor, 3.0);
  auto d = only_error(spec("  - {op: flatten}\n  - {op: linear, out: 10}\n  - {name: s, op: scale, factor: 1/0}\n"));
  EXPECT_EQ(d.message, "'factor' must be a number, got '1/0'");
}

TEST(SpecParser, DuplicateNames) {
  auto d = only_error(spec("  - {name: c, op: conv, out: 8, kernel: 3}\n  - {name: c, op: relu}\n") + kTail);
  EXPECT_EQ(d.loc.line, 6);
  EXPECT_EQ(d.message, "duplicate layer name; 'c' is already layer 1");
  ASSERT_EQ(d.notes.size(), 1u);
  EXPECT_EQ(d.notes[0], "first defined at bad.yaml:5:5");
  auto d2 = only_error(spec("  - {name: input, op: relu}\n") + kTail);
  EXPECT_EQ(d2.message, "the name 'input' is reserved for the model input");
}

TEST(SpecParser, DuplicateKeys) {
  auto d = only_error(spec("  - {name: c, op: conv, out: 8, out: 9, kernel: 3}\n") + kTail);
  EXPECT_EQ(d.message, "key 'out' appears twice");
}

TEST(SpecParser, UnknownAndForwardReferences) {
  auto d = only_error(spec("  - {name: block1, op: conv, out: 8, kernel: 3, pad: 1}\n"
                           "  - {name: r, op: relu, from: blok1}\n") + kTail);
  EXPECT_EQ(d.layer, "r");
  EXPECT_EQ(d.message, "takes its input from 'blok1', which is not defined");
  EXPECT_EQ(d.hint, "did you mean 'block1'?");
  auto d2 = only_error(spec("  - {name: a, op: relu, from: b}\n  - {name: b, op: relu}\n") + kTail);
  EXPECT_EQ(d2.layer, "a");
  EXPECT_EQ(d2.message, "takes its input from 'b', which is defined later (layer 2); inputs must come from earlier layers");
  auto d3 = only_error(spec("  - {name: a, op: relu, from: a}\n") + kTail);
  EXPECT_EQ(d3.message, "takes its input from itself ('a')");
}

TEST(SpecParser, InputArity) {
  auto d = only_error(spec("  - {name: a, op: relu, from: [input, input]}\n") + kTail);
  EXPECT_EQ(d.message, "relu takes one input, but from: names 2");
  auto d2 = only_error(spec("  - {name: s, op: add, from: [input]}\n") + kTail);
  EXPECT_EQ(d2.message, "add needs at least 2 inputs, but from: names 1");
  auto d3 = only_error(spec("  - {name: s, op: add}\n") + kTail);
  EXPECT_EQ(d3.message, "add needs at least 2 inputs named in from:, got none");
}

TEST(SpecParser, UnusedLayerIsAWarning) {
  Spec s = parse_spec(spec("  - {name: side, op: conv, out: 8, kernel: 3}\n"
                           "  - {op: flatten, from: input}\n  - {op: linear, out: 10}\n"),
                      "bad.yaml");
  ASSERT_EQ(s.graph.warnings().size(), 1u);
  const auto& w = s.graph.warnings()[0];
  EXPECT_EQ(w.severity, Severity::warning);
  EXPECT_EQ(w.layer, "side");
  EXPECT_EQ(w.message, "its output is never used");
  EXPECT_EQ(w.format().substr(0, 26), "bad.yaml:5:5: warning: lay");
}

TEST(SpecParser, TopLevelProblems) {
  auto d = only_error("name: t\ninput: [3, 32, 32]\nclases: 10\nlayers:\n" + std::string(kTail));
  EXPECT_EQ(d.message, "unknown key 'clases' in the model spec");
  EXPECT_EQ(d.hint, "did you mean 'classes'?");
  EXPECT_EQ(d.loc.line, 3);
  auto d2 = only_error("name: t\nclasses: 10\nlayers:\n" + std::string(kTail));
  EXPECT_EQ(d2.message, "missing required key 'input'");
  auto d3 = only_error("name: t\ninput: [3, 32, 32]\n");
  EXPECT_EQ(d3.message, "missing required key 'layers'");
  auto d4 = only_error("- just\n- a list\n");
  EXPECT_TRUE(contains(d4.message, "must be a YAML mapping"));
  auto d5 = only_error("");
  EXPECT_TRUE(contains(d5.message, "must be a YAML mapping"));
  auto d6 = only_error("name: t\ninput: [3, 32, 32]\nlayers: []\n");
  EXPECT_EQ(d6.message, "the model has no layers");
}

TEST(SpecParser, InvalidYamlHasAPosition) {
  auto d = only_error("name: t\ninput: [3, 32, 32\nlayers:\n");
  EXPECT_TRUE(contains(d.message, "invalid YAML")) << d.message;
  EXPECT_GT(d.loc.line, 0);
}

TEST(SpecParser, UnreadableFiles) {
  try {
    load_spec("/nonexistent/model.yaml");
    FAIL();
  } catch (const GraphError& e) {
    EXPECT_EQ(e.diagnostics()[0].loc.file, "/nonexistent/model.yaml");
    EXPECT_TRUE(contains(e.diagnostics()[0].message, "cannot read the model spec: No such file or directory"));
  }
  try {
    load_spec(repo_path("data/models"));
    FAIL();
  } catch (const GraphError& e) {
    EXPECT_EQ(e.diagnostics()[0].message, "is a directory, not a model spec");
  }
}

TEST(SpecParser, TrainSection) {
  Spec s = parse_spec(spec(kTail) + "train:\n  batch: 64\n  lr: 0.1\n");
  EXPECT_EQ(s.train.batch, 64);
  EXPECT_DOUBLE_EQ(s.train.lr, 0.1);
  auto d = only_error(spec(kTail) + "train:\n  batch: -3\n");
  EXPECT_EQ(d.message, "'batch' must be an integer of at least 1, got '-3'");
  EXPECT_EQ(d.loc.line, 8);
}

TEST(SpecParser, PaddingForms) {
  Spec s = parse_spec(spec("  - {name: a, op: conv, out: 4, kernel: 4, pad: same}\n"
                           "  - {name: b, op: conv, out: 4, kernel: [3, 5], pad: [1, 2]}\n") + kTail);
  const Layer* a = s.graph.find("a");
  // PyTorch's 'same' with an even kernel: the extra row and column go bottom and right.
  EXPECT_EQ(a->attrs.pad, (Padding{1, 2, 1, 2, false}));
  EXPECT_EQ(a->shape, Shape::chw(4, 32, 32));
  const Layer* b = s.graph.find("b");
  EXPECT_EQ(b->attrs.pad, Padding::hw(1, 2));
  EXPECT_EQ(b->shape, Shape::chw(4, 32, 32));
}

}  // namespace
}  // namespace kiln::test

namespace kiln::test {
namespace {

TEST(TrainSection, ScheduleMappingKeepsItsParameters) {
  Spec s = parse_spec("name: t\ninput: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n"
                      "train:\n  schedule: {type: step, every: 8, gamma: 0.5}\n  epochs: 3\n");
  EXPECT_EQ(s.train.schedule.kind, Schedule::Kind::step);
  EXPECT_DOUBLE_EQ(s.train.schedule.every, 8.0);
  EXPECT_DOUBLE_EQ(s.train.schedule.gamma, 0.5);
  EXPECT_DOUBLE_EQ(s.train.epochs, 3.0);
  Spec w = parse_spec("name: t\ninput: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n"
                      "train:\n  schedule: {type: linear, warmup: 0.23, start: 0.2, final: 0.07}\n");
  EXPECT_EQ(w.train.schedule.kind, Schedule::Kind::linear);
  EXPECT_DOUBLE_EQ(w.train.schedule.warmup, 0.23);
  EXPECT_DOUBLE_EQ(w.train.schedule.start, 0.2);
  EXPECT_DOUBLE_EQ(w.train.schedule.final, 0.07);
  Spec c = parse_spec("name: t\ninput: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n"
                      "train:\n  schedule: cosine\n");
  EXPECT_EQ(c.train.schedule.kind, Schedule::Kind::cosine);
}

TEST(TrainSection, EveryKeyAndItsErrors) {
  Spec s = parse_spec("name: t\ninput: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\n"
                      "train:\n  epochs: 9.9\n  batch: 1024\n  lr: 11.5/(1024*(1+1/0.15))\n  momentum: 0.85\n  nesterov: true\n"
                      "  weight_decay: 5e-4\n  weight_decay_mode: decoupled\n  label_smoothing: 0.2\n  reduction: sum\n"
                      "  augment: {translate: 2, flip: true}\n  shuffle: false\n  drop_last: true\n  seed: 7\n  tf32: true\n"
                      "  normalize: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n");
  const TrainConfig& t = s.train;
  EXPECT_DOUBLE_EQ(t.epochs, 9.9);
  EXPECT_EQ(t.batch, 1024);
  EXPECT_DOUBLE_EQ(t.lr, 11.5 / (1024 * (1 + 1 / 0.15)));
  EXPECT_DOUBLE_EQ(t.momentum, 0.85);
  EXPECT_TRUE(t.nesterov);
  EXPECT_EQ(t.decay_mode, DecayMode::decoupled);
  EXPECT_DOUBLE_EQ(t.label_smoothing, 0.2);
  EXPECT_TRUE(t.sum_loss);
  EXPECT_EQ(t.augment.translate, 2);
  EXPECT_EQ(t.augment.crop, 0);
  EXPECT_TRUE(t.augment.flip);
  EXPECT_FALSE(t.shuffle);
  EXPECT_TRUE(t.drop_last);
  EXPECT_EQ(t.seed, 7u);
  EXPECT_TRUE(t.tf32);
  EXPECT_FALSE(TrainConfig{}.tf32) << "fp32 means fp32 unless the spec or --tf32 says otherwise";
  EXPECT_EQ(t.std, (std::vector<float>{0.25f, 0.25f, 0.25f}));
  const std::string head = "name: t\ninput: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: flatten}\n  - {op: linear, out: 10}\ntrain:\n";
  EXPECT_EQ(only_error(head + "  lr: fast\n").message, "'lr' must be a number >= 0, got 'fast'");
  EXPECT_EQ(only_error(head + "  momentum: 1\n").message, "'momentum' must be a number in [0, 1), got '1'");
  auto d = only_error(head + "  scheduel: cosine\n");
  EXPECT_EQ(d.message, "unknown key 'scheduel' in train");
  EXPECT_EQ(d.hint, "did you mean 'schedule'?");
  EXPECT_EQ(d.loc.line, 8);
  EXPECT_EQ(only_error(head + "  schedule: cosin\n").hint, "did you mean 'cosine'?");
  EXPECT_EQ(only_error(head + "  augment: {crop: 4, translate: 2}\n").message,
            "augment: crop and translate are alternatives; set one of them");
  EXPECT_EQ(only_error(head + "  nesterov: true\n  momentum: 0\n").message, "nesterov needs a momentum above 0");
}

}  // namespace
}  // namespace kiln::test
