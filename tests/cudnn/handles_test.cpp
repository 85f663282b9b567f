// The CUDA backend's ownership rules, on the host (no GPU needed): the owning handle
// template destroys exactly once, moves transfer ownership, and a failed creation (here:
// no device) throws kiln's DeviceError and leaves nothing to destroy. Error context
// (LayerScope) nests without copying strings.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda/check.hpp"
#include "cuda/device_context.hpp"
#include "cuda/handles.hpp"
#include "kiln/kiln.hpp"

namespace kiln::test {
namespace {

std::vector<int>& destroyed() {
  static std::vector<int> log;
  return log;
}

struct FakeTraits {
  using Raw = int;  // 0 is "no handle", like a null cudnnHandle_t
  static void destroy(Raw h) noexcept { destroyed().push_back(h); }
};
using Fake = cuda::UniqueHandle<FakeTraits>;

TEST(CudaHandles, DestroyedExactlyOnce) {
  destroyed().clear();
  { Fake empty; }
  EXPECT_TRUE(destroyed().empty()) << "an empty handle destroys nothing";
  { Fake h(7); EXPECT_EQ(h.get(), 7); EXPECT_TRUE(static_cast<bool>(h)); }
  EXPECT_EQ(destroyed(), (std::vector<int>{7}));
}

TEST(CudaHandles, MoveTransfersOwnership) {
  destroyed().clear();
  {
    Fake a(1);
    Fake b(std::move(a));
    EXPECT_FALSE(static_cast<bool>(a));  // NOLINT(bugprone-use-after-move): the moved-from state is the point
    EXPECT_EQ(b.get(), 1);
    Fake c(2);
    c = std::move(b);  // c's own handle (2) is destroyed now, 1 when c goes
    EXPECT_EQ(destroyed(), (std::vector<int>{2}));
  }
  EXPECT_EQ(destroyed(), (std::vector<int>{2, 1}));
}

TEST(CudaHandles, ResetDestroysOnceAndEmpties) {
  destroyed().clear();
  Fake h(3);
  h.reset();
  h.reset();
  EXPECT_FALSE(static_cast<bool>(h));
  EXPECT_EQ(destroyed(), (std::vector<int>{3}));
}

// Members are destroyed in reverse order of declaration: the rule CudaExecutor, DeviceContext
// and ConvPlanCache rely on (handles declared before the plans that use them).
TEST(CudaHandles, DeclaredFirstIsDestroyedLast) {
  destroyed().clear();
  struct Owner {
    Fake handle{10};  // like DeviceContext: first
    Fake arena{20};
    Fake plans{30};   // like ConvPlanCache: after both
  };
  { Owner o; }
  EXPECT_EQ(destroyed(), (std::vector<int>{30, 20, 10}));
}

TEST(CudaHandles, CreationWithoutADeviceThrowsKilnsError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present: creation succeeds";
  try {
    cuda::CudnnHandle h = cuda::make_cudnn_handle(nullptr);
    FAIL() << "cudnnCreate succeeded without a device";
  } catch (const DeviceError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cuDNN error"), std::string::npos) << m;
    EXPECT_NE(m.find("cudnnCreate"), std::string::npos) << m;
    EXPECT_EQ(e.exit_code(), ExitCode::runtime);
  }
  // The device context checks for a device before creating anything, and says so in kiln's words.
  try {
    cuda::DeviceContext context(detail::CudaOptions{});
    FAIL() << "a device context without a device";
  } catch (const DeviceError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--device cuda: no CUDA device"), std::string::npos) << m;
    EXPECT_NE(m.find("train on the CPU with --device cpu"), std::string::npos) << m;
  }
}

// bf16 and fp16 are CUDA plans like fp32: without a device, the same message as fp32's.
TEST(CudaHandles, DeviceContextInHalfPrecisionNeedsADeviceLikeFp32) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  for (DType dtype : {DType::f16, DType::bf16}) {
    detail::CudaOptions o;
    o.dtype = dtype;
    try {
      cuda::DeviceContext context(o);
      FAIL() << to_string(dtype) << " without a device";
    } catch (const DeviceError& e) {
      EXPECT_NE(std::string(e.what()).find("--device cuda: no CUDA device"), std::string::npos) << e.what();
    }
  }
}

TEST(CudaErrors, LayerScopeNestsAndNamesTheLayerInErrors) {
  EXPECT_STREQ(cuda::current_layer(), "");
  const std::string name = "conv1/fwd";
  {
    cuda::LayerScope outer(name.c_str());
    EXPECT_EQ(cuda::current_layer(), name.c_str()) << "the scope keeps the pointer, it copies nothing";
    {
      cuda::LayerScope inner("the loss");
      EXPECT_STREQ(cuda::current_layer(), "the loss");
    }
    EXPECT_STREQ(cuda::current_layer(), "conv1/fwd");
    try {
      KILN_CUDA_CHECK(cudaErrorInvalidValue);
      FAIL() << "no throw";
    } catch (const DeviceError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("cudaErrorInvalidValue"), std::string::npos) << m;
      EXPECT_NE(m.find("while running conv1/fwd"), std::string::npos) << m;
    }
  }
  EXPECT_STREQ(cuda::current_layer(), "");
}

}  // namespace
}  // namespace kiln::test
