#pragma once

// CAF registration of every Mosaic message (CAF 0.17.6 with its 0.18-style
// subset): the `mosaic` type-ID block, the atoms actors dispatch on,
// `mosaic::errc` as a CAF error code enum, and the `inspect` overload that
// serializes an fb_message as its bytes and VERIFIES them when loading, so
// that a corrupt buffer from another node is rejected by the deserializer
// before any actor sees it.
//
// Include this header only where actors are defined or spawned: it pulls in
// CAF. Plain message code includes messages/messages.hpp.

#include <string>
#include <type_traits>
#include <vector>

#include <caf/deserializer.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/save_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/serializer.hpp>
#include <caf/type_id.hpp>

#include "engine/error.hpp"
#include "messages/messages.hpp"

// `caf::error{errc::not_found, "no entry ..."}` builds an error of category
// "mosaic" whose context is the message string.
CAF_ERROR_CODE_ENUM(mosaic::errc, "mosaic")

namespace mosaic {

// -- errors ---------------------------------------------------------------------

/// The CAF error category of `mosaic::errc`.
inline constexpr caf::atom_value caf_error_category = caf::atom("mosaic");

/// A caf::error of category "mosaic" with the message as context; errc::none
/// gives an empty (no-error) caf::error.
caf::error to_caf_error(const error& err);

/// Back to a mosaic::error. Errors of other categories map to the closest
/// code (CAF's request_timeout → timeout, a dead receiver or unreachable
/// node → unavailable, anything else → internal) with CAF's text kept.
error from_caf_error(const caf::error& err);

// -- system setup ---------------------------------------------------------------

/// Registers every message type of the `mosaic` block and the "mosaic" error
/// category with `cfg`. Call before constructing the actor_system, in every
/// process that exchanges Mosaic messages.
void init_message_types(caf::actor_system_config& cfg);

/// Loads CAF's I/O module (the middleman), needed to publish actors or
/// connect to remote nodes.
void init_network(caf::actor_system_config& cfg);

// -- serialization ----------------------------------------------------------------

/// Grants `inspect` access to an fb_message's bytes.
struct fb_message_access {
  template <class Table>
  static std::vector<uint8_t>& bytes(fb_message<Table>& x) noexcept {
    return x.bytes_;
  }
};

/// CAF inspection of an fb_message: a 64-bit size, then the raw bytes.
/// Loading rejects a size over `max_message_bytes` before allocating (a
/// peer cannot make us reserve gigabytes) and runs the FlatBuffers
/// verifier; a buffer that fails makes the deserializer fail with
/// errc::corrupt_data instead of yielding a message.
template <class Inspector, class Table>
typename Inspector::result_type inspect(Inspector& f, fb_message<Table>& x) {
  auto name = caf::meta::type_name(message_traits<Table>::name);
  auto& bytes = fb_message_access::bytes(x);
  if constexpr (std::is_base_of_v<caf::deserializer, Inspector>) {
    uint64_t size = 0;
    return f(name, size, caf::meta::load_callback([&]() -> caf::error {
               if (size > max_message_bytes)
                 return to_caf_error(make_error(errc::corrupt_data, message_traits<Table>::name,
                                                ": peer announced ", std::to_string(size),
                                                " bytes, over the limit of ",
                                                std::to_string(max_message_bytes)));
               std::vector<uint8_t> loaded(size);
               if (size > 0)
                 if (auto err = f.apply_raw(size, loaded.data()))
                   return err;
               auto verified = fb_message<Table>::from_bytes(std::move(loaded));
               if (!verified)
                 return to_caf_error(verified.err());
               x = std::move(*verified);
               return caf::none;
             }));
  } else if constexpr (std::is_base_of_v<caf::serializer, Inspector>) {
    uint64_t size = bytes.size();
    return f(name, size, caf::meta::save_callback([&]() -> caf::error {
               return size > 0 ? f.apply_raw(size, bytes.data()) : caf::none;
             }));
  } else {
    // to_string / logging inspectors: the size, not megabytes of image bytes.
    auto summary = std::to_string(bytes.size()) + " bytes";
    return f(name, summary);
  }
}

} // namespace mosaic

// -- type-ID block ------------------------------------------------------------------

// Type names ("mosaic::generate_request_msg") identify messages between
// nodes: every node must run the same block (append-only).
CAF_BEGIN_TYPE_ID_BLOCK(mosaic, caf::first_custom_type_id)

#define MOSAIC_CAF_ADD_MESSAGE_(table, alias, ident) CAF_ADD_TYPE_ID(mosaic, (mosaic::alias))
MOSAIC_MESSAGE_TYPES(MOSAIC_CAF_ADD_MESSAGE_)
#undef MOSAIC_CAF_ADD_MESSAGE_

// Atoms name the operation when one message type serves several.
CAF_ADD_ATOM(mosaic, mosaic, generate_atom, "generate")
CAF_ADD_ATOM(mosaic, mosaic, encode_atom, "encode")
CAF_ADD_ATOM(mosaic, mosaic, lookup_atom, "lookup")
CAF_ADD_ATOM(mosaic, mosaic, load_atom, "load")
CAF_ADD_ATOM(mosaic, mosaic, layer_ready_atom, "layer_rdy")
CAF_ADD_ATOM(mosaic, mosaic, store_atom, "store")
CAF_ADD_ATOM(mosaic, mosaic, link_atom, "link_plan") // "link" is caf::link_atom
CAF_ADD_ATOM(mosaic, mosaic, prefill_atom, "prefill")
CAF_ADD_ATOM(mosaic, mosaic, kv_transfer_atom, "kv_xfer")
CAF_ADD_ATOM(mosaic, mosaic, decode_atom, "decode")
CAF_ADD_ATOM(mosaic, mosaic, token_atom, "token")
CAF_ADD_ATOM(mosaic, mosaic, cancel_atom, "cancel")
CAF_ADD_ATOM(mosaic, mosaic, hello_atom, "hello")
CAF_ADD_ATOM(mosaic, mosaic, heartbeat_atom, "heartbeat")
CAF_ADD_ATOM(mosaic, mosaic, health_atom, "health")
CAF_ADD_ATOM(mosaic, mosaic, shutdown_atom, "shutdown")
CAF_ADD_ATOM(mosaic, mosaic, compress_atom, "compress")
CAF_ADD_ATOM(mosaic, mosaic, remove_atom, "remove") // a tenant's library entry (DELETE)
CAF_ADD_ATOM(mosaic, mosaic, wake_atom,
             "wake") // node-local: a stage may have work (actors/stage_admission)

CAF_END_TYPE_ID_BLOCK(mosaic)
