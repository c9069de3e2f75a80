#pragma once

// Reads a whole small file (a model's JSON files) with its size checked
// first, so that a huge or endless file is refused before it is read.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

/// The file's bytes. Missing → not_found; larger than max_bytes →
/// invalid_argument, "<path> is N bytes; <limit_text>"; unreadable →
/// io_error.
result<std::string> read_bounded_file(const std::filesystem::path& path, size_t max_bytes,
                                      std::string_view limit_text);

} // namespace mosaic
