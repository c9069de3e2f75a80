#pragma once

// Every actor message of Mosaic: the generated FlatBuffers tables
// (namespace mosaic::msg, schemas in messages/*.fbs) and one fb_message
// alias per root table. docs/messages.md says who sends what to whom.

#include <array>
#include <cstdint>

#include "messages/fb_message.hpp"

#include "messages/common_generated.h"
#include "messages/control_generated.h"
#include "messages/library_generated.h"
#include "messages/prefill_generated.h"
#include "messages/request_generated.h"
#include "messages/transfer_generated.h"

/// X(table, alias, identifier) for every root table; the single list that
/// the traits, the aliases, the explicit instantiations and the CAF type-ID
/// block are generated from. Append only: the position is the CAF type ID.
#define MOSAIC_MESSAGE_TYPES(X)                                                                    \
  X(GenerateRequest, generate_request_msg, "MGEN")                                                 \
  X(Cancel, cancel_msg, "MCAN")                                                                    \
  X(EncodeRequest, encode_request_msg, "MENQ")                                                     \
  X(EncodeResult, encode_result_msg, "MENR")                                                       \
  X(TokenEvent, token_event_msg, "MTOK")                                                           \
  X(LibraryLookup, library_lookup_msg, "MLKQ")                                                     \
  X(LibraryLookupResult, library_lookup_result_msg, "MLKR")                                        \
  X(LoadRequest, load_request_msg, "MLDQ")                                                         \
  X(LayerReady, layer_ready_msg, "MLRY")                                                           \
  X(StoreRequest, store_request_msg, "MSTQ")                                                       \
  X(StoreResult, store_result_msg, "MSTR")                                                         \
  X(LinkPlan, link_plan_msg, "MPLN")                                                               \
  X(PrefillTask, prefill_task_msg, "MPFT")                                                         \
  X(PrefillDone, prefill_done_msg, "MPFD")                                                         \
  X(DecodeTask, decode_task_msg, "MDCT")                                                           \
  X(KvTransferBegin, kv_transfer_begin_msg, "MKVB")                                                \
  X(KvChunk, kv_chunk_msg, "MKVC")                                                                 \
  X(KvTransferEnd, kv_transfer_end_msg, "MKVE")                                                    \
  X(Error, error_msg, "MERR")                                                                      \
  X(NodeHello, node_hello_msg, "MHLO")                                                             \
  X(Heartbeat, heartbeat_msg, "MHBT")                                                              \
  X(Shutdown, shutdown_msg, "MSHD")                                                                \
  X(Health, health_msg, "MHLT")                                                                    \
  X(CompressTask, compress_task_msg, "MCPT")

namespace mosaic {

#define MOSAIC_MESSAGE_TRAITS_(table, alias, ident)                                                \
  template <>                                                                                      \
  struct message_traits<msg::table> {                                                              \
    static constexpr const char* name = "mosaic.msg." #table;                                      \
    static constexpr const char* identifier = ident;                                               \
  };                                                                                               \
  using alias = fb_message<msg::table>;                                                            \
  extern template class fb_message<msg::table>;
MOSAIC_MESSAGE_TYPES(MOSAIC_MESSAGE_TRAITS_)
#undef MOSAIC_MESSAGE_TRAITS_

/// A 32-byte SHA-256 library key as plain bytes (the same type as
/// mosaic::digest in engine/model/sha256.hpp).
using library_key_bytes = std::array<uint8_t, 32>;

/// Converts between the schema struct and plain bytes.
msg::LibraryKey to_msg_key(const library_key_bytes& key);
library_key_bytes from_msg_key(const msg::LibraryKey& key);

} // namespace mosaic
