#pragma once

// SHA-256 over OpenSSL's EVP interface. The identity of every stored entry
// (model fingerprints, image keys, KV library keys) is a SHA-256 digest.

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "engine/error.hpp"

struct evp_md_ctx_st; // OpenSSL's EVP_MD_CTX, kept out of this header

namespace mosaic {

/// A SHA-256 digest (32 bytes).
using digest = std::array<uint8_t, 32>;

/// Streaming SHA-256: `update()` any number of times, then `finish()`.
/// `finish()` resets the hasher, so it can hash the next message.
class sha256_hasher {
public:
  sha256_hasher();
  ~sha256_hasher();
  sha256_hasher(sha256_hasher&&) noexcept;
  sha256_hasher& operator=(sha256_hasher&&) noexcept;
  sha256_hasher(const sha256_hasher&) = delete;
  sha256_hasher& operator=(const sha256_hasher&) = delete;

  /// Feeds bytes.
  void update(std::span<const uint8_t> bytes);
  /// Feeds the bytes of a string.
  void update(std::string_view text);
  /// Feeds a fixed-width little-endian integer (for length prefixes, so
  /// that concatenations of fields cannot collide).
  void update_u64(uint64_t value);
  /// Returns the digest of everything fed since construction or the last
  /// `finish()`, and resets.
  digest finish();

private:
  struct ctx_deleter {
    void operator()(evp_md_ctx_st* ctx) const noexcept;
  };
  std::unique_ptr<evp_md_ctx_st, ctx_deleter> ctx_;
};

/// SHA-256 of one buffer.
digest sha256(std::span<const uint8_t> bytes);
/// SHA-256 of the bytes of a string.
digest sha256(std::string_view text);

/// Lower-case hex, 64 characters.
std::string to_hex(const digest& d);
/// Parses 64 hex characters (either case); anything else is invalid_argument.
result<digest> from_hex(std::string_view hex);

} // namespace mosaic
