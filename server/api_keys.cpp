#include "server/api_keys.hpp"

#include <fstream>
#include <sstream>

namespace mosaic::server {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

api_error unauthorized(std::string message) {
  return api_error{401, "authentication_error", std::move(message), "", "invalid_api_key"};
}

} // namespace

bool constant_time_equal(std::string_view a, std::string_view b) {
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

result<api_keys> api_keys::parse(std::string_view text, std::string_view source) {
  api_keys keys;
  int line_no = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#')
      continue;
    auto sp = line.find_first_of(" \t");
    auto where = std::string{source} + ":" + std::to_string(line_no);
    if (sp == std::string_view::npos)
      return make_error(errc::invalid_argument, where,
                        ": expected `<key> <tenant>`, got one word; add the tenant after the key");
    auto key = line.substr(0, sp);
    auto tenant = trim(line.substr(sp));
    if (tenant.find_first_of(" \t") != std::string_view::npos)
      return make_error(errc::invalid_argument, where,
                        ": expected `<key> <tenant>`, got more than two words");
    if (key.size() < 8)
      return make_error(errc::invalid_argument, where,
                        ": the key is shorter than 8 characters; use a longer random key");
    for (const auto& e : keys.entries_)
      if (e.key == key)
        return make_error(errc::invalid_argument, where, ": the key is listed twice");
    keys.entries_.push_back({std::string{key}, std::string{tenant}});
  }
  return keys;
}

result<api_keys> api_keys::load(const std::filesystem::path& file) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    return make_error(errc::not_found, "cannot read the API key file ", file.string(),
                      "; pass an existing file (one `key tenant` per line)");
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), file.string());
}

parse_result<std::string> api_keys::authenticate(std::string_view authorization) const {
  if (entries_.empty())
    return {std::string{"default"}, {}};
  constexpr std::string_view bearer = "Bearer ";
  if (authorization.size() <= bearer.size() || authorization.substr(0, bearer.size()) != bearer)
    return {std::nullopt, unauthorized("missing API key: send the header "
                                       "`Authorization: Bearer <key>`")};
  auto key = trim(authorization.substr(bearer.size()));
  const entry* found = nullptr;
  for (const auto& e : entries_) // no early exit: compare every key
    if (constant_time_equal(e.key, key) && found == nullptr)
      found = &e;
  if (found == nullptr)
    return {std::nullopt, unauthorized("incorrect API key provided")};
  return {found->tenant, {}};
}

} // namespace mosaic::server
