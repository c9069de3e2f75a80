#pragma once

// Reader and writer for the safetensors format: 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the data region. Offsets are relative to
// the start of the data region. Mosaic accepts F32, F16 and BF16 tensors.

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/mapped_file.hpp"

namespace mosaic {

/// Element types Mosaic reads and writes.
enum class st_dtype : uint8_t { f32, f16, bf16 };

/// "F32", "F16" or "BF16" (the safetensors spelling).
const char* to_string(st_dtype dtype) noexcept;
/// Bytes per element.
size_t dtype_size(st_dtype dtype) noexcept;
/// Parses "F32"/"F16"/"BF16" (also "f16", "bf16", "f32" case-insensitively).
result<st_dtype> parse_dtype(std::string_view name);

/// One tensor's entry in a safetensors header.
struct tensor_info {
  std::string name;
  st_dtype dtype = st_dtype::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0; ///< byte offset in the data region
  uint64_t end = 0;   ///< one past the last byte

  /// Product of the shape (1 for a scalar).
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

/// "[a, b, c]"
std::string shape_to_string(std::span<const int64_t> shape);

/// A validated, memory-mapped safetensors file. Every tensor lies inside
/// the data region, tensors do not overlap, and each tensor's byte size
/// matches its shape and dtype.
class safetensors_file {
public:
  /// Maps and validates `path`. Errors name the tensor or byte offset.
  static result<safetensors_file> open(const std::filesystem::path& path);

  /// Tensors in file order (order of their data offsets).
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  /// The tensor called `name`, or nullptr.
  const tensor_info* find(std::string_view name) const;
  /// The tensor's raw bytes.
  std::span<const uint8_t> raw(const tensor_info& info) const;
  /// The tensor converted to f32 (row-major); not_found if absent.
  result<std::vector<float>> read_f32(std::string_view name) const;
  /// Converts into `out` (must hold numel() floats).
  void read_f32_into(const tensor_info& info, std::span<float> out) const;

  /// The "__metadata__" map (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }
  /// The whole file (header length, header JSON and data).
  std::span<const uint8_t> file_bytes() const { return map_.bytes(); }
  /// Byte offset of the data region in the file (8 + header length).
  uint64_t data_offset() const { return data_offset_; }

private:
  static result<safetensors_file> open_unchecked(const std::filesystem::path& path);

  std::filesystem::path path_;
  mapped_file map_;
  uint64_t data_offset_ = 0;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Builds a safetensors file in memory and writes it atomically (temp file
/// in the same directory, fsync, rename).
class safetensors_writer {
public:
  /// Adds a tensor given as f32, stored as `stored`. invalid_argument if
  /// the name is taken or empty, or data.size() != product of shape.
  status add(std::string name, std::vector<int64_t> shape, std::span<const float> data,
             st_dtype stored = st_dtype::f32);
  /// Sets a "__metadata__" entry.
  void set_metadata(std::string key, std::string value);
  /// Writes the file: header JSON (keys sorted, data in insertion order,
  /// header padded with spaces to a multiple of 8 bytes).
  status write(const std::filesystem::path& path) const;
  /// The file's bytes, as `write` would store them.
  std::vector<uint8_t> serialize() const;

private:
  struct entry {
    std::string name;
    st_dtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<entry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `bytes` to `path` atomically: temp file next to it, fsync,
/// rename, fsync of the directory.
status write_file_atomically(const std::filesystem::path& path, std::span<const uint8_t> bytes);

} // namespace mosaic
