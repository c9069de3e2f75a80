#include "gpu/device.hpp"

#include <cuda_runtime.h>

namespace mosaic::gpu {

error cuda_error(int status, const char* what, const char* file, int line) {
  auto code = static_cast<cudaError_t>(status);
  std::string msg = std::string{what} + " failed: " + cudaGetErrorName(code) + " (" +
                    cudaGetErrorString(code) + ") at " + file + ":" + std::to_string(line);
  errc category = code == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::unavailable;
  return error{category, std::move(msg)};
}

result<int> device_count() {
  int n = 0;
  cudaError_t st = cudaGetDeviceCount(&n);
  // No driver or no device is the normal state of a CPU-only machine;
  // anything else (a driver that fails to start, devices not ready, ...)
  // is an error the operator must see, not "no GPU".
  if (st == cudaErrorNoDevice || st == cudaErrorInsufficientDriver)
    return 0;
  if (st != cudaSuccess)
    return cuda_error(st, "cudaGetDeviceCount", __FILE__, __LINE__);
  return n;
}

result<std::vector<device_info>> list_devices() {
  auto n = device_count();
  if (!n)
    return std::move(n).err();
  std::vector<device_info> out;
  for (int i = 0; i < *n; ++i) {
    cudaDeviceProp prop{};
    if (auto st = cudaGetDeviceProperties(&prop, i); st != cudaSuccess)
      return cuda_error(st, "cudaGetDeviceProperties", __FILE__, __LINE__);
    out.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return out;
}

} // namespace mosaic::gpu
