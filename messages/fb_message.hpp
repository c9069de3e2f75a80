#pragma once

// A FlatBuffers table carried by value: `fb_message<Table>` owns one
// finished buffer whose root is a `Table`. It is what actors put in CAF
// messages (messages/caf_types.hpp registers every alias) and what crosses
// processes. This header does not include CAF.
//
// Invariant: a non-empty fb_message holds a buffer that passed the
// FlatBuffers verifier for `Table` and carries the table's 4-byte file
// identifier, so that `root()` never reads outside the buffer. Buffers
// built here (`finish`) are trusted; buffers from anywhere else go through
// `from_bytes`.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/error.hpp"

namespace mosaic {

/// Largest buffer `from_bytes` accepts (inline images make up most of it).
inline constexpr size_t max_message_bytes = size_t{64} << 20;

/// Per-table constants, specialized for every root table in
/// messages/messages.hpp: `name` ("mosaic.msg.GenerateRequest") and
/// `identifier` (4 characters stamped into the buffer, so that a buffer of
/// one message type never verifies as another).
template <class Table>
struct message_traits;

namespace detail {

/// Checks what every message buffer must satisfy before the table verifier
/// runs: not empty, within `max_message_bytes`, large enough to hold a root
/// offset and identifier, and tagged with `identifier`.
status check_message_envelope(std::span<const uint8_t> bytes, const char* identifier,
                              const char* name);

/// The error for a buffer the table verifier rejected.
error verification_failed(const char* name, size_t size);

/// Verifier limits for buffers from other processes.
flatbuffers::Verifier::Options verifier_options();

} // namespace detail

/// A verified FlatBuffers buffer whose root is a `Table`.
template <class Table>
class fb_message {
public:
  // -- member types -----------------------------------------------------------

  using table_type = Table;
  using traits = message_traits<Table>;

  // -- construction -----------------------------------------------------------

  /// An empty message (no buffer). Only useful as a target to assign to;
  /// `root()` of an empty message is null, and another node refuses to
  /// load one (it fails verification).
  fb_message() = default;

  /// Verifies `bytes` as a `Table` buffer and copies them. Errors are
  /// `errc::corrupt_data` and name the table.
  static result<fb_message> from_bytes(std::span<const uint8_t> bytes) {
    return from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }

  /// Same as above, taking ownership of `bytes` without a copy.
  static result<fb_message> from_bytes(std::vector<uint8_t>&& bytes) {
    MOSAIC_TRY(detail::check_message_envelope(bytes, traits::identifier, traits::name));
    flatbuffers::Verifier verifier{bytes.data(), bytes.size(), detail::verifier_options()};
    if (!verifier.VerifyBuffer<Table>(traits::identifier))
      return detail::verification_failed(traits::name, bytes.size());
    fb_message out;
    out.bytes_ = std::move(bytes);
    return out;
  }

  /// Finishes `fbb` with `root` (stamping the identifier) and takes a copy
  /// of the bytes. For buffers built in this process: not verified again.
  static fb_message finish(flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<Table> root) {
    fbb.Finish(root, traits::identifier);
    fb_message out;
    out.bytes_.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    return out;
  }

  // -- observers --------------------------------------------------------------

  /// The root table; null when empty.
  const Table* root() const noexcept {
    return bytes_.empty() ? nullptr : flatbuffers::GetRoot<Table>(bytes_.data());
  }

  /// The root table. Precondition: `!empty()`.
  const Table* operator->() const noexcept { return root(); }

  /// The finished buffer, e.g. to send as a ZeroMQ frame.
  std::span<const uint8_t> bytes() const noexcept { return bytes_; }

  bool empty() const noexcept { return bytes_.empty(); }

  /// "mosaic.msg.GenerateRequest"
  static constexpr std::string_view name() noexcept { return traits::name; }

  friend bool operator==(const fb_message&, const fb_message&) = default;

private:
  friend struct fb_message_access;

  std::vector<uint8_t> bytes_;
};

} // namespace mosaic
