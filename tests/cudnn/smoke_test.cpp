#include <gtest/gtest.h>
TEST(CudnnSmoke, Exists) { SUCCEED(); }
