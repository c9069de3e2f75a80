#include "engine/model/bounded_read.hpp"

#include <fstream>
#include <sstream>

namespace mosaic {

result<std::string> read_bounded_file(const std::filesystem::path& path, size_t max_bytes,
                                      std::string_view limit_text) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return make_error(errc::not_found, "cannot read ", path.string(), ": ", ec.message());
  if (size > max_bytes)
    return make_error(errc::invalid_argument, path.string(), " is ", std::to_string(size),
                      " bytes; ", limit_text);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  if (!in)
    return make_error(errc::io_error, "cannot read ", path.string());
  return s.str();
}

} // namespace mosaic
