#pragma once

// API keys → tenants. The key file has one `key tenant` per line; blank
// lines and lines starting with '#' are ignored. Keys are compared in
// constant time (every configured key is compared in full, whatever
// matches). Without keys every request belongs to tenant "default".

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "server/openai_request.hpp"

namespace mosaic::server {

class api_keys {
public:
  /// No keys: authentication is off.
  api_keys() = default;
  /// Parses key-file text; `source` names it in errors ("keys.txt:3: …").
  static result<api_keys> parse(std::string_view text, std::string_view source);
  static result<api_keys> load(const std::filesystem::path& file);

  bool enabled() const { return !entries_.empty(); }
  size_t size() const { return entries_.size(); }

  /// The tenant of an `Authorization` header value ("Bearer <key>"), or
  /// the 401 error to send. Without keys: "default" whatever the header.
  parse_result<std::string> authenticate(std::string_view authorization) const;

private:
  struct entry {
    std::string key;
    std::string tenant;
  };
  std::vector<entry> entries_;
};

/// True when `a` and `b` are equal; the time taken depends only on their
/// lengths, not on where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

} // namespace mosaic::server
