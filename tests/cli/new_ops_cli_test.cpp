// `kiln check` on groupnorm, mul and upsample: their rows (output shape, parameters, FLOPs)
// and a groupnorm whose groups do not divide its channels, as a user sees them.
#include <gtest/gtest.h>

#include <string>

#include "run.hpp"

namespace kiln::test {
namespace {

// The table row of layer `name` with its columns one space apart ("" when absent).
std::string row(const std::string& out, const std::string& name) {
  std::size_t at = out.find("\n" + name + " ");
  if (at == std::string::npos) return "";
  const std::string line = out.substr(at + 1, out.find('\n', at + 1) - at - 1);
  std::string collapsed;
  for (char ch : line)
    if (ch != ' ' || (!collapsed.empty() && collapsed.back() != ' ')) collapsed += ch;
  return collapsed;
}

TEST(CliCheck, NewOpsShowShapesParamsAndFlops) {
  const std::string path = src("tests/specs/se_gate.yaml");
  CliRun r = run_kiln("check " + path);
  EXPECT_EQ(r.code, 0) << r.err;
  // groupnorm: weight and bias of 8 channels, 2 FLOPs per element of 8x16x16.
  EXPECT_EQ(row(r.out, "gn1"), "gn1 groupnorm 8x16x16 16 4.10K 1.0 MiB") << r.out;
  // mul: one multiply per element; upsample copies, 0 FLOPs.
  EXPECT_EQ(row(r.out, "se"), "se mul 8x16x16 0 2.05K 1.0 MiB") << r.out;
  EXPECT_EQ(row(r.out, "up"), "up upsample 8x32x32 0 0 4.0 MiB") << r.out;
  EXPECT_TRUE(has(r.out, "ok: ")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(CliCheck, GroupnormGroupsThatDoNotDivide) {
  const std::string path = src("tests/specs/groupnorm_groups.yaml");
  CliRun r = run_kiln("check " + path);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(has(r.err, path + ":7:5: error: layer 'gn1' (groupnorm, 3 groups): groups: 3 does not divide the 32 "
                                "channels of its input 'conv1' (32x32x32)"))
      << r.err;
  EXPECT_TRUE(has(r.err, "32 channels / 3 groups = 10 remainder 2")) << r.err;
  EXPECT_TRUE(has(r.err, "hint: use a divisor of 32: 1, 2, 4, 8, 16 or 32")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

}  // namespace
}  // namespace kiln::test
