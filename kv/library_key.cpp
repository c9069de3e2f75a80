#include "kv/library_key.hpp"

#include <span>

namespace mosaic::kv {

std::string owner::ns() const {
  return (type == kind::tenant ? "tenant:" : "shared:") + name;
}

status validate_owner_name(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > 128)
    return make_error(errc::invalid_argument, std::string{what}, " must have 1 to 128 characters");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '@' || c == '-';
    if (!ok)
      return make_error(errc::invalid_argument, std::string{what}, " '", std::string{name},
                        "' may only use letters, digits and . _ @ -");
  }
  return {};
}

result<owner> parse_owner_ns(std::string_view ns) {
  owner o;
  if (ns.starts_with("tenant:")) {
    o.type = owner::kind::tenant;
    o.name = std::string{ns.substr(7)};
  } else if (ns.starts_with("shared:")) {
    o.type = owner::kind::shared;
    o.name = std::string{ns.substr(7)};
  } else {
    return make_error(errc::invalid_argument, "owner namespace '", std::string{ns},
                      "' must start with tenant: or shared:");
  }
  MOSAIC_TRY(validate_owner_name(o.name, "owner name"));
  return o;
}

digest library_key(const digest& image_key, const digest& model_fingerprint,
                   std::string_view owner_ns) {
  sha256_hasher h;
  h.update("mosaic.kv.library_key.v1");
  h.update_u64(image_key.size());
  h.update(std::span<const uint8_t>{image_key});
  h.update_u64(model_fingerprint.size());
  h.update(std::span<const uint8_t>{model_fingerprint});
  h.update_u64(owner_ns.size());
  h.update(owner_ns);
  return h.finish();
}

} // namespace mosaic::kv
