#pragma once

// The frames of the host KV data plane (prefill -> decode across
// processes over ZeroMQ). A transfer moves one request's KV as `n_layers`
// sections of `layer_bytes` bytes each (the caller decides what a section
// holds: K then V of one layer, f32 rows in token order), split into
// chunks so that a section is usable as soon as its last chunk arrives.
//
// Every frame is a ZeroMQ message of two parts: a fixed 48-byte header
// and a payload (possibly empty). Integers are little-endian.
//
//   sender (DEALER)                          receiver (ROUTER)
//   begin{request, n_layers, layer_bytes, meta} ──▶
//                                            ◀── accept{credits} | error
//   chunk{layer, offset, size, checksum} ────▶   (at most `credits` unacknowledged)
//                                            ◀── credit{n}
//   end ─────────────────────────────────────▶
//                                            ◀── done | error
//
// Flow control is credit based: the sender may have at most the granted
// number of chunks unacknowledged, so a slow receiver bounds the bytes
// queued in both sockets. Each chunk carries an XXH3-64 checksum of its
// payload (integrity on the wire, not an identity; library keys stay
// SHA-256).

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "engine/error.hpp"

namespace mosaic::kv::transfer {

/// Frame kinds. Values are stable: they cross processes.
enum class frame_kind : uint16_t {
  begin = 1,  ///< sender: a new transfer; payload = begin_payload + meta
  chunk = 2,  ///< sender: bytes [offset, offset + size) of one layer
  end = 3,    ///< sender: every chunk was sent
  abort = 4,  ///< sender: give up this transfer; payload = reason text
  accept = 5, ///< receiver: begin accepted; `size` = initial credits
  credit = 6, ///< receiver: `size` more chunks may be sent
  done = 7,   ///< receiver: every byte arrived and verified
  error = 8,  ///< receiver: the transfer failed; payload = errc byte + message
};

inline constexpr uint32_t frame_magic = 0x54564b4d; // "MKVT"
inline constexpr uint16_t frame_version = 1;
inline constexpr size_t header_bytes = 48;

/// The fixed header of every frame.
struct frame_header {
  frame_kind kind = frame_kind::begin;
  uint64_t request_id = 0;
  uint32_t layer = 0;    ///< chunk: which section
  uint64_t offset = 0;   ///< chunk: byte offset in the section
  uint64_t size = 0;     ///< chunk: payload bytes; accept/credit: credits
  uint64_t checksum = 0; ///< chunk: XXH3-64 of the payload
};

/// Payload of a begin frame, before the caller's metadata bytes.
struct begin_payload {
  uint32_t n_layers = 0;
  uint64_t layer_bytes = 0;
};
inline constexpr size_t begin_payload_bytes = 16;

std::array<std::byte, header_bytes> encode(const frame_header& h);
/// Checks magic, version, kind and size; never trusts the bytes.
result<frame_header> decode_header(std::span<const std::byte> bytes);

std::array<std::byte, begin_payload_bytes> encode(const begin_payload& p);
result<begin_payload> decode_begin(std::span<const std::byte> bytes);

/// An error frame's payload: one errc byte, then the message.
std::string encode_error(const error& err);
error decode_error(std::span<const std::byte> bytes);

/// XXH3-64 of `bytes`.
uint64_t checksum(std::span<const std::byte> bytes) noexcept;
/// When the destination of a copy is read next.
enum class read_next {
  soon,  ///< right away (a message the kernel sends next): keep it in cache
  later, ///< by someone else, later (a landing buffer): large copies may
         ///< bypass the cache (streaming stores), sparing the source in it
};
/// Copies `src` to `dst` and returns XXH3-64 of the bytes, in one pass
/// over memory: each 16 KiB block is hashed while it is in L1 (equal to
/// checksum(src) when the copy is faithful). Bytes written with streaming
/// stores are fenced before it returns.
uint64_t copy_and_checksum(std::byte* dst, std::span<const std::byte> src,
                           read_next when = read_next::later) noexcept;

} // namespace mosaic::kv::transfer
