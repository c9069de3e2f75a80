#pragma once

// A read-only memory map of a whole file (RAII: unmapped on destruction).

#include <cstdint>
#include <filesystem>
#include <span>

#include "engine/error.hpp"

namespace mosaic {

class mapped_file {
public:
  /// Maps `path` read-only. An empty file maps to an empty span.
  static result<mapped_file> open(const std::filesystem::path& path);

  mapped_file() = default;
  ~mapped_file();
  mapped_file(mapped_file&& other) noexcept;
  mapped_file& operator=(mapped_file&& other) noexcept;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  /// The file's bytes; valid while this object lives.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }

private:
  mapped_file(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  void reset() noexcept;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

} // namespace mosaic
