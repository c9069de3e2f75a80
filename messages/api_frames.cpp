#include "messages/api_frames.hpp"

#include "messages/api_generated.h"
#include "messages/fb_message.hpp"

namespace mosaic {

template <>
struct message_traits<api::ClientFrame> {
  static constexpr const char* name = "mosaic.api.ClientFrame";
  static constexpr const char* identifier = "MZCF";
};
template <>
struct message_traits<api::ServerFrame> {
  static constexpr const char* name = "mosaic.api.ServerFrame";
  static constexpr const char* identifier = "MZSF";
};

namespace api {

namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

std::string str(const flatbuffers::String* s) {
  return s == nullptr ? std::string{} : s->str();
}

Offset<flatbuffers::String> opt_string(FlatBufferBuilder& fbb, const std::string& s) {
  return s.empty() ? Offset<flatbuffers::String>{} : fbb.CreateString(s);
}

Role role_of(const std::string& role) {
  return role == "system" ? Role::system : role == "assistant" ? Role::assistant : Role::user;
}

Offset<ContentPart> add_part(FlatBufferBuilder& fbb, const part& p) {
  if (const auto* text = std::get_if<std::string>(&p)) {
    auto t = CreateTextPart(fbb, fbb.CreateString(*text));
    return CreateContentPart(fbb, Part::TextPart, t.Union());
  }
  if (const auto* img = std::get_if<image_bytes>(&p)) {
    auto data = fbb.CreateVector(img->data);
    auto b = CreateImageBytes(fbb, data, opt_string(fbb, img->mime));
    return CreateContentPart(fbb, Part::ImageBytes, b.Union());
  }
  auto r = CreateImageRef(fbb, fbb.CreateString(std::get<image_ref>(p).id));
  return CreateContentPart(fbb, Part::ImageRef, r.Union());
}

Offset<ChatRequest> add_chat(FlatBufferBuilder& fbb, const chat_request& c) {
  std::vector<Offset<Message>> messages;
  for (const auto& m : c.messages) {
    std::vector<Offset<ContentPart>> parts;
    for (const auto& p : m.content)
      parts.push_back(add_part(fbb, p));
    auto content = fbb.CreateVector(parts);
    messages.push_back(CreateMessage(fbb, role_of(m.role), content));
  }
  auto msgs = fbb.CreateVector(messages);
  auto key = opt_string(fbb, c.api_key);
  auto model = opt_string(fbb, c.model);
  auto stop = c.stop.empty() ? Offset<flatbuffers::Vector<Offset<flatbuffers::String>>>{}
                             : fbb.CreateVectorOfStrings(c.stop);
  auto policy = opt_string(fbb, c.policy);
  ChatRequestBuilder b{fbb};
  b.add_api_key(key);
  b.add_model(model);
  b.add_messages(msgs);
  b.add_max_tokens(c.max_tokens);
  b.add_temperature(c.temperature);
  b.add_top_p(c.top_p);
  if (c.seed)
    b.add_seed(*c.seed);
  b.add_stop(stop);
  b.add_policy(policy);
  return b.Finish();
}

template <class Table>
std::vector<uint8_t> finish(FlatBufferBuilder& fbb, Offset<Table> root) {
  auto m = fb_message<Table>::finish(fbb, root);
  return {m.bytes().begin(), m.bytes().end()};
}

result<part> read_part(const ContentPart& cp) {
  switch (cp.part_type()) {
  case Part::TextPart:
    return part{cp.part_as_TextPart()->text()->str()};
  case Part::ImageBytes: {
    const auto* b = cp.part_as_ImageBytes();
    return part{image_bytes{{b->data()->begin(), b->data()->end()}, str(b->mime())}};
  }
  case Part::ImageRef:
    return part{image_ref{cp.part_as_ImageRef()->id()->str()}};
  default:
    return make_error(errc::invalid_argument, "unknown content part type ",
                      std::to_string(int(cp.part_type())),
                      "; expected text, image bytes or an "
                      "image reference");
  }
}

result<chat_request> read_chat(const ChatRequest& r) {
  chat_request c;
  c.api_key = str(r.api_key());
  c.model = str(r.model());
  if (r.messages() != nullptr)
    for (const auto* m : *r.messages()) {
      message out;
      switch (m->role()) {
      case Role::user:
        out.role = "user";
        break;
      case Role::system:
        out.role = "system";
        break;
      case Role::assistant:
        out.role = "assistant";
        break;
      default:
        return make_error(errc::invalid_argument, "unknown message role ",
                          std::to_string(int(m->role())), "; expected user, system or assistant");
      }
      if (m->content() != nullptr)
        for (const auto* cp : *m->content()) {
          auto p = read_part(*cp);
          if (!p)
            return std::move(p).err();
          out.content.push_back(std::move(*p));
        }
      c.messages.push_back(std::move(out));
    }
  c.max_tokens = r.max_tokens();
  c.temperature = r.temperature();
  c.top_p = r.top_p();
  if (r.seed().has_value())
    c.seed = r.seed().value();
  if (r.stop() != nullptr)
    for (const auto* s : *r.stop())
      c.stop.push_back(s->str());
  c.policy = str(r.policy());
  return c;
}

} // namespace

std::vector<uint8_t> encode(const client_frame& f) {
  FlatBufferBuilder fbb{256};
  Offset<void> body;
  ClientBody type = ClientBody::CancelRequest;
  if (const auto* c = std::get_if<chat_request>(&f.body)) {
    body = add_chat(fbb, *c).Union();
    type = ClientBody::ChatRequest;
  } else {
    body = CreateCancelRequest(fbb).Union();
  }
  return finish(fbb, CreateClientFrame(fbb, f.request_id, type, body));
}

std::vector<uint8_t> encode(const server_frame& f) {
  FlatBufferBuilder fbb{128};
  Offset<void> body;
  ServerBody type = ServerBody::TokenFrame;
  if (const auto* t = std::get_if<token_frame>(&f.body)) {
    body = CreateTokenFrame(fbb, t->index, t->token_id, opt_string(fbb, t->text)).Union();
  } else if (const auto* d = std::get_if<finish_frame>(&f.body)) {
    type = ServerBody::FinishFrame;
    body = CreateFinishFrame(fbb, opt_string(fbb, d->finish_reason), d->prompt_tokens,
                             d->completion_tokens, d->image_tokens)
               .Union();
  } else {
    const auto& e = std::get<error_frame>(f.body);
    type = ServerBody::ErrorFrame;
    auto t = opt_string(fbb, e.type);
    auto m = opt_string(fbb, e.message);
    auto p = opt_string(fbb, e.param);
    auto c = opt_string(fbb, e.code);
    body = CreateErrorFrame(fbb, e.status, t, m, p, c).Union();
  }
  return finish(fbb, CreateServerFrame(fbb, f.request_id, type, body));
}

result<client_frame> decode_client_frame(std::span<const uint8_t> bytes) {
  auto m = fb_message<ClientFrame>::from_bytes(bytes);
  if (!m)
    return std::move(m).err();
  client_frame out;
  out.request_id = (*m)->request_id();
  switch ((*m)->body_type()) {
  case ClientBody::ChatRequest: {
    auto c = read_chat(*(*m)->body_as_ChatRequest());
    if (!c)
      return std::move(c).err();
    out.body = std::move(*c);
    return out;
  }
  case ClientBody::CancelRequest:
    out.body = cancel_request{};
    return out;
  default:
    return make_error(errc::invalid_argument, "unknown client frame body ",
                      std::to_string(int((*m)->body_type())),
                      "; expected a chat request or a cancel");
  }
}

result<server_frame> decode_server_frame(std::span<const uint8_t> bytes) {
  auto m = fb_message<ServerFrame>::from_bytes(bytes);
  if (!m)
    return std::move(m).err();
  server_frame out;
  out.request_id = (*m)->request_id();
  switch ((*m)->body_type()) {
  case ServerBody::TokenFrame: {
    const auto* t = (*m)->body_as_TokenFrame();
    out.body = token_frame{t->index(), t->token_id(), str(t->text())};
    return out;
  }
  case ServerBody::FinishFrame: {
    const auto* d = (*m)->body_as_FinishFrame();
    out.body = finish_frame{str(d->finish_reason()), d->prompt_tokens(), d->completion_tokens(),
                            d->image_tokens()};
    return out;
  }
  case ServerBody::ErrorFrame: {
    const auto* e = (*m)->body_as_ErrorFrame();
    out.body = error_frame{e->status(), str(e->type()), str(e->message()), str(e->param()),
                           str(e->code())};
    return out;
  }
  default:
    return make_error(errc::invalid_argument, "unknown server frame body ",
                      std::to_string(int((*m)->body_type())));
  }
}

} // namespace api
} // namespace mosaic
