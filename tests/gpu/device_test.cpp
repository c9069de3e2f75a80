#include "gpu/device.hpp"

#include <gtest/gtest.h>

namespace mosaic::gpu {
namespace {

TEST(gpu_device, lists_every_visible_device) {
  auto n = device_count();
  ASSERT_TRUE(n) << n.err().to_string();
  if (*n == 0)
    GTEST_SKIP() << "no CUDA device on this machine";
  auto devices = list_devices();
  ASSERT_TRUE(devices) << devices.err().to_string();
  ASSERT_EQ(static_cast<int>(devices->size()), *n);
  for (const auto& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.sm_major, 7);
    EXPECT_GT(d.total_memory, size_t{1} << 30);
  }
}

TEST(gpu_device, cuda_errors_name_the_call_and_place) {
  auto err = cuda_error(2 /* cudaErrorMemoryAllocation */, "cudaMalloc", "x.cu", 7);
  EXPECT_EQ(err.code, errc::out_of_memory);
  EXPECT_NE(err.message.find("cudaMalloc failed"), std::string::npos);
  EXPECT_NE(err.message.find("x.cu:7"), std::string::npos);
}

} // namespace
} // namespace mosaic::gpu
