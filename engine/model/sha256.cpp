#include "engine/model/sha256.hpp"

#include <cstdlib>

#include <openssl/evp.h>

namespace mosaic {

void sha256_hasher::ctx_deleter::operator()(evp_md_ctx_st* ctx) const noexcept {
  EVP_MD_CTX_free(ctx);
}

namespace {

// EVP digest calls fail only when OpenSSL cannot allocate or is broken:
// a broken invariant, not bad input.
void check(int ok) {
  if (ok != 1)
    std::abort();
}

} // namespace

sha256_hasher::sha256_hasher() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_)
    std::abort();
  check(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr));
}

sha256_hasher::~sha256_hasher() = default;
sha256_hasher::sha256_hasher(sha256_hasher&&) noexcept = default;
sha256_hasher& sha256_hasher::operator=(sha256_hasher&&) noexcept = default;

void sha256_hasher::update(std::span<const uint8_t> bytes) {
  if (!bytes.empty())
    check(EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()));
}

void sha256_hasher::update(std::string_view text) {
  update(std::span{reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

void sha256_hasher::update_u64(uint64_t value) {
  uint8_t le[8];
  for (int i = 0; i < 8; ++i)
    le[i] = static_cast<uint8_t>(value >> (8 * i));
  update(std::span<const uint8_t>{le, 8});
}

digest sha256_hasher::finish() {
  digest out{};
  unsigned int len = 0;
  check(EVP_DigestFinal_ex(ctx_.get(), out.data(), &len));
  check(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr));
  return out;
}

digest sha256(std::span<const uint8_t> bytes) {
  sha256_hasher h;
  h.update(bytes);
  return h.finish();
}

digest sha256(std::string_view text) {
  sha256_hasher h;
  h.update(text);
  return h.finish();
}

std::string to_hex(const digest& d) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  return out;
}

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

} // namespace

result<digest> from_hex(std::string_view hex) {
  if (hex.size() != 64)
    return make_error(errc::invalid_argument, "a SHA-256 digest is 64 hex characters, got ",
                      std::to_string(hex.size()));
  digest out{};
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(hex[2 * i]);
    int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return make_error(errc::invalid_argument, "not a hex digit at position ",
                        std::to_string(hi < 0 ? 2 * i : 2 * i + 1), " of the digest");
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

} // namespace mosaic
