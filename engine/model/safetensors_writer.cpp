#include <cerrno>
#include <cstring>
#include <random>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "engine/model/half.hpp"
#include "engine/model/safetensors.hpp"

namespace mosaic {

status safetensors_writer::add(std::string name, std::vector<int64_t> shape,
                               std::span<const float> data, st_dtype stored) {
  if (name.empty() || name == "__metadata__")
    return make_error(errc::invalid_argument, "safetensors tensor name '", name,
                      "' is not allowed");
  for (const auto& e : entries_)
    if (e.name == name)
      return make_error(errc::invalid_argument, "safetensors tensor '", name, "' added twice");
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return make_error(errc::invalid_argument, "safetensors tensor '", name, "' has shape ",
                        shape_to_string(shape), " with a negative dimension");
    n *= d;
  }
  if (static_cast<size_t>(n) != data.size())
    return make_error(errc::invalid_argument, "safetensors tensor '", name, "' has shape ",
                      shape_to_string(shape), " (", std::to_string(n), " elements) but ",
                      std::to_string(data.size()), " values were given");
  entry e{std::move(name), stored, std::move(shape), {}};
  e.bytes.resize(data.size() * dtype_size(stored));
  if (stored == st_dtype::f32) {
    std::memcpy(e.bytes.data(), data.data(), e.bytes.size());
  } else {
    for (size_t i = 0; i < data.size(); ++i) {
      uint16_t h = stored == st_dtype::f16 ? f32_to_f16(data[i]) : f32_to_bf16(data[i]);
      std::memcpy(e.bytes.data() + 2 * i, &h, 2);
    }
  }
  entries_.push_back(std::move(e));
  return {};
}

void safetensors_writer::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::vector<uint8_t> safetensors_writer::serialize() const {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty())
    header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", to_string(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  while ((text.size() % 8) != 0)
    text.push_back(' ');
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(len >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const auto& e : entries_)
    out.insert(out.end(), e.bytes.begin(), e.bytes.end());
  return out;
}

status safetensors_writer::write(const std::filesystem::path& path) const {
  return write_file_atomically(path, serialize());
}

status write_file_atomically(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  std::random_device rd; // temp names must not collide across threads and processes
  auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  auto tmp = dir / (path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(rd()));
  auto fail = [&](const char* what) {
    int err = errno;
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    return make_error(errc::io_error, "cannot ", what, " ", path.string(), ": ",
                      std::strerror(err));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail("create a temp file for");
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ::close(fd);
      return fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail("fsync");
  }
  if (::close(fd) != 0)
    return fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return fail("rename a temp file onto");
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

} // namespace mosaic
