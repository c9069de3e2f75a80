#include "kv/transfer/wire.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#define XXH_STATIC_LINKING_ONLY // XXH3_state_t on the stack
#include <xxhash.h>

#include "kv/transfer/checksum_avx2.hpp"

namespace mosaic::kv::transfer {

static_assert(std::endian::native == std::endian::little,
              "the KV wire format is little-endian; add byte swaps for this target");

namespace {

template <class T>
void put(std::byte* out, size_t at, T v) {
  std::memcpy(out + at, &v, sizeof v);
}

template <class T>
T get(std::span<const std::byte> in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof v);
  return v;
}

/// The AVX2 loops where this build has them and the CPU runs them.
bool have_avx2() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  static const bool yes = avx2::built() && __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

} // namespace

// Layout: magic u32 @0, version u16 @4, kind u16 @6, request_id u64 @8,
// layer u32 @16, reserved u32 @20, offset u64 @24, size u64 @32,
// checksum u64 @40.
std::array<std::byte, header_bytes> encode(const frame_header& h) {
  std::array<std::byte, header_bytes> out{};
  put(out.data(), 0, frame_magic);
  put(out.data(), 4, frame_version);
  put(out.data(), 6, static_cast<uint16_t>(h.kind));
  put(out.data(), 8, h.request_id);
  put(out.data(), 16, h.layer);
  put(out.data(), 24, h.offset);
  put(out.data(), 32, h.size);
  put(out.data(), 40, h.checksum);
  return out;
}

result<frame_header> decode_header(std::span<const std::byte> bytes) {
  if (bytes.size() != header_bytes)
    return make_error(errc::corrupt_data, "KV frame header of ", std::to_string(bytes.size()),
                      " bytes (expected 48)");
  if (get<uint32_t>(bytes, 0) != frame_magic)
    return make_error(errc::corrupt_data, "KV frame without the MKVT magic (not a Mosaic peer?)");
  if (auto v = get<uint16_t>(bytes, 4); v != frame_version)
    return make_error(errc::unsupported, "KV frame version ", std::to_string(v),
                      " (this node speaks 1): run the same Mosaic version on every node");
  auto kind = get<uint16_t>(bytes, 6);
  if (kind < 1 || kind > 8)
    return make_error(errc::corrupt_data, "unknown KV frame kind ", std::to_string(kind));
  frame_header h;
  h.kind = static_cast<frame_kind>(kind);
  h.request_id = get<uint64_t>(bytes, 8);
  h.layer = get<uint32_t>(bytes, 16);
  h.offset = get<uint64_t>(bytes, 24);
  h.size = get<uint64_t>(bytes, 32);
  h.checksum = get<uint64_t>(bytes, 40);
  return h;
}

std::array<std::byte, begin_payload_bytes> encode(const begin_payload& p) {
  std::array<std::byte, begin_payload_bytes> out{};
  put(out.data(), 0, p.n_layers);
  put(out.data(), 8, p.layer_bytes);
  return out;
}

result<begin_payload> decode_begin(std::span<const std::byte> bytes) {
  if (bytes.size() < begin_payload_bytes)
    return make_error(errc::corrupt_data, "KV begin frame payload of ",
                      std::to_string(bytes.size()), " bytes (at least 16 expected)");
  return begin_payload{get<uint32_t>(bytes, 0), get<uint64_t>(bytes, 8)};
}

std::string encode_error(const error& err) {
  std::string out(1, static_cast<char>(err.code));
  out += err.message;
  return out;
}

error decode_error(std::span<const std::byte> bytes) {
  if (bytes.empty())
    return make_error(errc::internal, "peer reported an error without a code");
  auto code = static_cast<uint8_t>(bytes[0]);
  if (code == 0 || code > static_cast<uint8_t>(errc::unavailable))
    code = uint8_t(errc::internal);
  return error{static_cast<errc>(code),
               std::string(reinterpret_cast<const char*>(bytes.data()) + 1, bytes.size() - 1)};
}

uint64_t checksum(std::span<const std::byte> bytes) noexcept {
  if (have_avx2())
    return avx2::xxh3(bytes.data(), bytes.size());
  return XXH3_64bits(bytes.data(), bytes.size());
}

uint64_t copy_and_checksum(std::byte* dst, std::span<const std::byte> src,
                           read_next when) noexcept {
  constexpr size_t block = size_t(16) << 10;
  if (have_avx2()) {
    // A large copy whose destination is read only later (a chunk into a
    // transfer's landing buffer) bypasses the cache on the way out: perf
    // put the cached copy at 2.5x the cost of the non-temporal one.
    const bool stream = when == read_next::later && src.size() >= 4 * block;
    return avx2::copy_and_xxh3(dst, src.data(), src.size(), stream);
  }
  if (src.size() <= block) {
    if (!src.empty()) // memcpy with a null pointer is undefined even for 0 bytes
      std::memcpy(dst, src.data(), src.size());
    return XXH3_64bits(dst, src.size());
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (size_t off = 0; off < src.size(); off += block) {
    const size_t n = std::min(block, src.size() - off);
    std::memcpy(dst + off, src.data() + off, n);
    XXH3_64bits_update(&state, dst + off, n);
  }
  return XXH3_64bits_digest(&state);
}

} // namespace mosaic::kv::transfer
