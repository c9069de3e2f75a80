// Writes the seed inputs of the binary formats (FlatBuffers messages, API
// frames, transfer frames, KV entry files) into tests/fuzz/corpus/<target>/
// with the project's own encoders, so the seeds are valid today's format:
//   build/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
// The text formats' seeds (JSON, YAML, key files, images) are files
// written by hand or copied from tests/data (README.md).

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/model/sha256.hpp"
#include "kv/entry_file.hpp"
#include "kv/library_key.hpp"
#include "kv/transfer/wire.hpp"
#include "messages/api_frames.hpp"
#include "messages/builders.hpp"

namespace fs = std::filesystem;
using namespace mosaic;

namespace {

void write(const fs::path& file, const void* data, size_t size) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(size));
  if (!out)
    std::fprintf(stderr, "cannot write %s\n", file.c_str());
}

template <class Bytes>
void write(const fs::path& file, const Bytes& bytes) {
  write(file, bytes.data(), bytes.size());
}

wire::kv_handle kv_handle() {
  return {.node = "p0",
          .endpoint = "tcp://10.0.0.2:7001",
          .sequence = 7,
          .n_tokens = 40,
          .n_layers = 2,
          .kv_dim = 64,
          .dtype = msg::DType::f16};
}

void messages(const fs::path& dir) {
  wire::generate_request req{
      .request_id = (uint64_t{1} << 40) + 3, .tenant = "tenant-a", .model = "builtin:small"};
  req.segments = {wire::text_segment{"USER: What is in "},
                  wire::image_key_segment{library_key_bytes{1, 2, 3}},
                  wire::image_data_segment{{0x89, 'P', 'N', 'G', 13, 10, 26, 10}, "image/png"},
                  wire::text_segment{" ASSISTANT:"}};
  req.sampling.stop = {"\n\n", "USER:"};
  req.sampling.seed = 42;
  req.reuse_policy = "mpic:32";
  write(dir / "generate_request", make_generate_request_msg(req).bytes());
  write(
      dir / "token_event",
      make_token_event_msg({.request_id = 9, .index = 3, .token_id = 77, .text = " cat"}).bytes());
  write(dir / "cancel", make_cancel_msg(9, "client went away").bytes());
  wire::library_lookup_result lr{.request_id = 4};
  lr.entries = {{.key = {9}, .tier = msg::Tier::ram, .entry_id = 5, .n_tokens = 576},
                {.key = {8}, .tier = msg::Tier::miss}};
  write(dir / "library_lookup_result", make_library_lookup_result_msg(lr).bytes());
  write(dir / "prefill_done",
        make_prefill_done_msg(
            {.request_id = 4, .kv = kv_handle(), .first_token = 12, .prompt_tokens = 40})
            .bytes());
  wire::decode_task task{.request_id = 4,
                         .tenant = "tenant-a",
                         .kv = kv_handle(),
                         .first_token = 12,
                         .prompt_tokens = 40,
                         .stream = true};
  write(dir / "decode_task", make_decode_task_msg(task).bytes());
}

void api_frames(const fs::path& dir) {
  api::chat_request chat;
  chat.api_key = "sk-test";
  chat.model = "builtin:small";
  chat.messages = {
      {.role = "system", .content = {std::string{"Be brief."}}},
      {.role = "user",
       .content = {std::string{"Compare "}, api::image_bytes{{1, 2, 3, 4}, "image/png"},
                   api::image_ref{"0123abcd"}}}};
  chat.seed = 5;
  chat.stop = {"END"};
  chat.policy = "vlcache:0.05";
  write(dir / "client_chat", api::encode(api::client_frame{.request_id = 1, .body = chat}));
  write(dir / "client_cancel",
        api::encode(api::client_frame{.request_id = 1, .body = api::cancel_request{}}));
  write(dir / "server_token",
        api::encode(api::server_frame{.request_id = 1, .body = api::token_frame{0, 42, " hi"}}));
  write(dir / "server_finish", api::encode(api::server_frame{
                                   .request_id = 1, .body = api::finish_frame{"stop", 40, 3, 24}}));
  write(dir / "server_error",
        api::encode(api::server_frame{
            .request_id = 1,
            .body = api::error_frame{429, "rate_limit_exceeded", "busy", "", "too_many"}}));
}

void transfer_frames(const fs::path& dir) {
  using namespace kv::transfer;
  auto begin = encode(frame_header{.kind = frame_kind::begin, .request_id = 77});
  auto payload = encode(begin_payload{.n_layers = 4, .layer_bytes = 1 << 16});
  std::vector<std::byte> frame(begin.begin(), begin.end());
  frame.insert(frame.end(), payload.begin(), payload.end());
  write(dir / "begin", frame);
  write(dir / "chunk", encode(frame_header{.kind = frame_kind::chunk,
                                           .request_id = 77,
                                           .layer = 2,
                                           .offset = 4096,
                                           .size = 4096,
                                           .checksum = 0x1234}));
  write(dir / "credit", encode(frame_header{.kind = frame_kind::credit, .size = 8}));
  write(dir / "error_payload", encode_error(error{errc::no_space, "disk full"}));
}

void kv_entries(const fs::path& dir) {
  const fs::path tmp = fs::temp_directory_path() / ("mosaic-seeds-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  compiled_image img;
  img.resize(3, 2, 8, 4);
  for (size_t i = 0; i < img.embeddings.size(); ++i)
    img.embeddings[i] = float(i) * 0.25f - 1.0f;
  for (size_t i = 0; i < img.k.size(); ++i)
    img.k[i] = float(i) * 0.5f, img.v[i] = -float(i);
  kv::entry_header h;
  h.image_key = sha256("seed image");
  h.model_fingerprint = sha256("seed model");
  h.owner_ns = "tenant:alice";
  h.key = kv::library_key(h.image_key, h.model_fingerprint, h.owner_ns);
  h.n_kv_heads = 2;
  h.head_dim = 2;
  auto written = kv::write_entry(tmp, h, img);
  if (!written) {
    std::fprintf(stderr, "write_entry: %s\n", written.err().to_string().c_str());
    return;
  }
  std::ifstream in(kv::entry_path(tmp, h.key), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  fs::remove_all(tmp);
  // The first byte picks the mode (kv_entry_fuzz.cpp): 0 as is, 1 repaired.
  for (uint8_t mode : {0, 1}) {
    std::vector<uint8_t> seed{mode};
    seed.insert(seed.end(), bytes.begin(), bytes.end());
    write(dir / ("entry_mode" + std::to_string(mode)), seed);
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  messages(root / "messages");
  api_frames(root / "api_frames");
  transfer_frames(root / "transfer_frames");
  kv_entries(root / "kv_entry");
  std::printf("wrote seeds under %s\n", root.c_str());
  return 0;
}
