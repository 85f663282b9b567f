#include <gtest/gtest.h>
TEST(CliSmoke, Exists) { SUCCEED(); }
