#include "kv/entry_format.hpp"

#include <cstring>
#include <xxhash.h>

#include "kv/library_key.hpp"

namespace mosaic::kv {

namespace {

// Byte offsets of the header fields inside page 0.
enum : size_t {
  off_magic = 0,
  off_version = 8,
  off_header_bytes = 12,
  off_key = 16,
  off_image_key = 48,
  off_model = 80,
  off_dtype = 112,
  off_flags = 113,
  off_ns_len = 114,
  off_n_tokens = 116,
  off_n_layers = 120,
  off_hidden = 124,
  off_kv_dim = 128,
  off_n_kv_heads = 132,
  off_head_dim = 136,
  off_n_sections = 140,
  off_created = 144,
  off_expires = 152,
  off_file_bytes = 160,
  off_table_offset = 168,
  off_table_bytes = 176,
  off_table_checksum = 184,
  off_ns = 192,
  off_grid_t = 448, // after the owner namespace; zero in older files
  off_grid_rows = 452,
  off_grid_cols = 456,
  off_header_checksum = page_bytes - 8,
};
static_assert(off_ns + max_owner_ns_bytes <= off_grid_t);
static_assert(off_grid_cols + 4 <= off_header_checksum);

constexpr uint8_t flag_k_pre_rope = 1;
constexpr int32_t max_dim = 1 << 20;
constexpr int32_t max_layers = 4096;

template <class T>
void put(std::vector<uint8_t>& buf, size_t off, T value) {
  std::memcpy(buf.data() + off, &value, sizeof(T)); // little-endian hosts only (x86-64, arm64)
}

template <class T>
T get(std::span<const uint8_t> buf, size_t off) {
  T value;
  std::memcpy(&value, buf.data() + off, sizeof(T));
  return value;
}

error corrupt(std::string_view what) {
  return make_error(errc::corrupt_data, "KV entry ", std::string{what});
}

} // namespace

uint64_t checksum(std::span<const uint8_t> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

uint64_t entry_header::section_offset(int s) const {
  if (s == 0)
    return page_bytes;
  return page_bytes + round_up_page(embeddings_bytes()) +
         uint64_t(s - 1) * round_up_page(kv_bytes());
}

status validate_header_fields(const entry_header& h) {
  auto in_range = [](int32_t v, int32_t hi) { return v > 0 && v <= hi; };
  if (!in_range(h.n_tokens, max_dim) || !in_range(h.n_layers, max_layers) ||
      !in_range(h.hidden, max_dim) || !in_range(h.kv_dim, max_dim))
    return make_error(errc::invalid_argument, "KV entry geometry out of range (tokens ",
                      std::to_string(h.n_tokens), ", layers ", std::to_string(h.n_layers),
                      ", hidden ", std::to_string(h.hidden), ", kv_dim ", std::to_string(h.kv_dim),
                      ")");
  if (h.n_kv_heads < 0 || h.head_dim < 0 ||
      ((h.n_kv_heads != 0 || h.head_dim != 0) && int64_t(h.n_kv_heads) * h.head_dim != h.kv_dim))
    return make_error(errc::invalid_argument, "KV entry n_kv_heads * head_dim != kv_dim");
  if (h.grid != token_grid{} &&
      (h.grid.t <= 0 || h.grid.rows <= 0 || h.grid.cols <= 0 || h.grid.count() != h.n_tokens))
    return make_error(errc::invalid_argument, "KV entry token grid ", std::to_string(h.grid.t),
                      "x", std::to_string(h.grid.rows), "x", std::to_string(h.grid.cols),
                      " does not count its ", std::to_string(h.n_tokens), " tokens");
  if (h.dtype != storage_dtype::f16 && h.dtype != storage_dtype::bf16)
    return make_error(errc::invalid_argument, "KV entry has an unknown storage dtype");
  if (h.owner_ns.size() > max_owner_ns_bytes)
    return make_error(errc::invalid_argument, "KV entry owner namespace is too long");
  MOSAIC_TRY(parse_owner_ns(h.owner_ns));
  if (library_key(h.image_key, h.model_fingerprint, h.owner_ns) != h.key)
    return make_error(errc::invalid_argument,
                      "KV entry key does not match its image key, model fingerprint and owner");
  return {};
}

std::vector<uint8_t> encode_header(const entry_header& h) {
  std::vector<uint8_t> page(page_bytes, 0);
  std::memcpy(page.data() + off_magic, format_magic, sizeof format_magic);
  put<uint32_t>(page, off_version, h.version);
  put<uint32_t>(page, off_header_bytes, uint32_t(page_bytes));
  std::memcpy(page.data() + off_key, h.key.data(), 32);
  std::memcpy(page.data() + off_image_key, h.image_key.data(), 32);
  std::memcpy(page.data() + off_model, h.model_fingerprint.data(), 32);
  put<uint8_t>(page, off_dtype, uint8_t(h.dtype));
  put<uint8_t>(page, off_flags, h.k_pre_rope ? flag_k_pre_rope : 0);
  put<uint16_t>(page, off_ns_len, uint16_t(h.owner_ns.size()));
  put<int32_t>(page, off_n_tokens, h.n_tokens);
  put<int32_t>(page, off_n_layers, h.n_layers);
  put<int32_t>(page, off_hidden, h.hidden);
  put<int32_t>(page, off_kv_dim, h.kv_dim);
  put<int32_t>(page, off_n_kv_heads, h.n_kv_heads);
  put<int32_t>(page, off_head_dim, h.head_dim);
  put<uint32_t>(page, off_n_sections, uint32_t(h.n_sections()));
  put<int64_t>(page, off_created, h.created_unix);
  put<int64_t>(page, off_expires, h.expires_unix);
  put<uint64_t>(page, off_file_bytes, h.file_bytes());
  put<uint64_t>(page, off_table_offset, h.table_offset());
  put<uint64_t>(page, off_table_bytes, h.table_bytes());
  put<uint64_t>(page, off_table_checksum, h.table_checksum);
  std::memcpy(page.data() + off_ns, h.owner_ns.data(),
              std::min(h.owner_ns.size(), max_owner_ns_bytes));
  put<int32_t>(page, off_grid_t, h.grid.t);
  put<int32_t>(page, off_grid_rows, h.grid.rows);
  put<int32_t>(page, off_grid_cols, h.grid.cols);
  put<uint64_t>(page, off_header_checksum,
                checksum(std::span<const uint8_t>{page.data(), off_header_checksum}));
  return page;
}

result<entry_header> decode_header(std::span<const uint8_t> page) {
  if (page.size() < page_bytes)
    return corrupt("is shorter than its 4 KiB header (truncated file)");
  if (std::memcmp(page.data(), format_magic, sizeof format_magic) != 0)
    return corrupt("does not start with the MOSAICKV magic");
  if (get<uint64_t>(page, off_header_checksum) != checksum(page.first(off_header_checksum)))
    return corrupt("header checksum mismatch");
  entry_header h;
  h.version = get<uint32_t>(page, off_version);
  if (h.version != format_version)
    return make_error(errc::corrupt_data, "KV entry format version ", std::to_string(h.version),
                      " is not the supported version ", std::to_string(format_version),
                      "; rebuild the entry with this release (mosaic cache build)");
  if (get<uint32_t>(page, off_header_bytes) != page_bytes)
    return corrupt("header size field is wrong");
  std::memcpy(h.key.data(), page.data() + off_key, 32);
  std::memcpy(h.image_key.data(), page.data() + off_image_key, 32);
  std::memcpy(h.model_fingerprint.data(), page.data() + off_model, 32);
  h.dtype = storage_dtype(get<uint8_t>(page, off_dtype));
  h.k_pre_rope = (get<uint8_t>(page, off_flags) & flag_k_pre_rope) != 0;
  const size_t ns_len = get<uint16_t>(page, off_ns_len);
  if (ns_len > max_owner_ns_bytes)
    return corrupt("owner namespace length is out of range");
  h.owner_ns.assign(reinterpret_cast<const char*>(page.data() + off_ns), ns_len);
  h.n_tokens = get<int32_t>(page, off_n_tokens);
  h.n_layers = get<int32_t>(page, off_n_layers);
  h.hidden = get<int32_t>(page, off_hidden);
  h.kv_dim = get<int32_t>(page, off_kv_dim);
  h.n_kv_heads = get<int32_t>(page, off_n_kv_heads);
  h.head_dim = get<int32_t>(page, off_head_dim);
  h.created_unix = get<int64_t>(page, off_created);
  h.expires_unix = get<int64_t>(page, off_expires);
  h.table_checksum = get<uint64_t>(page, off_table_checksum);
  h.grid = {get<int32_t>(page, off_grid_t), get<int32_t>(page, off_grid_rows),
            get<int32_t>(page, off_grid_cols)};
  if (auto st = validate_header_fields(h); !st)
    return corrupt("header is inconsistent: " + st.err().message);
  if (get<uint32_t>(page, off_n_sections) != uint32_t(h.n_sections()) ||
      get<uint64_t>(page, off_file_bytes) != h.file_bytes() ||
      get<uint64_t>(page, off_table_offset) != h.table_offset() ||
      get<uint64_t>(page, off_table_bytes) != h.table_bytes())
    return corrupt("header layout fields disagree with its geometry");
  return h;
}

std::vector<uint8_t> encode_table(const std::vector<section_checksum>& rows) {
  std::vector<uint8_t> region(round_up_page(rows.size() * 24), 0);
  for (size_t i = 0; i < rows.size(); ++i) {
    put<uint64_t>(region, i * 24, rows[i].offset);
    put<uint64_t>(region, i * 24 + 8, rows[i].bytes);
    put<uint64_t>(region, i * 24 + 16, rows[i].xxh3);
  }
  return region;
}

result<std::vector<section_checksum>> decode_table(const entry_header& h,
                                                   std::span<const uint8_t> region) {
  if (region.size() != round_up_page(h.table_bytes()))
    return corrupt("checksum table is truncated");
  if (checksum(region) != h.table_checksum)
    return corrupt("checksum table checksum mismatch");
  std::vector<section_checksum> rows(size_t(h.n_sections()));
  for (int s = 0; s < h.n_sections(); ++s) {
    auto& r = rows[size_t(s)];
    r.offset = get<uint64_t>(region, size_t(s) * 24);
    r.bytes = get<uint64_t>(region, size_t(s) * 24 + 8);
    r.xxh3 = get<uint64_t>(region, size_t(s) * 24 + 16);
    if (r.offset != h.section_offset(s) || r.bytes != h.section_padded(s))
      return corrupt("checksum table disagrees with the header layout");
  }
  return rows;
}

status verify_section(std::span<const uint8_t> padded, const section_checksum& row, int section) {
  if (padded.size() != row.bytes)
    return corrupt(section_name(section) + " is truncated");
  if (checksum(padded) != row.xxh3)
    return corrupt(section_name(section) + " checksum mismatch");
  return {};
}

std::string section_name(int section) {
  if (section == 0)
    return "embeddings";
  return std::string(section % 2 == 1 ? "K" : "V") + " of layer " +
         std::to_string((section - 1) / 2);
}

void set_geometry(entry_header& h, const compiled_image& img) {
  h.n_tokens = img.n_tokens;
  h.n_layers = img.n_layers;
  h.hidden = img.hidden;
  h.kv_dim = img.kv_dim;
  h.grid = img.grid;
}

} // namespace mosaic::kv
