// groupnorm, mul and upsample built from specs and from the builder, and the diagnostics of
// bad ones. Their kernels are tested in BackendOps (tests/ops/backend_ops_{groupnorm,mul,
// upsample}_test.cpp).
#include <gtest/gtest.h>

#include "test_util.hpp"

namespace kiln::test {
namespace {

// ---- specs ------------------------------------------------------------------------------

const char* kHeader = "name: t\ninput: [8, 6, 5]\nclasses: 10\nlayers:\n";
const char* kTail = "  - {op: flatten}\n  - {op: linear, out: 10}\n";

std::string spec(const std::string& layers) { return std::string(kHeader) + layers + kTail; }

TEST(NewOpsSpec, EachOpBuildsFromYaml) {
  Graph g = parse_spec(spec("  - {name: gn, op: groupnorm, groups: 4, eps: 1e-3}\n"
                                  "  - {name: pool, op: global_avgpool}\n"
                                  "  - {name: vec, op: flatten}\n"
                                  "  - {name: gate, op: sigmoid}\n"
                                  "  - {name: se, op: mul, from: [gn, gate]}\n"
                                  "  - {name: se2, op: mul, from: [se, pool]}\n"
                                  "  - {name: se3, op: mul, from: [se2, gn]}\n"
                                  "  - {name: up, op: upsample, scale: [2, 3]}\n"))
                .graph;
  const Layer& gn = *g.find("gn");
  EXPECT_EQ(gn.op, OpKind::groupnorm);
  EXPECT_EQ(gn.attrs.groups, 4);
  EXPECT_DOUBLE_EQ(gn.attrs.eps, 1e-3);
  EXPECT_EQ(gn.shape, Shape::chw(8, 6, 5));
  ASSERT_EQ(gn.params.size(), 2u);
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[0])].name, "gn.weight");
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[1])].name, "gn.bias");
  EXPECT_EQ(g.params()[static_cast<std::size_t>(gn.params[0])].dims, std::vector<std::int64_t>{8});
  EXPECT_EQ(gn.flops, 2 * 8 * 6 * 5);
  EXPECT_EQ(g.find("se")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se2")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se3")->shape, Shape::chw(8, 6, 5));
  EXPECT_EQ(g.find("se")->flops, 8 * 6 * 5);
  const Layer& up = *g.find("up");
  EXPECT_EQ(up.attrs.scale, (Hw{2, 3}));
  EXPECT_EQ(up.shape, Shape::chw(8, 12, 15));
  EXPECT_EQ(up.flops, 0);
  EXPECT_EQ(op_name(OpKind::groupnorm), "groupnorm");
  EXPECT_EQ(op_from_name("mul"), OpKind::mul);
  EXPECT_EQ(op_from_name("upsample"), OpKind::upsample);
}

TEST(NewOpsSpec, BuilderMatchesYaml) {
  GraphBuilder b("t", Shape::chw(8, 6, 5), 10);
  b.add(layers::groupnorm(2).named("gn"))
      .add(layers::global_avgpool().named("pool"))
      .add(layers::mul({"gn", "pool"}).named("se"))
      .add(layers::upsample(2).named("up"))
      .add(layers::flatten())
      .add(layers::linear(10));
  Graph g = b.build();
  EXPECT_EQ(g.find("gn")->attrs.groups, 2);
  EXPECT_EQ(g.find("up")->shape, Shape::chw(8, 12, 10));
}

TEST(NewOpsSpec, GroupsMustDivideChannels) {
  auto d = only_error(spec("  - {name: gn, op: groupnorm, groups: 3}\n"));
  EXPECT_EQ(d.layer, "gn");
  EXPECT_EQ(d.loc.line, 5);
  EXPECT_EQ(d.context, "groupnorm, 3 groups");
  EXPECT_EQ(d.message, "groups: 3 does not divide the 8 channels of its input 'input' (8x6x5)");
  ASSERT_EQ(d.notes.size(), 1u);
  EXPECT_EQ(d.notes[0], "8 channels / 3 groups = 2 remainder 2");
  EXPECT_EQ(d.hint, "use a divisor of 8: 1, 2, 4 or 8");
}

TEST(NewOpsSpec, GroupnormNeedsGroupsAndPositiveEps) {
  auto missing = only_error(spec("  - {name: gn, op: groupnorm}\n"));
  EXPECT_EQ(missing.message, "missing required key 'groups'");
  EXPECT_EQ(missing.hint, "groupnorm needs: groups");
  auto zero = only_error(spec("  - {name: gn, op: groupnorm, groups: 0}\n"));
  EXPECT_EQ(zero.message, "groups must be at least 1, got 0");
  auto eps = only_error(spec("  - {name: gn, op: groupnorm, groups: 2, eps: 0}\n"));
  EXPECT_EQ(eps.message, "eps must be positive, got 0");
}

TEST(NewOpsSpec, MulShapesMustMatchOrBroadcastPerChannel) {
  auto d = only_error(spec("  - {name: a, op: conv, out: 4, kernel: 1}\n"
                           "  - {name: m, op: mul, from: [input, a]}\n"));
  EXPECT_EQ(d.layer, "m");
  EXPECT_EQ(d.loc.line, 6);
  EXPECT_EQ(d.message,
            "cannot multiply 'input' (8x6x5) by 'a' (4x6x5): the shapes differ and the second is not one value per "
            "channel of the first");
  EXPECT_EQ(d.hint, "the second input must be 8x6x5 or one value per channel (8x1x1 or 8 features)");
}

TEST(NewOpsSpec, MulGateFirstSaysToSwap) {
  auto d = only_error(spec("  - {name: pool, op: global_avgpool}\n"
                           "  - {name: m, op: mul, from: [pool, input]}\n"));
  EXPECT_EQ(d.hint, "the per-channel gate goes second: from: [input, pool]");
}

TEST(NewOpsSpec, MulGateOfWrongWidthSaysHowManyValues) {
  auto d = only_error(spec("  - {name: pool, op: global_avgpool}\n"
                           "  - {name: vec, op: flatten}\n"
                           "  - {name: fc, op: linear, out: 3}\n"
                           "  - {name: m, op: mul, from: [input, fc]}\n"));
  EXPECT_EQ(d.message,
            "cannot multiply 'input' (8x6x5) by 'fc' (3): the shapes differ and the second is not one value per channel "
            "of the first");
  EXPECT_EQ(d.hint, "a gate over 'input' needs 8 values, one per channel; make it with linear, out: 8");
}

TEST(NewOpsSpec, MulTakesExactlyTwoInputs) {
  auto d = only_error(spec("  - {name: m, op: mul, from: [input, input, input]}\n"));
  EXPECT_EQ(d.message, "mul takes exactly 2 inputs, but from: names 3");
}

TEST(NewOpsSpec, UpsampleScaleAndInput) {
  auto zero = only_error(spec("  - {name: up, op: upsample, scale: 0}\n"));
  EXPECT_EQ(zero.layer, "up");
  EXPECT_EQ(zero.message, "scale must be a whole factor of at least 1, got 0");
  EXPECT_EQ(zero.hint,
            "nearest upsampling repeats each pixel scale times; to shrink a feature map, use a pool or a strided conv");
  auto missing = only_error(spec("  - {name: up, op: upsample}\n"));
  EXPECT_EQ(missing.message, "missing required key 'scale'");
  auto vec = errors_of("name: t\ninput: [8, 6, 5]\nclasses: 10\nlayers:\n  - {op: flatten}\n"
                       "  - {name: up, op: upsample, scale: 2}\n  - {op: linear, out: 10}\n");
  ASSERT_FALSE(vec.empty());
  EXPECT_EQ(vec[0].message,
            "expects a C x H x W input (4-D with the batch), but its input 'flatten1' is a vector of 240 features (2-D "
            "with the batch)");
}

}  // namespace
}  // namespace kiln::test
