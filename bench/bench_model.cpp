#include "bench/bench_model.hpp"

#include "engine/cpu/cpu_backend.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::bench {

double vision_flops(const model_config& c) {
  const auto& v = c.vision;
  const double n = v.num_patches() + 1.0; // + the class token
  const double d = v.hidden_size, m = v.intermediate_size, t = c.text.hidden_size;
  const double patch = 2.0 * v.num_patches() * v.num_channels * v.patch_size * v.patch_size * d;
  const double layer = 2.0 * n * (4.0 * d * d + 2.0 * d * m) + 4.0 * n * n * d;
  const double projector = 2.0 * c.view_tokens() * (d * t + t * t);
  return patch + v.layers_to_run() * layer + projector;
}

int64_t bench_model::decoder_linear_params() const {
  const auto& t = cfg.text;
  const int64_t h = t.hidden_size;
  const int64_t per_layer = h * h /*q*/ + 2 * h * t.kv_dim() /*k, v*/ + h * h /*o*/ +
                            3 * h * t.intermediate_size /*gate, up, down*/;
  return per_layer * t.num_layers;
}

double bench_model::attention_flops(double pairs) const {
  const auto& t = cfg.text;
  // QK^T and PV: 2 * head_dim FLOPs each per pair and head.
  return 4.0 * t.head_dim() * t.num_heads * t.num_layers * pairs;
}

result<std::vector<float>> bench_model::random_image_embeddings(std::mt19937& rng) {
  decoded_image img;
  img.width = cfg.vision.image_size;
  img.height = cfg.vision.image_size;
  if (cfg.anyres()) { // a 640 x 480 photo at LLaVA-1.6's 336-px tiles
    img.width = cfg.vision.image_size * 640 / 336;
    img.height = cfg.vision.image_size * 480 / 336;
  }
  if (cfg.qwen_vl()) { // a 1280 x 960 photo, smart_resize'd to max_pixels
    img.width = 1280;
    img.height = 960;
  }
  auto grid = cfg.image_token_grid(img.height, img.width);
  if (!grid)
    return std::move(grid).err();
  last_grid = *grid;
  img.rgb.resize(static_cast<size_t>(img.width) * img.height * 3);
  std::uniform_int_distribution<int> px(0, 255);
  for (auto& v : img.rgb)
    v = static_cast<uint8_t>(px(rng));
  return encoder->encode(img);
}

std::vector<int32_t> bench_model::random_text(std::mt19937& rng, int n) const {
  // Ids 3.. below the image token are ordinary SentencePiece pieces; Qwen's
  // special tokens follow its vocabulary, from <|endoftext|> (= bos).
  const int32_t top =
      cfg.qwen_vl() ? cfg.text.bos_token_id : std::min(cfg.image_token_index, cfg.text.vocab_size);
  std::uniform_int_distribution<int32_t> id(3, top - 1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& v : out)
    v = id(rng);
  return out;
}

result<bench_model> load_bench_model(std::string_view spec, int threads, int pool_tokens) {
  bench_model m;
  auto dir = resolve_model(spec);
  if (!dir)
    return std::move(dir).err();
  m.dir = *dir;
  auto cfg = load_model_config(m.dir);
  if (!cfg)
    return std::move(cfg).err();
  m.cfg = *cfg;
  auto w = model_weights::load(m.dir, m.cfg);
  if (!w)
    return std::move(w).err();
  m.weights = std::make_unique<model_weights>(std::move(*w));
  m.be = make_cpu_backend(threads);
  auto dec = upload_decoder_weights(*m.be, m.cfg.text, lookup_in(*m.weights));
  if (!dec)
    return std::move(dec).err();
  m.decoder = std::make_unique<decoder_weights>(std::move(*dec));
  auto enc = image_encoder::create(*m.be, m.cfg, lookup_in(*m.weights));
  if (!enc)
    return std::move(enc).err();
  m.encoder = std::make_unique<image_encoder>(std::move(*enc));
  kv_pool_options opts;
  opts.block_size = 16;
  opts.n_blocks = (pool_tokens + opts.block_size - 1) / opts.block_size;
  auto pool = kv_pool::create(*m.be, m.cfg.text.num_layers, m.cfg.text.kv_dim(), opts);
  if (!pool)
    return std::move(pool).err();
  m.pool = std::move(*pool);
  return m;
}

} // namespace mosaic::bench
