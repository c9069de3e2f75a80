#include "sim/cluster_target.hpp"

#include "engine/model/image.hpp"
#include "sim/procedural_image.hpp"

namespace mosaic::sim {

cluster_target::cluster_target(actors::local_cluster& cluster, const workload& w,
                               cluster_target_options options)
  : cluster_(&cluster), options_(std::move(options)) {
  const auto& cfg = cluster.context().engine->config();
  keys_.resize(size_t(w.spec.image_pool));
  png_.resize(size_t(w.spec.image_pool));
  tokens_.assign(size_t(w.spec.image_pool), cfg.image_tokens());
  for (int idx : w.used_images()) {
    auto img = procedural_image(w.seed, idx, w.spec.image_size);
    keys_[size_t(idx)] = image_key(img, cfg.vision);
    // Anyres: the image's own count (an image the model refuses is
    // reported at the most; the request fails anyway).
    if (auto n = cfg.image_tokens_for(img.height, img.width))
      tokens_[size_t(idx)] = *n;
    if (!options_.images_by_key)
      png_[size_t(idx)] = encode_png(img);
  }
}

cluster_target::~cluster_target() {
  drain(std::chrono::milliseconds{0});
}

void cluster_target::submit(const sim_request& req, on_token token, on_done done) {
  wire::generate_request g;
  g.tenant = options_.tenant;
  g.stream = true;
  g.reuse_policy = options_.policy;
  g.kv_compression = options_.compression;
  g.sampling.max_tokens = uint32_t(req.max_tokens);
  g.sampling.temperature = 0.0f;
  g.sampling.seed = options_.sampling_seed;
  g.deadline_unix_ns = actors::unix_now_ns() + options_.deadline.count() * 1'000'000;
  int image_tokens = 0;
  for (const auto& p : req.pieces) {
    if (!p.is_image) {
      g.segments.push_back(wire::text_segment{p.text});
      continue;
    }
    image_tokens += tokens_[size_t(p.image)];
    if (options_.images_by_key)
      g.segments.push_back(wire::image_key_segment{keys_[size_t(p.image)]});
    else
      g.segments.push_back(wire::image_data_segment{png_[size_t(p.image)], "image/png"});
  }
  auto stream = cluster_->submit(g);
  std::lock_guard lock{mutex_};
  streams_.push_back(stream);
  readers_.emplace_back([stream, token = std::move(token), done = std::move(done), image_tokens] {
    request_outcome out;
    for (;;) {
      auto ev = stream->next(std::chrono::milliseconds{200});
      if (!ev) {
        if (stream->finished())
          break;
        continue;
      }
      const auto at = clock::now();
      if (ev->finish == msg::FinishReason::none) {
        token(ev->token_id, at);
        out.tokens.push_back(ev->token_id);
        continue;
      }
      out.prompt_tokens = int(ev->usage.prompt_tokens());
      break;
    }
    auto end = stream->wait(std::chrono::milliseconds{0});
    out.ok = bool(end);
    if (!end)
      out.error = end.err().to_string();
    out.image_tokens = image_tokens;
    done(out, clock::now());
  });
}

void cluster_target::drain(std::chrono::milliseconds timeout) {
  const auto until = clock::now() + timeout;
  std::vector<std::thread> readers;
  std::vector<std::shared_ptr<actors::token_stream>> streams;
  {
    std::lock_guard lock{mutex_};
    readers.swap(readers_);
    streams.swap(streams_);
  }
  for (auto& s : streams) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now());
    if (!s->wait(std::max(left, std::chrono::milliseconds{0})))
      s->cancel(); // past the drain timeout: the reader sees the end
  }
  for (auto& r : readers)
    r.join();
}

std::string cluster_target::describe() const {
  const auto& o = cluster_->context().options;
  return "in-process cluster (" + o.model + ", " + o.device + ")";
}

result<int> prebuild_dynamic_library(actors::local_cluster& cluster, const workload& w,
                                     std::string_view library) {
  auto& ctx = cluster.context();
  if (!ctx.encoder)
    return make_error(errc::unavailable, "the node has no image encoder to compile images with");
  const auto admin = kv::admin_capability::grant("mosaic sim");
  int compiled = 0;
  for (int idx : w.used_images()) {
    const auto img = procedural_image(w.seed, idx, w.spec.image_size);
    const auto key = image_key(img, ctx.engine->config().vision);
    if (ctx.library->lookup("mosaic-sim-prebuild", key))
      continue;
    std::lock_guard lock{ctx.compute_mutex};
    auto emb = ctx.encoder->encode(img);
    if (!emb)
      return make_error(emb.err().code, "image ", std::to_string(idx), ": ", emb.err().message);
    auto grid = ctx.engine->config().image_token_grid(img.height, img.width); // M-RoPE models
    if (!grid)
      return make_error(grid.err().code, "image ", std::to_string(idx), ": ", grid.err().message);
    auto entry = ctx.engine->compile_image(*emb, {}, 0, *grid);
    if (!entry)
      return make_error(entry.err().code, "image ", std::to_string(idx), ": ", entry.err().message);
    if (auto put = ctx.library->put_shared(admin, library, key, *entry); !put)
      return std::move(put).err();
    ++compiled;
  }
  return compiled;
}

} // namespace mosaic::sim
