// The op tables (the graph's and the CPU backend's) and the spec keys cannot be wrong
// silently: an entry out of its slot, a missing function, or a key whose field does not
// hold its type is named by the start-up check.
#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu_ops.hpp"
#include "graph/op_def.hpp"
#include "test_util.hpp"

namespace kiln::test {
namespace {

using detail::CpuOp;
using detail::KeyDef;
using detail::KeyType;
using detail::OpDef;

// The message of the std::logic_error that `f` throws ("" and a failure if none).
template <class F>
std::string logic_error_of(F f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a std::logic_error";
  return {};
}

std::vector<OpDef> graph_table() {
  auto table = detail::op_table();
  return {table.begin(), table.end()};
}

std::vector<CpuOp> cpu_table() {
  auto table = detail::cpu_op_table();
  return {table.begin(), table.end()};
}

TEST(OpTable, EveryOpSitsInTheSlotOfItsKind) {
  ASSERT_EQ(detail::op_table().size(), detail::kOpCount);
  ASSERT_EQ(detail::cpu_op_table().size(), detail::kOpCount);
  for (std::size_t slot = 0; slot < detail::kOpCount; ++slot) {
    EXPECT_EQ(static_cast<std::size_t>(detail::op_table()[slot].kind), slot);
    EXPECT_EQ(static_cast<std::size_t>(detail::cpu_op_table()[slot].kind), slot);
  }
  EXPECT_EQ(detail::op_def(OpKind::concat).name, "concat");
  EXPECT_EQ(detail::op_def(OpKind::input).name, "input");
  EXPECT_NO_THROW(detail::check_op_table(detail::op_table()));
  EXPECT_NO_THROW(detail::check_cpu_op_table(detail::cpu_op_table()));
}

TEST(OpTable, OpNamesCoverEveryDeclarableOp) {
  const auto names = op_names();
  ASSERT_EQ(names.size(), detail::kOpCount - 1);  // all but the model input
  EXPECT_EQ(names.front(), "conv");
  EXPECT_EQ(names.back(), "upsample");
  for (std::string_view name : names) EXPECT_EQ(op_name(*op_from_name(name)), name);
  EXPECT_EQ(op_from_name("input"), std::nullopt);
  EXPECT_EQ(op_from_name("convolution"), std::nullopt);
}

TEST(OpTable, MisSlottedEntryIsNamed) {
  auto table = graph_table();
  std::swap(table[2], table[3]);  // maxpool and avgpool
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }),
            "op table: slot 2 ('avgpool') holds OpKind 3; each entry must sit at the index of its OpKind");
}

TEST(OpTable, MissingFunctionIsNamed) {
  auto table = graph_table();
  table[1].infer = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }), "op table: slot 1 ('conv') has no shape rule (infer)");
  table = graph_table();
  table[7].backward_needs = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }),
            "op table: slot 7 ('relu') has no backward_needs function");
  table = graph_table();
  table[16].params = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }),
            "op table: slot 16 ('linear') has parameters but no params function");
  table = graph_table();
  table[4].name = {};
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }), "op table: slot 4 ('') has no name");
}

TEST(OpTable, TableOfTheWrongSizeIsNamed) {
  auto table = graph_table();
  table.pop_back();
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }),
            fmt::format("op table: {} entries for {} OpKinds", detail::kOpCount - 1, detail::kOpCount));
}

TEST(OpTable, MisTypedKeyOfAnOpIsNamed) {
  // `eps` declared an integer but pointing at a double: the parser would have nothing to write.
  constexpr KeyDef kBadKeys[] = {{.name = "eps", .type = KeyType::integer, .field = &Attrs::eps}};
  static_assert(!detail::key_fields_fit(kBadKeys));
  auto table = graph_table();
  table[6].keys = kBadKeys;
  EXPECT_EQ(logic_error_of([&] { detail::check_op_table(table); }),
            "op table: slot 6 ('batchnorm'): key 'eps' is declared integer but its field is double");
}

TEST(CpuOpTable, MisSlottedEntryIsNamed) {
  auto table = cpu_table();
  std::swap(table[7], table[8]);  // relu and leaky_relu
  EXPECT_EQ(logic_error_of([&] { detail::check_cpu_op_table(table); }),
            "CPU op table: slot 7 ('relu') holds the entry of OpKind 8 ('leaky_relu'); each entry must sit at the index "
            "of its OpKind");
}

TEST(CpuOpTable, MissingFunctionIsNamed) {
  auto table = cpu_table();
  table[1].forward = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_cpu_op_table(table); }), "CPU op table: slot 1 ('conv') has no forward kernel");
  table = cpu_table();
  table[18].backward = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_cpu_op_table(table); }),
            "CPU op table: slot 18 ('concat') has no backward kernel");
  table = cpu_table();
  table[0].supports = nullptr;
  EXPECT_EQ(logic_error_of([&] { detail::check_cpu_op_table(table); }),
            "CPU op table: slot 0 ('input') has no supports function");
  table = cpu_table();
  table.pop_back();
  EXPECT_EQ(logic_error_of([&] { detail::check_cpu_op_table(table); }),
            fmt::format("CPU op table: {} entries for {} OpKinds", detail::kOpCount - 1, detail::kOpCount));
}

TEST(CpuOpTable, SupportsEveryDtypeInBothLayouts) {
  const Spec spec = parse_spec("input: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: conv, out: 4, kernel: 3}\n"
                               "  - {op: flatten}\n  - {op: linear, out: 10}\n");
  for (const Layer& layer : spec.graph.layers()) {
    const CpuOp& entry = detail::cpu_op(layer.op);
    EXPECT_EQ(entry.supports(layer, DType::f32, Layout::nchw), std::nullopt) << layer.name;
    EXPECT_EQ(entry.supports(layer, DType::bf16, Layout::nchw), std::nullopt) << layer.name;  // emulated
    EXPECT_EQ(entry.supports(layer, DType::f16, Layout::nhwc), std::nullopt) << layer.name;
    EXPECT_EQ(entry.supports(layer, DType::f32, Layout::nhwc), std::nullopt) << layer.name;
    EXPECT_EQ(entry.supports(layer, static_cast<DType>(9), Layout::nchw), "the CPU backend runs fp32, bf16 and fp16, got dtype 9")
        << layer.name;
  }
}

TEST(CpuOpTable, ARefusedLayerIsABuildErrorNamingIt) {
  const Spec spec = parse_spec("input: [3, 8, 8]\nclasses: 10\nlayers:\n  - {name: c1, op: conv, out: 4, kernel: 3}\n"
                               "  - {op: flatten}\n  - {name: fc, op: linear, out: 10}\n",
                               "m.yaml");
  EXPECT_NO_THROW(detail::require_cpu_support(spec.graph, DType::f32, Layout::nchw));
  EXPECT_NO_THROW(detail::require_cpu_support(spec.graph, DType::bf16, Layout::nchw));
  try {
    detail::require_cpu_support(spec.graph, static_cast<DType>(9), Layout::nchw);  // no op runs it
    FAIL() << "an unknown dtype on the CPU was accepted";
  } catch (const GraphError& e) {
    ASSERT_EQ(e.diagnostics().size(), 3u);  // conv, flatten, linear
    const Diagnostic& first = e.diagnostics()[0];
    EXPECT_EQ(first.layer, "c1");
    EXPECT_EQ(first.loc.line, 4);
    EXPECT_EQ(first.message, "the CPU backend cannot run this layer: the CPU backend runs fp32, bf16 and fp16, got dtype 9");
  }
}

TEST(KeyTable, MisTypedKeyIsNamed) {
  // A number key pointed at an integer field, the mistake a new key copied from another makes.
  constexpr KeyDef kMisTyped[] = {
      {.name = "p", .type = KeyType::number, .field = &Attrs::p},
      {.name = "groups", .type = KeyType::number, .field = &Attrs::groups},
  };
  static_assert(!detail::key_fields_fit(kMisTyped));
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("dropout", kMisTyped); }),
            "dropout: key 'groups' is declared number but its field is std::int64_t");

  constexpr KeyDef kPaddingAsPair[] = {{.name = "pad", .type = KeyType::int_pair, .field = &Attrs::pad}};
  static_assert(!detail::key_fields_fit(kPaddingAsPair));
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("conv", kPaddingAsPair); }),
            "conv: key 'pad' is declared int_pair but its field is Padding");

  // `from` fills LayerDef::inputs; no Attrs field takes a names key.
  constexpr KeyDef kNames[] = {{.name = "from", .type = KeyType::names, .field = &Attrs::out}};
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("add", kNames); }),
            "add: key 'from' is declared names but its field is std::int64_t");
}

TEST(KeyTable, KeyWithoutAFieldIsNamed) {
  constexpr KeyDef kNoField[] = {{.name = "slope", .type = KeyType::number, .field = std::monostate{}}};
  static_assert(!detail::key_fields_fit(kNoField));
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("leaky_relu", kNoField); }),
            "leaky_relu: key 'slope' is declared number but its field is no field");
  constexpr KeyDef kNullField[] = {
      {.name = "slope", .type = KeyType::number, .field = static_cast<double Attrs::*>(nullptr)}};
  static_assert(!detail::key_fields_fit(kNullField));
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("leaky_relu", kNullField); }),
            "leaky_relu: key 'slope' is declared number but its field is a null member pointer");
}

TEST(KeyTable, KeyDeclaredTwiceIsNamed) {
  constexpr KeyDef kTwice[] = {
      {.name = "p", .type = KeyType::number, .field = &Attrs::p},
      {.name = "p", .type = KeyType::number, .field = &Attrs::factor},
  };
  EXPECT_EQ(logic_error_of([&] { detail::check_key_fields("dropout", kTwice); }), "dropout: key 'p' appears twice");
}

TEST(KeyTable, WriteKeyWritesOnlyItsField) {
  Attrs attrs;
  detail::write_key<KeyType::integer>(attrs, {.name = "features", .type = KeyType::integer, .field = &Attrs::in}, 7);
  EXPECT_EQ(attrs.in, 7);
  EXPECT_EQ(attrs.out, 0);
  EXPECT_EQ(attrs.groups, 1);
  detail::write_key<KeyType::number>(attrs, {.name = "train_epochs", .type = KeyType::number, .field = &Attrs::train_epochs},
                                     2.5);
  EXPECT_EQ(attrs.train_epochs, 2.5);
  EXPECT_EQ(attrs.lr_scale, 1.0);
  // A key whose field does not take its type is never written (the start-up check reports it).
  const KeyDef mis_typed{.name = "groups", .type = KeyType::number, .field = &Attrs::groups};
  EXPECT_EQ(logic_error_of([&] { detail::write_key<KeyType::number>(attrs, mis_typed, 3.0); }),
            "spec key 'groups' (number) cannot be written to its field (std::int64_t)");
  EXPECT_EQ(attrs.groups, 1);
}

// Every key of every op, each given a value other than its default, lands in its own field.
TEST(KeyTable, EverySpecKeyLandsInItsField) {
  const Spec spec = parse_spec(R"(input: [4, 8, 8]
classes: 10
layers:
  - {name: c, op: conv, out: 6, kernel: [3, 1], stride: [1, 1], pad: [2, 0], dilation: [2, 1], groups: 2, bias: false,
     in: 4, frozen: true, lr_scale: 0.5, train_epochs: 2}
  - {name: c2, op: conv, out: 6, kernel: 1, init: dirac}
  - {name: bn, op: batchnorm, eps: 0.001, momentum: 0.2, weight: false, bias: false, features: 6, lr_scale: 2}
  - {name: mp, op: maxpool, kernel: 2, stride: 2, pad: 1, ceil: true}
  - {name: lr, op: leaky_relu, slope: 0.2}
  - {name: d, op: dropout, p: 0.25}
  - {name: s, op: scale, factor: 3}
  - {name: ap, op: avgpool, kernel: [2, 1], stride: [1, 1]}
  - {name: f, op: flatten}
  - {name: fc, op: linear, out: 10, in: 120, bias: false, frozen: true}
)");
  const Graph& g = spec.graph;
  const Attrs& conv = g.find("c")->attrs;
  EXPECT_EQ(conv.out, 6);
  EXPECT_EQ(conv.kernel, (Hw{3, 1}));
  EXPECT_EQ(conv.stride, (Hw{1, 1}));
  EXPECT_EQ(conv.pad, Padding::hw(2, 0));
  EXPECT_EQ(conv.dilation, (Hw{2, 1}));
  EXPECT_EQ(conv.groups, 2);
  EXPECT_FALSE(conv.bias);
  EXPECT_EQ(conv.in, 4);
  EXPECT_EQ(conv.init, Attrs::Init::standard);
  EXPECT_TRUE(conv.frozen);
  EXPECT_EQ(conv.lr_scale, 0.5);
  EXPECT_EQ(conv.train_epochs, 2.0);
  EXPECT_EQ(g.find("c2")->attrs.init, Attrs::Init::dirac);
  EXPECT_FALSE(g.find("c2")->attrs.frozen);
  const Attrs& bn = g.find("bn")->attrs;
  EXPECT_EQ(bn.eps, 0.001);
  EXPECT_EQ(bn.momentum, 0.2);
  EXPECT_FALSE(bn.weight);
  EXPECT_FALSE(bn.bias);
  EXPECT_EQ(bn.in, 6);
  EXPECT_FALSE(bn.frozen);
  EXPECT_EQ(bn.lr_scale, 2.0);
  EXPECT_EQ(bn.train_epochs, std::nullopt);
  const Attrs& pool = g.find("mp")->attrs;
  EXPECT_EQ(pool.kernel, (Hw{2, 2}));
  EXPECT_EQ(pool.stride, (Hw{2, 2}));
  EXPECT_EQ(pool.pad, Padding::all(1));
  EXPECT_TRUE(pool.ceil);
  EXPECT_FALSE(pool.frozen);
  EXPECT_EQ(g.find("lr")->attrs.slope, 0.2);
  EXPECT_EQ(g.find("d")->attrs.p, 0.25);
  EXPECT_EQ(g.find("s")->attrs.factor, 3.0);
  const Attrs& fc = g.find("fc")->attrs;
  EXPECT_EQ(fc.out, 10);
  EXPECT_EQ(fc.in, 120);
  EXPECT_FALSE(fc.bias);
  EXPECT_TRUE(fc.frozen);
}

}  // namespace
}  // namespace kiln::test
