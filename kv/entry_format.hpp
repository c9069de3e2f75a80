#pragma once

// On-disk format of one KV library entry (docs/kv-libraries.md has the
// byte layout table). Little-endian throughout.
//
//   page 0          header (4 KiB): identity, geometry, dtype, times,
//                   table location + checksum, header checksum (last 8 B)
//   4 KiB aligned   section 0: embeddings   [n_tokens, hidden]
//                   section 1 + 2l: K of layer l [n_tokens, kv_dim] pre-RoPE
//                   section 2 + 2l: V of layer l [n_tokens, kv_dim]
//   4 KiB aligned   checksum table: per section {offset, bytes, xxh3-64}
//
// Every section is padded with zeros to 4 KiB and its checksum covers the
// padding, so K_l and V_l are adjacent and one aligned read fetches a
// layer; every byte of the file is covered by some checksum.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "engine/model/sha256.hpp"
#include "kv/dtype_convert.hpp"

namespace mosaic::kv {

inline constexpr size_t page_bytes = 4096;
inline constexpr uint32_t format_version = 1;
inline constexpr char format_magic[8] = {'M', 'O', 'S', 'A', 'I', 'C', 'K', 'V'};
/// Longest owner namespace a header can hold.
inline constexpr size_t max_owner_ns_bytes = 256;

/// Rounds up to a multiple of 4 KiB.
constexpr uint64_t round_up_page(uint64_t n) {
  return (n + page_bytes - 1) / page_bytes * page_bytes;
}

/// The decoded header of an entry file.
struct entry_header {
  uint32_t version = format_version;
  digest key{};               ///< library_key(image_key, model_fingerprint, owner_ns)
  digest image_key{};         ///< pixels + preprocessing
  digest model_fingerprint{}; ///< the model the KV was computed with
  std::string owner_ns;       ///< "tenant:<id>" or "shared:<name>"
  storage_dtype dtype = storage_dtype::f16;
  bool k_pre_rope = true;
  int32_t n_tokens = 0;
  int32_t n_layers = 0;
  int32_t hidden = 0;
  int32_t kv_dim = 0;
  int32_t n_kv_heads = 0; ///< 0 when unknown
  int32_t head_dim = 0;   ///< 0 when unknown
  /// M-RoPE models: the token grid the KV was compiled with (all 0
  /// otherwise, as in entries written before it was stored).
  token_grid grid{};
  int64_t created_unix = 0;
  int64_t expires_unix = 0; ///< 0 = never expires
  uint64_t table_checksum = 0;

  // -- derived layout ---------------------------------------------------------

  int n_sections() const { return 1 + 2 * n_layers; }
  uint64_t embeddings_bytes() const { return uint64_t(n_tokens) * uint64_t(hidden) * 2; }
  uint64_t kv_bytes() const { return uint64_t(n_tokens) * uint64_t(kv_dim) * 2; }
  /// Unpadded payload bytes of section s.
  uint64_t section_payload(int s) const { return s == 0 ? embeddings_bytes() : kv_bytes(); }
  /// Offset of section s (0 = embeddings, 1 + 2l = K_l, 2 + 2l = V_l).
  uint64_t section_offset(int s) const;
  /// Padded bytes of section s.
  uint64_t section_padded(int s) const { return round_up_page(section_payload(s)); }
  uint64_t table_offset() const { return section_offset(n_sections()); }
  uint64_t table_bytes() const { return uint64_t(n_sections()) * 24; }
  uint64_t file_bytes() const { return table_offset() + round_up_page(table_bytes()); }
  /// Bytes the decoded entry takes in RAM (f32).
  uint64_t decoded_bytes() const {
    return (embeddings_bytes() + 2 * uint64_t(n_layers) * kv_bytes()) * 2;
  }
  bool expired_at(int64_t now_unix) const { return expires_unix != 0 && now_unix >= expires_unix; }
};

/// Checksum table row for one section.
struct section_checksum {
  uint64_t offset = 0;
  uint64_t bytes = 0; ///< padded length
  uint64_t xxh3 = 0;
};

/// XXH3-64 of a byte range.
uint64_t checksum(std::span<const uint8_t> bytes) noexcept;

/// Checks geometry and identity fields (not checksums): positive sizes
/// within limits, kv_dim == n_kv_heads * head_dim when given, namespace
/// length, and key == library_key(image_key, model_fingerprint, owner_ns).
status validate_header_fields(const entry_header& h);

/// Serialises the header into one 4 KiB page, header checksum included.
std::vector<uint8_t> encode_header(const entry_header& h);
/// Parses and fully checks a header page (magic, version, checksum,
/// fields). Errors are corrupt_data (or unsupported for a newer version).
result<entry_header> decode_header(std::span<const uint8_t> page);

/// Serialises the checksum table, padded to 4 KiB.
std::vector<uint8_t> encode_table(const std::vector<section_checksum>& rows);
/// Parses the padded table region; checks it against `h.table_checksum`
/// and the layout implied by the header.
result<std::vector<section_checksum>> decode_table(const entry_header& h,
                                                   std::span<const uint8_t> region);

/// Checks one padded section against its row.
status verify_section(std::span<const uint8_t> padded, const section_checksum& row, int section);

/// Human name of a section ("embeddings", "K of layer 3").
std::string section_name(int section);

/// Sets the geometry fields of `h` from `img`.
void set_geometry(entry_header& h, const compiled_image& img);

} // namespace mosaic::kv
