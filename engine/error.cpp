#include "engine/error.hpp"

namespace mosaic {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::none: return "none";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::io_error: return "io_error";
    case errc::corrupt_data: return "corrupt_data";
    case errc::out_of_memory: return "out_of_memory";
    case errc::unsupported: return "unsupported";
    case errc::overloaded: return "overloaded";
    case errc::timeout: return "timeout";
    case errc::cancelled: return "cancelled";
    case errc::permission_denied: return "permission_denied";
    case errc::internal: return "internal";
    case errc::unavailable: return "unavailable";
    case errc::no_space: return "no_space";
  }
  return "unknown";
}

std::string error::to_string() const {
  std::string out = mosaic::to_string(code);
  out += ": ";
  out += message;
  return out;
}

} // namespace mosaic
