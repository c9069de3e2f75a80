#pragma once

// mosaic::error ↔ msg::Error (the FlatBuffers form that crosses processes).
// The caf::error side lives in messages/caf_types.hpp.

#include <cstdint>

#include "engine/error.hpp"
#include "messages/messages.hpp"

namespace mosaic {

/// The schema enum of a code (same numeric value).
msg::ErrorCode to_msg_code(errc code) noexcept;

/// A mosaic::error from a received msg::Error. A code this build does not
/// know (a newer peer) becomes errc::internal with the value in the message.
error to_error(const msg::Error& err);

/// Ok when `err` is null or carries errc::none, its error otherwise; for the
/// optional `error` field of result messages.
status to_status(const msg::Error* err);

/// Serializes `err` into `fbb`.
flatbuffers::Offset<msg::Error> add_error(flatbuffers::FlatBufferBuilder& fbb, const error& err,
                                          uint64_t request_id = 0);

/// A standalone error message.
error_msg make_error_msg(const error& err, uint64_t request_id = 0);

} // namespace mosaic
