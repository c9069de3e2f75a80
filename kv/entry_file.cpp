#include "kv/entry_file.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

#include "kv/unique_fd.hpp"

namespace mosaic::kv {

namespace fs = std::filesystem;

namespace {

error os_error(std::string_view what, const fs::path& path, int err) {
  // A full disk or quota is the operator's to fix, not a broken file.
  const errc code = err == ENOSPC || err == EDQUOT ? errc::no_space : errc::io_error;
  return make_error(code, std::string{what}, " ", path.string(), ": ", std::strerror(err));
}

status pwrite_all(int fd, const uint8_t* data, size_t n, uint64_t off, const fs::path& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, off_t(off));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return os_error("cannot write", path, w < 0 ? errno : EIO);
    data += w;
    n -= size_t(w);
    off += uint64_t(w);
  }
  return {};
}

/// Reads up to n bytes; returns the count (short only at end of file).
result<size_t> pread_full(int fd, uint8_t* data, size_t n, uint64_t off, const fs::path& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, data + done, n - done, off_t(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return os_error("cannot read", path, errno);
    if (r == 0)
      break;
    done += size_t(r);
  }
  return done;
}

std::string temp_name(const digest& key) {
  // O_EXCL makes a collision an EEXIST retry, never a shared file.
  std::random_device rd;
  const uint64_t r = (uint64_t(rd()) << 32) | rd();
  return ".tmp." + to_hex(key) + "." + std::to_string(::getpid()) + "." + std::to_string(r);
}

status check_image(const compiled_image& img) {
  const auto layer = img.layer_elems() * size_t(std::max(img.n_layers, 0));
  if (img.embeddings.size() != size_t(img.n_tokens) * size_t(std::max(img.hidden, 0)) ||
      img.k.size() != layer || img.v.size() != layer)
    return make_error(errc::invalid_argument,
                      "compiled image arrays do not match its geometry; call resize() first");
  return {};
}

} // namespace

fs::path entry_path(const fs::path& dir, const digest& key) {
  return dir / (to_hex(key) + ".mkv");
}

bool is_temp_name(const std::string& filename) {
  return filename.starts_with(".tmp.");
}

status fsync_dir(const fs::path& dir) {
  unique_fd fd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (!fd.valid())
    return os_error("cannot open directory", dir, errno);
  if (::fsync(fd.get()) != 0)
    return os_error("cannot fsync directory", dir, errno);
  return {};
}

result<entry_header> write_entry(const fs::path& dir, entry_header h, const compiled_image& img) {
  set_geometry(h, img);
  MOSAIC_TRY(check_image(img));
  MOSAIC_TRY(validate_header_fields(h));

  unique_fd fd;
  fs::path tmp;
  for (int attempt = 0; attempt < 8 && !fd.valid(); ++attempt) {
    tmp = dir / temp_name(h.key);
    fd = unique_fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (!fd.valid() && errno != EEXIST)
      return os_error("cannot create", tmp, errno);
  }
  if (!fd.valid())
    return make_error(errc::io_error, "cannot create a unique temp file in ", dir.string());

  auto body = [&]() -> status {
    std::vector<section_checksum> rows;
    std::vector<uint8_t> buf;
    for (int s = 0; s < h.n_sections(); ++s) {
      const float* src = s == 0       ? img.embeddings.data()
                         : s % 2 == 1 ? img.k_layer((s - 1) / 2)
                                      : img.v_layer((s - 1) / 2);
      buf.assign(h.section_padded(s), 0);
      encode(h.dtype, src, reinterpret_cast<uint16_t*>(buf.data()), h.section_payload(s) / 2);
      rows.push_back({h.section_offset(s), buf.size(), checksum(buf)});
      MOSAIC_TRY(pwrite_all(fd.get(), buf.data(), buf.size(), h.section_offset(s), tmp));
    }
    const auto table = encode_table(rows);
    h.table_checksum = checksum(table);
    MOSAIC_TRY(pwrite_all(fd.get(), table.data(), table.size(), h.table_offset(), tmp));
    const auto page = encode_header(h);
    MOSAIC_TRY(pwrite_all(fd.get(), page.data(), page.size(), 0, tmp));
    if (::fsync(fd.get()) != 0)
      return os_error("cannot fsync", tmp, errno);
    fd.reset();
    if (::rename(tmp.c_str(), entry_path(dir, h.key).c_str()) != 0)
      return os_error("cannot rename into place", tmp, errno);
    return fsync_dir(dir);
  };
  if (auto st = body(); !st) {
    std::error_code ec;
    fs::remove(tmp, ec);
    return std::move(st).err();
  }
  return h;
}

result<entry_header> read_header(const fs::path& path) {
  unique_fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd.valid())
    return errno == ENOENT ? make_error(errc::not_found, "no entry file ", path.string())
                           : os_error("cannot open", path, errno);
  std::vector<uint8_t> page(page_bytes);
  auto n = pread_full(fd.get(), page.data(), page.size(), 0, path);
  if (!n)
    return std::move(n).err();
  page.resize(*n);
  auto h = decode_header(page);
  if (!h)
    return std::move(h).err();
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return os_error("cannot stat", path, errno);
  if (uint64_t(st.st_size) != h->file_bytes())
    return make_error(errc::corrupt_data, "KV entry file is ", std::to_string(st.st_size),
                      " bytes but its header says ", std::to_string(h->file_bytes()),
                      " (truncated or padded)");
  if (path.filename() != entry_path({}, h->key).filename())
    return make_error(errc::corrupt_data, "KV entry file name does not match the key inside it");
  return h;
}

result<compiled_image> read_entry(const fs::path& path, entry_header* header_out,
                                  const digest* expected_key) {
  auto h = read_header(path);
  if (!h)
    return std::move(h).err();
  if (expected_key != nullptr && h->key != *expected_key)
    return make_error(errc::corrupt_data, "KV entry holds a different key than requested");
  unique_fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd.valid())
    return os_error("cannot open", path, errno);
  std::vector<uint8_t> buf(round_up_page(h->table_bytes()));
  auto n = pread_full(fd.get(), buf.data(), buf.size(), h->table_offset(), path);
  if (!n)
    return std::move(n).err();
  buf.resize(*n);
  auto rows = decode_table(*h, buf);
  if (!rows)
    return std::move(rows).err();
  compiled_image img;
  img.resize(h->n_tokens, h->n_layers, h->hidden, h->kv_dim);
  img.grid = h->grid;
  for (int s = 0; s < h->n_sections(); ++s) {
    buf.resize(h->section_padded(s));
    n = pread_full(fd.get(), buf.data(), buf.size(), h->section_offset(s), path);
    if (!n)
      return std::move(n).err();
    buf.resize(*n);
    MOSAIC_TRY(verify_section(buf, (*rows)[size_t(s)], s));
    float* dst = s == 0       ? img.embeddings.data()
                 : s % 2 == 1 ? img.k_layer((s - 1) / 2)
                              : img.v_layer((s - 1) / 2);
    decode(h->dtype, reinterpret_cast<const uint16_t*>(buf.data()), dst, h->section_payload(s) / 2);
  }
  if (header_out != nullptr)
    *header_out = *h;
  return img;
}

result<fs::path> quarantine_file(const fs::path& dir, const fs::path& path,
                                 const std::string& reason) {
  const fs::path qdir = dir / "quarantine";
  std::error_code ec;
  fs::create_directories(qdir, ec);
  if (ec)
    return make_error(errc::io_error, "cannot create ", qdir.string(), ": ", ec.message());
  const auto stamp = std::chrono::system_clock::now().time_since_epoch().count();
  const fs::path dst = qdir / (path.filename().string() + "." + std::to_string(stamp));
  if (::rename(path.c_str(), dst.c_str()) != 0) {
    if (errno == ENOENT) // another reader already moved it
      return make_error(errc::not_found, "entry file ", path.string(), " is already gone");
    return os_error("cannot quarantine", path, errno);
  }
  std::ofstream{dst.string() + ".reason"} << reason << "\n";
  (void)fsync_dir(dir);
  return dst;
}

} // namespace mosaic::kv
