// The op tables (the graph's and the CPU backend's) cannot be wrong silently: an entry out
// of its slot or a missing function is named by the start-up check.
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
  EXPECT_EQ(names.back(), "concat");
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

TEST(CpuOpTable, SupportsFp32InNchwOnly) {
  const Spec spec = parse_spec("input: [3, 8, 8]\nclasses: 10\nlayers:\n  - {op: conv, out: 4, kernel: 3}\n"
                               "  - {op: flatten}\n  - {op: linear, out: 10}\n");
  for (const Layer& layer : spec.graph.layers()) {
    const CpuOp& entry = detail::cpu_op(layer.op);
    EXPECT_EQ(entry.supports(layer, DType::f32, Layout::nchw), std::nullopt) << layer.name;
    EXPECT_EQ(entry.supports(layer, DType::bf16, Layout::nchw), "the CPU backend runs fp32 only, got bf16") << layer.name;
    EXPECT_EQ(entry.supports(layer, DType::f16, Layout::nchw), "the CPU backend runs fp32 only, got fp16") << layer.name;
    EXPECT_EQ(entry.supports(layer, DType::f32, Layout::nhwc), "the CPU backend runs the nchw layout only, got nhwc")
        << layer.name;
  }
}

}  // namespace
}  // namespace kiln::test
