#include <gtest/gtest.h>
#include "kiln/kiln.hpp"
TEST(Smoke, Builds) { EXPECT_EQ(kiln::op_name(kiln::OpKind::conv), "conv"); }
