// Blocks in model specs: expansion, names, ${...} substitution, the zoo, and diagnostics
// that name both the instance and the block's line.
#include <fstream>
#include <sstream>

#include "test_util.hpp"

namespace kiln::test {
namespace {

const char* kHeader = "name: t\ninput: [3, 32, 32]\nclasses: 10\n";

// ResNet-18 as the blocks issue writes it, word for word.
const char* kResNet18 = R"(name: resnet18
input: [3, 32, 32]
classes: 10
blocks:
  basic:
    params: {out: 64}
    layers:
      - {name: conv1, op: conv, out: "${out}", kernel: 3, pad: 1, bias: false}
      - {name: bn1, op: batchnorm}
      - {name: relu1, op: relu}
      - {name: conv2, op: conv, out: "${out}", kernel: 3, pad: 1, bias: false}
      - {name: bn2, op: batchnorm}
      - {name: add, op: add, from: [bn2, "${in}"]}
      - {name: relu, op: relu}
  down:
    params: {out: 128, stride: 2}
    layers:
      - {name: conv1, op: conv, out: "${out}", kernel: 3, stride: "${stride}", pad: 1, bias: false}
      - {name: bn1, op: batchnorm}
      - {name: relu1, op: relu}
      - {name: conv2, op: conv, out: "${out}", kernel: 3, pad: 1, bias: false}
      - {name: bn2, op: batchnorm}
      - {name: shortcut.0, op: conv, out: "${out}", kernel: 1, stride: "${stride}", bias: false, from: "${in}"}
      - {name: shortcut.1, op: batchnorm}
      - {name: add, op: add, from: [bn2, shortcut.1]}
      - {name: relu, op: relu}
layers:
  - {name: conv1, op: conv, out: 64, kernel: 3, pad: 1, bias: false}
  - {name: bn1, op: batchnorm}
  - {name: relu, op: relu}
  - {name: layer1, block: basic, repeat: 2, out: 64}
  - {name: layer2, block: basic, repeat: 2, out: 128, first: {block: down, stride: 2}}
  - {name: layer3, block: basic, repeat: 2, out: 256, first: {block: down, stride: 2}}
  - {name: layer4, block: basic, repeat: 2, out: 512, first: {block: down, stride: 2}}
  - {name: pool, op: avgpool, kernel: 4}
  - {op: flatten}
  - {name: linear, op: linear, out: 10}
)";

std::string input_of(const Graph& g, const std::string& layer, std::size_t k = 0) {
  const Layer* l = g.find(layer);
  if (!l || k >= l->inputs.size()) return "(none)";
  return g.layers()[static_cast<std::size_t>(l->inputs[k])].name;
}

TEST(Blocks, TheIssuesResNet18) {
  Spec s = parse_spec(kResNet18, "resnet18.yaml");
  const Graph& g = s.graph;
  EXPECT_EQ(g.parameter_count(), 11'173'962);
  EXPECT_EQ(g.layers().size(), 69u);
  EXPECT_TRUE(g.warnings().empty());
  // PyTorch's names: instance index with repeat, the block's own names after it.
  EXPECT_EQ(g.find("layer2.0.shortcut.0")->shape, Shape::chw(128, 16, 16));
  EXPECT_EQ(g.find("layer4.1.relu")->shape, Shape::chw(512, 4, 4));
  ASSERT_NE(g.find("layer3.1.bn2"), nullptr);
  // Each instance reads the previous one's output; ${in} is the instance's input.
  EXPECT_EQ(input_of(g, "layer1.0.conv1"), "relu");
  EXPECT_EQ(input_of(g, "layer1.0.add", 1), "relu");
  EXPECT_EQ(input_of(g, "layer1.1.conv1"), "layer1.0.relu");
  EXPECT_EQ(input_of(g, "layer1.1.add", 1), "layer1.0.relu");
  EXPECT_EQ(input_of(g, "layer2.0.shortcut.0"), "layer1.1.relu");
  EXPECT_EQ(input_of(g, "pool"), "layer4.1.relu");
  // `first` swaps the block of instance 0 only; parameters merge (out from the line, stride from first).
  EXPECT_EQ(g.find("layer2.0.conv1")->attrs.stride, (Hw{2, 2}));
  EXPECT_EQ(g.find("layer2.1.conv1")->attrs.stride, (Hw{1, 1}));
  EXPECT_EQ(g.find("layer2.1.shortcut.0"), nullptr);
  // What kiln check --fold groups by.
  EXPECT_EQ(g.find("layer2.0.bn1")->instance, "layer2.0");
  EXPECT_EQ(g.find("layer2.0.bn1")->block, "down");
  EXPECT_EQ(g.find("layer2.1.bn1")->block, "basic");
  EXPECT_EQ(g.find("pool")->instance, "");
  // The block's layer line is where the layer is.
  EXPECT_EQ(g.find("layer3.1.conv2")->loc.line, 11);
}

TEST(Blocks, ParameterNamesAreTheStateDictsOfPyTorch) {
  Spec s = parse_spec(kResNet18, "resnet18.yaml");
  std::vector<std::string> names;
  for (const Param& p : s.graph.params()) names.push_back(p.name);
  ASSERT_GE(names.size(), 12u);
  EXPECT_EQ(names[0], "conv1.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "layer2.0.shortcut.1.running_var"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "layer4.1.bn2.bias"), names.end());
  EXPECT_EQ(names.back(), "linear.bias");
}

TEST(Blocks, InstanceNamesReferToTheirOutputAndExpressionsCompute) {
  Spec s = parse_spec(std::string(kHeader) + R"(blocks:
  wide:
    params: {c: 8, k: 3, act: relu}
    layers:
      - {name: conv, op: conv, out: "${c * 2}", kernel: "${k}", pad: "${(k - 1) / 2}"}
      - {name: act, op: "${act}"}
layers:
  - {name: a, block: wide, c: 4, k: 5}
  - {name: b, block: wide, act: gelu, c: 2*3, from: input}
  - {name: both, op: concat, from: [a, b]}
  - {op: flatten}
  - {op: linear, out: 10}
)",
                      "b.yaml");
  const Graph& g = s.graph;
  // Without repeat: name.layer; the instance's name is its last layer.
  EXPECT_EQ(g.find("a.conv")->shape, Shape::chw(8, 32, 32));
  EXPECT_EQ(g.find("a.conv")->attrs.kernel, (Hw{5, 5}));
  EXPECT_EQ(g.find("a.conv")->attrs.pad, Padding::all(2));
  EXPECT_EQ(g.find("a.act")->op, OpKind::relu);
  EXPECT_EQ(g.find("b.act")->op, OpKind::gelu);
  EXPECT_EQ(g.find("b.conv")->shape.c, 12);  // c: 2*3, an expression, then ${c * 2}
  EXPECT_EQ(input_of(g, "b.conv"), "input");  // the instance's from:
  EXPECT_EQ(input_of(g, "both", 0), "a.act");
  EXPECT_EQ(input_of(g, "both", 1), "b.act");
  EXPECT_EQ(g.find("both")->shape.c, 20);
}

TEST(Blocks, NestedBlocksAndInstancesWithoutAName) {
  // `inner` has no name in `outer`: its layers join outer's names (a macro); `pair` is named.
  Spec s = parse_spec(std::string(kHeader) + R"(blocks:
  inner:
    params: {c: ~}
    layers:
      - {name: conv, op: conv, out: "${c}", kernel: 1}
      - {name: bn, op: batchnorm}
  outer:
    params: {c: 4}
    layers:
      - {block: inner, c: "${c}"}
      - {name: add, op: add, from: [bn, "${in}"]}
  pair:
    layers:
      - {name: x, block: outer, c: 3}
      - {name: y, block: outer, c: 3}
      - {name: cat, op: concat, from: [x, y]}
      - {name: proj, op: conv, out: 3, kernel: 1}
layers:
  - {name: p, block: pair, repeat: 2, first: {}}
  - {op: flatten}
  - {op: linear, out: 10}
)",
                      "n.yaml");
  const Graph& g = s.graph;
  EXPECT_NE(g.find("p.0.x.conv"), nullptr);
  EXPECT_EQ(input_of(g, "p.0.x.add", 1), "input");
  EXPECT_EQ(input_of(g, "p.0.y.conv"), "p.0.x.add");
  EXPECT_EQ(input_of(g, "p.0.cat", 0), "p.0.x.add");
  EXPECT_EQ(input_of(g, "p.1.x.conv"), "p.0.proj");
  EXPECT_EQ(g.find("p.1.cat")->shape.c, 6);
  EXPECT_EQ(g.find("p.1.y.bn")->instance, "p.1");  // folds by the outermost instance
  EXPECT_EQ(g.find("p.1.y.bn")->block, "pair");
}

// The diagnostics: the instance's name, the block's line, the instantiating line and the
// parameter values in notes; all of them in one pass.
TEST(Blocks, ShapeErrorInsideAnInstanceNamesBothPlaces) {
  auto d = only_error(std::string(kHeader) + R"(blocks:
  big:
    params: {k: 3}
    layers:
      - {name: conv, op: conv, out: 8, kernel: "${k}"}
layers:
  - {name: ok, block: big}
  - {name: stage, block: big, repeat: 2, k: 40, from: input}
  - {op: flatten, from: ok}
  - {op: linear, out: 10}
)");
  EXPECT_EQ(d.layer, "stage.0.conv");
  EXPECT_EQ(d.loc.line, 8);  // the block's layer
  EXPECT_TRUE(contains(d.message, "kernel 40x40 is larger than its padded input 32x32")) << d.message;
  ASSERT_FALSE(d.notes.empty());
  EXPECT_EQ(d.notes.back(), "in 'stage.0', an instance of block 'big' (k: 40) at bad.yaml:11:5");
}

TEST(Blocks, AShapeErrorRepeatedInInstancesIsReportedOnce) {
  auto d = only_error(std::string(kHeader) + R"(blocks:
  big:
    params: {k: 3}
    layers:
      - {name: conv, op: conv, out: 8, kernel: "${k}"}
layers:
  - {name: a, block: big, k: 40}
  - {name: b, block: big, k: 40, from: input}
  - {op: concat, from: [a, b]}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  EXPECT_EQ(d.layer, "a.conv");
  EXPECT_TRUE(contains(d.message, "kernel 40x40 is larger than its padded input 32x32")) << d.message;
  ASSERT_FALSE(d.notes.empty());
  EXPECT_EQ(d.notes.back(), "the same in 1 more instance: b.conv");
}

TEST(Blocks, UnknownBlockAndParameterSuggest) {
  auto errors = errors_of(std::string(kHeader) + R"(blocks:
  basic:
    params: {out: 8}
    layers:
      - {name: conv, op: conv, out: "${out}", kernel: 3}
layers:
  - {name: a, block: basci}
  - {name: b, block: basic, outt: 4}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].message, "unknown block 'basci'");
  EXPECT_EQ(errors[0].hint, "did you mean 'basic'?");
  EXPECT_EQ(errors[0].loc.line, 10);
  EXPECT_EQ(errors[1].message, "block 'basic' has no parameter 'outt'");
  EXPECT_EQ(errors[1].hint, "did you mean 'out'?");
  EXPECT_EQ(errors[1].layer, "b");
  EXPECT_EQ(errors[1].loc.line, 11);
  EXPECT_EQ(errors[1].loc.column, 29);  // the key
}

TEST(Blocks, UndefinedParameterIsReportedOnceForEveryInstance) {
  auto d = only_error(std::string(kHeader) + R"(blocks:
  basic:
    params: {out: 8}
    layers:
      - {name: conv, op: conv, out: "${outt}", kernel: 3}
layers:
  - {name: s, block: basic, repeat: 3}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  EXPECT_EQ(d.message, "'${outt}' is not defined: block 'basic' has the parameter out");
  EXPECT_EQ(d.hint, "did you mean '${out}'?");
  EXPECT_EQ(d.layer, "s.0.conv");
  EXPECT_EQ(d.loc.line, 8);
  ASSERT_EQ(d.notes.size(), 2u);
  EXPECT_EQ(d.notes[0], "in 's.0', an instance of block 'basic' (out: 8) at bad.yaml:10:5");
  EXPECT_EQ(d.notes[1], "the same in 2 more instances: s.1.conv, s.2.conv");
}

TEST(Blocks, RecursionIsAnErrorNotAHang) {
  auto d = only_error(std::string(kHeader) + R"(blocks:
  a:
    layers:
      - {name: inner, block: b}
  b:
    layers:
      - {name: again, block: a}
layers:
  - {name: top, block: a}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  EXPECT_EQ(d.message, "block 'a' uses itself: a -> b -> a");
  EXPECT_EQ(d.layer, "top.inner.again");
  EXPECT_EQ(d.loc.line, 10);
  ASSERT_EQ(d.notes.size(), 2u);
  EXPECT_EQ(d.notes[0], "in 'top.inner', an instance of block 'b' at bad.yaml:7:9");
  EXPECT_EQ(d.notes[1], "in 'top', an instance of block 'a' at bad.yaml:12:5");
}

TEST(Blocks, FromMayNotLeaveTheInstance) {
  auto d = only_error(std::string(kHeader) + R"(blocks:
  res:
    layers:
      - {name: conv, op: conv, out: 3, kernel: 3, pad: 1}
      - {name: add, op: add, from: [conv, stem]}
layers:
  - {name: stem, op: conv, out: 3, kernel: 1}
  - {name: r, block: res}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  EXPECT_TRUE(contains(d.message, "from: names 'stem', which is not a layer of this instance of block 'res'")) << d.message;
  EXPECT_EQ(d.layer, "r.add");
  EXPECT_EQ(d.loc.line, 8);
  EXPECT_EQ(d.notes.at(0), "in 'r', an instance of block 'res' at bad.yaml:11:5");
}

TEST(Blocks, MalformedBlocksAndInstanceLines) {
  auto msg = [](const std::string& blocks, const std::string& layers) {
    std::string all;
    for (const auto& d : errors_of(std::string(kHeader) + blocks + "layers:\n" + layers + "  - {op: flatten}\n  - {op: linear, out: 10}\n"))
      all += d.message + " | " + d.hint + "\n";
    return all;
  };
  const std::string conv = "blocks:\n  c:\n    params: {n: ~}\n    layers:\n      - {name: conv, op: conv, out: \"${n}\", kernel: 1}\n";
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c}\n"), "block 'c' needs parameter 'n' (it has no default)"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c, n: 2, repeat: 0}\n"), "'repeat' must be an integer from 1 to 4,096"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c, n: 2, first: {n: 3}}\n"), "'first' needs 'repeat'"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c, n: [1, 2]}\n"), "parameter 'n' must be a number or a word"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c, n: 2}\n  - {name: x, op: relu}\n"), "the layer name 'x' is also the name of a block instance"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: conv, op: relu}\n  - {name: conv, block: c, n: 2}\n"),
                       "the instance name 'conv' is also the name of a layer"));
  EXPECT_TRUE(contains(msg("blocks:\n  c:\n    params: {in: 1}\n    layers: [{op: relu}]\n", "  - {name: x, block: c}\n"),
                       "'in' cannot be a parameter name"));
  EXPECT_TRUE(contains(msg("blocks:\n  c:\n    layer: [{op: relu}]\n", "  - {name: x, block: c}\n"), "did you mean 'layers'?"));
  EXPECT_TRUE(contains(msg("blocks:\n  c:\n    layers: []\n", "  - {name: x, block: c}\n"), "must be a non-empty list"));
  EXPECT_TRUE(contains(msg("", "  - {name: x, op: conv, out: \"${n}\", kernel: 1}\n"), "'${n}' is used outside a block"));
  EXPECT_TRUE(contains(msg("", "  - {name: x, op: relu, from: \"${in}\"}\n"), "'${in}' is used outside a block"));
  EXPECT_TRUE(contains(msg(conv, "  - {name: x, block: c, n: \"${n\"}\n"), "without a closing"));
  EXPECT_TRUE(contains(msg("blocks:\n  c:\n    params: {w: same}\n    layers: [{op: conv, out: \"${w * 2}\", kernel: 1}]\n",
                           "  - {name: x, block: c}\n"),
                       "computes with parameter 'w', which is 'same', not a number"));
  EXPECT_TRUE(contains(msg("blocks: [1]\n", "  - {op: relu}\n"), "'blocks' must be a mapping"));
}

TEST(Blocks, ExpansionIsBounded) {
  // 4096 x 4096 layers: refused with a message, quickly, not built.
  auto d = errors_of(std::string(kHeader) + R"(blocks:
  one:
    layers: [{op: relu}]
  many:
    layers:
      - {name: r, block: one, repeat: 4096}
layers:
  - {name: m, block: many, repeat: 4096}
  - {op: flatten}
  - {op: linear, out: 10}
)");
  ASSERT_FALSE(d.empty());
  EXPECT_TRUE(contains(d.front().message, "expands to more than 4,096 layers")) << d.front().message;
}

// A block nothing instantiates is a warning at its definition (a layer line probably lost its
// block:); one used only inside an unused block is unused too.
TEST(Blocks, AnUnusedBlockIsAWarning) {
  Spec s = parse_spec(R"(name: ub
input: [3, 8, 8]
classes: 10
blocks:
  unused:
    params: {out: 8}
    layers:
      - {block: inner}
      - {op: conv, out: "${out}", kernel: 3, pad: 1}
  inner:
    layers: [{op: relu}]
  used:
    layers: [{op: relu}]
layers:
  - {block: used, name: r}
  - {op: flatten}
  - {op: linear, out: 10}
)",
                      "ub.yaml");
  ASSERT_EQ(s.graph.warnings().size(), 2u);
  EXPECT_EQ(s.graph.warnings()[0].format(),
            "ub.yaml:5:3: warning: block 'unused' is defined but never used\n"
            "    hint: remove it from blocks:, or use it in a layer line: {block: unused}\n");
  EXPECT_EQ(s.graph.warnings()[1].message, "block 'inner' is defined but never used");
  EXPECT_EQ(s.graph.warnings()[1].loc.line, 10);
}

// The zoo: written with blocks, each one's parameter count the published figure.
TEST(Blocks, ZooParameterCounts) {
  const std::pair<const char*, std::int64_t> zoo[] = {
      {"resnet18", 11'173'962}, {"vgg16", 14'728'266}, {"mobilenetv2", 2'296'922}, {"resnet56", 855'770}, {"resnet110", 1'730'714}};
  for (const auto& [name, count] : zoo) {
    SCOPED_TRACE(name);
    const std::string path = repo_path(std::string("data/models/") + name + ".yaml");
    Spec s = load_spec(path);
    EXPECT_EQ(s.graph.parameter_count(), count);
    EXPECT_TRUE(s.graph.warnings().empty());
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    const std::string content = text.str();
    const auto lines = std::count(content.begin(), content.end(), '\n');
    EXPECT_LE(lines, 66) << "the zoo's specs stay short: that is what blocks are for";
  }
  // MobileNetV2's depthwise convs and its three kinds of block.
  Spec m = load_spec(repo_path("data/models/mobilenetv2.yaml"));
  EXPECT_EQ(m.graph.find("layers.3.conv2")->attrs.groups, 144);
  EXPECT_EQ(m.graph.find("layers.3.conv2")->shape, Shape::chw(144, 16, 16));
  EXPECT_EQ(m.graph.find("layers.3.add"), nullptr);           // stride 2: no residual
  EXPECT_NE(m.graph.find("layers.4.add"), nullptr);           // identity
  EXPECT_NE(m.graph.find("layers.10.shortcut.0"), nullptr);   // 1x1 conv shortcut
  Spec v = load_spec(repo_path("data/models/vgg16.yaml"));
  EXPECT_EQ(v.graph.find("features.41")->op, OpKind::batchnorm);
  EXPECT_EQ(v.graph.find("features.43")->shape, Shape::chw(512, 1, 1));
}

}  // namespace
}  // namespace kiln::test
