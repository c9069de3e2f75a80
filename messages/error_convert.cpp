#include "messages/error_convert.hpp"

#include <string>

namespace mosaic {

namespace {

// The schema enum mirrors engine/error.hpp value by value.
#define MOSAIC_SAME_CODE_(name)                                                                    \
  static_assert(static_cast<uint8_t>(errc::name) == static_cast<uint8_t>(msg::ErrorCode::name),    \
                "msg::ErrorCode::" #name " differs from mosaic::errc::" #name);
MOSAIC_SAME_CODE_(none)
MOSAIC_SAME_CODE_(invalid_argument)
MOSAIC_SAME_CODE_(not_found)
MOSAIC_SAME_CODE_(io_error)
MOSAIC_SAME_CODE_(corrupt_data)
MOSAIC_SAME_CODE_(out_of_memory)
MOSAIC_SAME_CODE_(unsupported)
MOSAIC_SAME_CODE_(overloaded)
MOSAIC_SAME_CODE_(timeout)
MOSAIC_SAME_CODE_(cancelled)
MOSAIC_SAME_CODE_(permission_denied)
MOSAIC_SAME_CODE_(internal)
MOSAIC_SAME_CODE_(unavailable)
MOSAIC_SAME_CODE_(no_space)
#undef MOSAIC_SAME_CODE_
static_assert(msg::ErrorCode::MAX == msg::ErrorCode::no_space,
              "a new msg::ErrorCode needs its mosaic::errc twin");

} // namespace

msg::ErrorCode to_msg_code(errc code) noexcept {
  return static_cast<msg::ErrorCode>(code);
}

error to_error(const msg::Error& err) {
  auto raw = static_cast<uint8_t>(err.code());
  std::string text = err.message() != nullptr ? err.message()->str() : std::string{};
  if (raw > static_cast<uint8_t>(msg::ErrorCode::MAX))
    return make_error(errc::internal, "peer sent unknown error code ", std::to_string(raw), ": ",
                      text);
  return error{static_cast<errc>(raw), std::move(text)};
}

status to_status(const msg::Error* err) {
  if (err == nullptr || err->code() == msg::ErrorCode::none)
    return {};
  return to_error(*err);
}

flatbuffers::Offset<msg::Error> add_error(flatbuffers::FlatBufferBuilder& fbb, const error& err,
                                          uint64_t request_id) {
  auto text = fbb.CreateString(err.message);
  return msg::CreateError(fbb, to_msg_code(err.code), text, request_id);
}

error_msg make_error_msg(const error& err, uint64_t request_id) {
  flatbuffers::FlatBufferBuilder fbb{128};
  auto root = add_error(fbb, err, request_id);
  return error_msg::finish(fbb, root);
}

} // namespace mosaic
