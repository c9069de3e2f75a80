#include "messages/fb_message.hpp"

#include <string>

namespace mosaic::detail {

namespace {

/// Root offset, root table's vtable offset, a vtable of two entries: the
/// smallest finished buffer (FlatBuffers' FLATBUFFERS_MIN_BUFFER_SIZE).
constexpr size_t min_buffer_bytes =
    sizeof(flatbuffers::uoffset_t) + sizeof(flatbuffers::soffset_t) + 2 * sizeof(uint16_t);

/// Prints a 4-byte identifier, escaping bytes that are not printable.
std::string printable_identifier(const uint8_t* id) {
  std::string out;
  for (size_t i = 0; i < flatbuffers::kFileIdentifierLength; ++i) {
    auto c = static_cast<char>(id[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[id[i] >> 4];
      out += hex[id[i] & 0xf];
    }
  }
  return out;
}

} // namespace

status check_message_envelope(std::span<const uint8_t> bytes, const char* identifier,
                              const char* name) {
  if (bytes.empty())
    return make_error(errc::corrupt_data, name, ": empty buffer; a message needs at least ",
                      std::to_string(min_buffer_bytes), " bytes");
  if (bytes.size() > max_message_bytes)
    return make_error(errc::corrupt_data, name, ": buffer of ", std::to_string(bytes.size()),
                      " bytes exceeds the limit of ", std::to_string(max_message_bytes),
                      " bytes; send large images by library key");
  if (bytes.size() < min_buffer_bytes)
    return make_error(errc::corrupt_data, name, ": truncated buffer (",
                      std::to_string(bytes.size()), " bytes)");
  if (!flatbuffers::BufferHasIdentifier(bytes.data(), identifier))
    return make_error(errc::corrupt_data, name, ": buffer is tagged '",
                      printable_identifier(bytes.data() + sizeof(flatbuffers::uoffset_t)),
                      "', expected '", identifier, "' (wrong message type or corrupt)");
  return {};
}

error verification_failed(const char* name, size_t size) {
  return make_error(errc::corrupt_data, name, ": buffer of ", std::to_string(size),
                    " bytes failed FlatBuffers verification (truncated or corrupt)");
}

flatbuffers::Verifier::Options verifier_options() {
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;       // our schemas nest at most 5 deep
  opts.max_tables = 1 << 20; // bounds verification time of hostile buffers
  opts.check_alignment = true;
  return opts;
}

} // namespace mosaic::detail
