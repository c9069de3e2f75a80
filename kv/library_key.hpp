#pragma once

// Identity of a KV library entry. An entry is keyed by SHA-256 over the
// image key (decoded pixels + preprocessing, engine/model/image.hpp), the
// model fingerprint and the owner namespace, so that two tenants (or two
// models) can never share, hit or even name each other's entries.

#include <string>
#include <string_view>

#include "engine/error.hpp"
#include "engine/model/sha256.hpp"

namespace mosaic::kv {

/// Who owns an entry: a tenant's private ("static") library, or an
/// operator-curated ("dynamic") library readable by every tenant.
struct owner {
  enum class kind : uint8_t { tenant, shared };
  kind type = kind::tenant;
  std::string name; ///< tenant id or shared library name

  static owner tenant(std::string id) { return owner{kind::tenant, std::move(id)}; }
  static owner shared(std::string library) { return owner{kind::shared, std::move(library)}; }

  /// "tenant:<id>" or "shared:<name>".
  std::string ns() const;
  bool operator==(const owner&) const = default;
};

/// Checks a tenant id or shared library name: 1..128 characters from
/// [A-Za-z0-9._@-]. `what` names the thing in the error ("tenant id").
status validate_owner_name(std::string_view name, std::string_view what);

/// Parses "tenant:<id>" / "shared:<name>".
result<owner> parse_owner_ns(std::string_view ns);

/// SHA-256(len-prefixed image key, model fingerprint, owner namespace).
digest library_key(const digest& image_key, const digest& model_fingerprint,
                   std::string_view owner_ns);

} // namespace mosaic::kv
