// POST /v1/mosaic/images (upload: raw PNG/JPEG bytes, or JSON
// {"image": "data:image/png;base64,…"}) and DELETE /v1/mosaic/images/{id}.
// An upload encodes the image and compiles its KV into the caller's static
// library; later requests name it as mosaic://library/<id>. Another
// tenant's id answers 404, exactly like an unknown one.

#include <nlohmann/json.hpp>

#include "server/flight.hpp"
#include "server/front_door.hpp"
#include "server/image_probe.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server {

namespace {

using json = nlohmann::json;

api_error not_found_image() {
  return api_error{404, "not_found_error",
                   "no such image in your library; upload it with POST /v1/mosaic/images", "id",
                   "image_not_found"};
}

/// The image bytes of an upload body, or the error to send.
parse_result<std::vector<uint8_t>> upload_bytes(const httplib::Request& req,
                                                const request_limits& limits) {
  const auto type = req.get_header_value("Content-Type");
  if (type.rfind("application/json", 0) != 0)
    return {std::vector<uint8_t>(req.body.begin(), req.body.end()), {}};
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return {std::nullopt,
            invalid_request("", "the body is not a JSON object; send "
                                "{\"image\": \"data:image/png;base64,...\"} or raw bytes")};
  for (const auto& [key, value] : body.items())
    if (key != "image")
      return {std::nullopt, invalid_request(key, "unknown field '" + key + "'; known: image")};
  auto it = body.find("image");
  if (it == body.end() || !it->is_string())
    return {std::nullopt, invalid_request("image", "'image' must be a data URL string "
                                                   "(data:image/png;base64,...)")};
  auto part = parse_image_url(it->get<std::string>(), limits, "image");
  if (!part)
    return {std::nullopt, part.error};
  if (part.value->is_reference())
    return {std::nullopt,
            invalid_request("image", "upload the image itself, not a library reference")};
  return {std::move(part.value->bytes), {}};
}

} // namespace

void handle_upload(front_door& fd, const httplib::Request& req, httplib::Response& res) {
  if (fd.draining)
    return send_error(res, record_failure(fd, shutting_down_error()));
  auto tenant = authenticate(fd, req, res);
  if (!tenant)
    return;
  auto bytes = upload_bytes(req, fd.options.limits);
  if (!bytes)
    return send_error(res, bytes.error);
  if (bytes.value->size() > fd.options.limits.max_image_bytes)
    return send_error(res, api_error{413, "invalid_request_error",
                                     "the image has " + std::to_string(bytes.value->size()) +
                                         " bytes, more than the " +
                                         std::to_string(fd.options.limits.max_image_bytes) +
                                         " allowed; compress or downscale it",
                                     "image", ""});
  auto header = probe_image(*bytes.value);
  if (!header)
    return send_error(res, invalid_request("image", "undecodable image: " + header.err().message));
  if (uint64_t(header->width) * header->height > fd.options.admission.max_image_pixels)
    return send_error(
        res,
        invalid_request("image", "the image has " + std::to_string(header->width) + "x" +
                                     std::to_string(header->height) + " pixels, more than the " +
                                     std::to_string(fd.options.admission.max_image_pixels) +
                                     " allowed; downscale it"));
  auto stored = fd.service.upload(*tenant, *bytes.value, fd.options.upload_timeout);
  if (!stored)
    return send_error(res, api_error_from(stored.err()));
  json body = {{"id", stored->id},
               {"object", "mosaic.image"},
               {"url", "mosaic://library/" + stored->id},
               {"n_tokens", stored->n_tokens}};
  res.set_content(body.dump(), "application/json");
}

void handle_delete(front_door& fd, const httplib::Request& req, httplib::Response& res) {
  auto tenant = authenticate(fd, req, res);
  if (!tenant)
    return;
  const std::string id = req.matches.size() > 1 ? std::string{req.matches[1]} : std::string{};
  auto key = key_from_hex(id);
  if (!key)
    return send_error(res, not_found_image());
  auto st = fd.service.remove(*tenant, *key);
  if (!st)
    return send_error(res, st.err().code == errc::not_found ? not_found_image()
                                                            : api_error_from(st.err()));
  json body = {{"id", key_to_hex(*key)}, {"object", "mosaic.image"}, {"deleted", true}};
  res.set_content(body.dump(), "application/json");
}

} // namespace mosaic::server
