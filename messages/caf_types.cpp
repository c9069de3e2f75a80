#include "messages/caf_types.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/sec.hpp>

namespace mosaic {

namespace {

// Every alias got its ID, in list order, with no gap (CAF requires the IDs
// of a block to be contiguous).
#define MOSAIC_COUNT_(table, alias, ident) +1
constexpr int n_message_types = 0 MOSAIC_MESSAGE_TYPES(MOSAIC_COUNT_);
#undef MOSAIC_COUNT_
static_assert(caf::id_block::mosaic::end - caf::id_block::mosaic::begin == n_message_types);
static_assert(caf::type_id<generate_request_msg>::value == caf::first_custom_type_id);

constexpr caf::atom_value caf_system_category = caf::atom("system");

errc code_of_sec(caf::sec code) {
  switch (code) {
  case caf::sec::request_timeout:
  case caf::sec::connection_timeout:
    return errc::timeout;
  case caf::sec::request_receiver_down:
  case caf::sec::no_actor_published_at_port:
  case caf::sec::cannot_forward_to_invalid_actor:
  case caf::sec::no_route_to_receiving_node:
  case caf::sec::cannot_connect_to_node:
  case caf::sec::disconnect_during_handshake:
  case caf::sec::remote_lookup_failed:
  case caf::sec::socket_disconnected:
    return errc::unavailable;
  case caf::sec::unexpected_message:
  case caf::sec::unexpected_response:
  case caf::sec::invalid_argument:
    return errc::invalid_argument;
  case caf::sec::malformed_basp_message:
  case caf::sec::unknown_type:
  case caf::sec::incompatible_versions:
  case caf::sec::incompatible_application_ids:
    return errc::corrupt_data;
  default:
    return errc::internal;
  }
}

} // namespace

caf::error to_caf_error(const error& err) {
  if (err.code == errc::none)
    return caf::error{};
  return caf::error{err.code, err.message};
}

error from_caf_error(const caf::error& err) {
  if (!err)
    return {};
  if (err.category() == caf_error_category) {
    std::string text;
    if (err.context().match_elements<std::string>())
      text = err.context().get_as<std::string>(0);
    if (err.code() > static_cast<uint8_t>(msg::ErrorCode::MAX))
      return make_error(errc::internal, "unknown mosaic error code ", std::to_string(err.code()),
                        ": ", text);
    return error{static_cast<errc>(err.code()), std::move(text)};
  }
  auto code = errc::internal;
  if (err.category() == caf_system_category)
    code = code_of_sec(static_cast<caf::sec>(err.code()));
  return make_error(code, "actor system: ", caf::to_string(err));
}

void init_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::mosaic>();
  cfg.add_error_category(caf_error_category,
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out = "mosaic: ";
                           out += to_string(static_cast<errc>(code));
                           if (ctx.match_elements<std::string>()) {
                             out += ": ";
                             out += ctx.get_as<std::string>(0);
                           }
                           return out;
                         });
}

void init_network(caf::actor_system_config& cfg) {
  cfg.load<caf::io::middleman>();
}

} // namespace mosaic
