// KV library entry files (kv/entry_format.hpp): the header page, the
// checksum table and every section, through read_entry as a start-up scan
// or a load reads them. Checksums would stop almost every mutation at the
// first check, so when the input's first byte is odd the target repairs
// them first (header, table and section checksums recomputed over the
// mutated bytes) and the field checks and section decoding get fuzzed too.

#include <cstring>
#include <vector>

#include "kv/entry_file.hpp"
#include "kv/entry_format.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

using namespace mosaic::kv;

// The header checksum is the page's last 8 bytes (entry_format.cpp).
constexpr size_t header_checksum_at = page_bytes - 8;

void put_u64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  std::memcpy(b.data() + at, &v, 8);
}
uint64_t get_u64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}

void fix_header_checksum(std::vector<uint8_t>& file) {
  put_u64(file, header_checksum_at, checksum({file.data(), header_checksum_at}));
}

void repair_checksums(std::vector<uint8_t>& file) {
  if (file.size() < page_bytes)
    return;
  fix_header_checksum(file);
  auto h = decode_header({file.data(), page_bytes});
  if (!h)
    return;
  uint64_t table_at = h->table_offset();
  uint64_t table_len = round_up_page(h->table_bytes());
  if (table_at > file.size() || table_len > file.size() - table_at)
    return;
  for (int s = 0; s < h->n_sections(); ++s) {
    size_t row = size_t(table_at) + size_t(s) * 24;
    uint64_t off = get_u64(file, row), len = get_u64(file, row + 8);
    if (off <= file.size() && len <= file.size() - off)
      put_u64(file, row + 16, checksum({file.data() + off, size_t(len)}));
  }
  h->table_checksum = checksum({file.data() + table_at, size_t(table_len)});
  auto page = encode_header(*h);
  std::memcpy(file.data(), page.data(), page_bytes);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > (size_t{8} << 20))
    return 0;
  std::vector<uint8_t> file(data + 1, data + size);
  if (data[0] & 1)
    repair_checksums(file);
  if (file.size() >= page_bytes)
    (void)decode_header({file.data(), page_bytes});
  mosaic::fuzz::memory_file f(file);
  if (!f.ok())
    return 0;
  (void)read_header(f.path());
  entry_header h;
  auto img = read_entry(f.path(), &h);
  (void)img;
  return 0;
}
