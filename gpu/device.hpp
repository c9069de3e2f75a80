#pragma once

// CUDA device discovery. Every CUDA status becomes a mosaic::error with
// file and line at this boundary.

#include <string>
#include <vector>

#include "engine/error.hpp"

namespace mosaic::gpu {

/// What the runtime reports about one device.
struct device_info {
  int ordinal = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  size_t total_memory = 0; ///< bytes
};

/// Number of visible CUDA devices; 0 (not an error) when the driver is
/// missing or no device is present, so that callers can fall back. Any
/// other CUDA failure is an error naming the call, file and line.
result<int> device_count();

/// Properties of every visible device.
result<std::vector<device_info>> list_devices();

/// Converts a CUDA runtime status to an error naming where it happened.
error cuda_error(int status, const char* what, const char* file, int line);

} // namespace mosaic::gpu
