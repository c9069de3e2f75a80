#include "engine/model/mapped_file.hpp"

#include <cerrno>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mosaic {

namespace {

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

result<mapped_file> mapped_file::open(const std::filesystem::path& path) {
  fd_guard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0)
    return make_error(errno == ENOENT ? errc::not_found : errc::io_error, "cannot open ",
                      path.string(), ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0)
    return make_error(errc::io_error, "cannot stat ", path.string(), ": ", std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return make_error(errc::invalid_argument, path.string(), " is not a regular file");
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0)
    return mapped_file{};
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (p == MAP_FAILED)
    return make_error(errc::io_error, "cannot mmap ", path.string(), ": ", std::strerror(errno));
  return mapped_file{static_cast<const uint8_t*>(p), size};
}

mapped_file::~mapped_file() {
  reset();
}

mapped_file::mapped_file(mapped_file&& other) noexcept
  : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

mapped_file& mapped_file::operator=(mapped_file&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void mapped_file::reset() noexcept {
  if (data_ != nullptr)
    ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

} // namespace mosaic
