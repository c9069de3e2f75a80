#pragma once

// Reading, writing and quarantining entry files in a library directory.
//
// Layout of a library directory:
//   <dir>/<key hex>.mkv                 one verified entry per file
//   <dir>/<key hex>.mkv.pin             present while the entry is pinned
//   <dir>/.tmp.<key hex>.<pid>.<random> a write in progress (O_EXCL)
//   <dir>/quarantine/<file>.<ns>        files that failed a check (+ .reason)
//
// Writes are crash-safe: temp file in the same directory, write, fsync,
// rename over the final name, fsync the directory. Concurrent writers of
// one key (threads or processes) each use their own temp name; the last
// rename wins and every rename installs a complete, good file.

#include <filesystem>
#include <string>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "kv/entry_format.hpp"

namespace mosaic::kv {

/// `<dir>/<key hex>.mkv`.
std::filesystem::path entry_path(const std::filesystem::path& dir, const digest& key);
/// True for names of in-progress writes (".tmp.*").
bool is_temp_name(const std::string& filename);

/// Writes `img` under `h` (identity, dtype, times; geometry is taken from
/// `img`) atomically into `dir`. Returns the header as written.
result<entry_header> write_entry(const std::filesystem::path& dir, entry_header h,
                                 const compiled_image& img);

/// Reads and verifies page 0 and the file size (what a start-up scan
/// checks). Does not read the sections.
result<entry_header> read_header(const std::filesystem::path& path);

/// Reads, verifies (header, size, table, every section) and decodes a
/// whole entry. `expected_key`, when given, must match the header.
result<compiled_image> read_entry(const std::filesystem::path& path, entry_header* header_out,
                                  const digest* expected_key = nullptr);

/// Moves `path` into `<dir>/quarantine/` (with a `.reason` file next to
/// it) and returns the new path. Never deletes the bytes.
result<std::filesystem::path> quarantine_file(const std::filesystem::path& dir,
                                              const std::filesystem::path& path,
                                              const std::string& reason);

/// fsync of a directory (after a rename or unlink inside it).
status fsync_dir(const std::filesystem::path& dir);

} // namespace mosaic::kv
