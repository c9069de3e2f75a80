#pragma once

// Helpers shared by the libFuzzer targets in tests/fuzz/ (see README.md).

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace mosaic::fuzz {

/// The fuzzer's bytes as a file: an anonymous memory file (memfd) named by
/// its /proc/self/fd path, for parsers that open a path. Closed on scope
/// exit; nothing is written to disk.
class memory_file {
public:
  explicit memory_file(std::span<const uint8_t> bytes) {
    fd_ = ::memfd_create("mosaic-fuzz", MFD_CLOEXEC);
    if (fd_ < 0)
      return;
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n <= 0)
        break;
      done += static_cast<size_t>(n);
    }
  }
  memory_file(const memory_file&) = delete;
  memory_file& operator=(const memory_file&) = delete;
  ~memory_file() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::filesystem::path path() const { return "/proc/self/fd/" + std::to_string(fd_); }

private:
  int fd_ = -1;
};

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits the input at the first occurrence of `sep` (the rest is empty
/// when there is none): one input feeds two parsers.
inline std::pair<std::string_view, std::string_view> split_once(std::string_view text,
                                                                std::string_view sep) {
  size_t at = text.find(sep);
  if (at == std::string_view::npos)
    return {text, {}};
  return {text.substr(0, at), text.substr(at + sep.size())};
}

} // namespace mosaic::fuzz
