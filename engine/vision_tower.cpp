#include "engine/vision_tower.hpp"

#include <cmath>
#include <string>

namespace mosaic {

namespace {

constexpr std::string_view prefix = "vision_tower.vision_model.";

std::string name_of(std::string_view suffix) {
  return std::string{prefix}.append(suffix);
}

std::string layer_name(int i, std::string_view suffix) {
  return std::string{prefix} + "encoder.layers." + std::to_string(i) + "." + std::string{suffix};
}

status check_config(const vision_config& c) {
  auto bad = [](std::string_view what) {
    return make_error(errc::invalid_argument, "vision_config: ", what);
  };
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
    return bad("hidden_size must be a positive multiple of num_attention_heads");
  if (c.patch_size <= 0 || c.image_size <= 0 || c.image_size % c.patch_size != 0)
    return bad("image_size must be a positive multiple of patch_size");
  if (c.num_channels <= 0 || c.intermediate_size <= 0)
    return bad("num_channels and intermediate_size must be positive");
  if (c.layers_to_run() < 0 || c.layers_to_run() > c.num_layers)
    return bad("vision_feature_layer is out of range for num_hidden_layers");
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    return bad("hidden_act must be quick_gelu or gelu");
  if (c.feature_select != "default" && c.feature_select != "full")
    return bad("vision_feature_select_strategy must be default or full");
  return {};
}

} // namespace

result<vision_tower> vision_tower::create(backend& be, const vision_config& cfg,
                                          const weight_lookup& lookup) {
  MOSAIC_TRY(check_config(cfg));
  vision_tower t{be, cfg};
  const int64_t hid = cfg.hidden_size;
  const int64_t inter = cfg.intermediate_size;
  auto up = [&](device_buffer& dst, std::string_view name, std::initializer_list<int64_t> shape) {
    return upload_weight_into(dst, be, lookup, name, shape);
  };
  // The conv weight [hidden, channels, patch, patch] is, flattened, the
  // [hidden, channels * patch * patch] matrix im2col_patches expects.
  {
    const host_tensor* pw = lookup(name_of("embeddings.patch_embedding.weight"));
    if (pw != nullptr && pw->shape.size() == 4) {
      MOSAIC_TRY(up(t.patch_w_, name_of("embeddings.patch_embedding.weight"),
                    {hid, cfg.num_channels, cfg.patch_size, cfg.patch_size}));
    } else {
      MOSAIC_TRY(up(t.patch_w_, name_of("embeddings.patch_embedding.weight"),
                    {hid, int64_t{cfg.num_channels} * cfg.patch_size * cfg.patch_size}));
    }
  }
  MOSAIC_TRY(up(t.class_emb_, name_of("embeddings.class_embedding"), {hid}));
  MOSAIC_TRY(up(t.pos_emb_, name_of("embeddings.position_embedding.weight"),
                {cfg.num_patches() + 1, hid}));
  MOSAIC_TRY(up(t.pre_ln_w_, name_of("pre_layrnorm.weight"), {hid}));
  MOSAIC_TRY(up(t.pre_ln_b_, name_of("pre_layrnorm.bias"), {hid}));

  t.layers_.resize(static_cast<size_t>(cfg.layers_to_run()));
  for (int i = 0; i < cfg.layers_to_run(); ++i) {
    layer& l = t.layers_[static_cast<size_t>(i)];
    auto lu = [&](device_buffer& dst, std::string_view suffix,
                  std::initializer_list<int64_t> shape) {
      return up(dst, layer_name(i, suffix), shape);
    };
    MOSAIC_TRY(lu(l.ln1_w, "layer_norm1.weight", {hid}));
    MOSAIC_TRY(lu(l.ln1_b, "layer_norm1.bias", {hid}));
    MOSAIC_TRY(lu(l.q_w, "self_attn.q_proj.weight", {hid, hid}));
    MOSAIC_TRY(lu(l.q_b, "self_attn.q_proj.bias", {hid}));
    MOSAIC_TRY(lu(l.k_w, "self_attn.k_proj.weight", {hid, hid}));
    MOSAIC_TRY(lu(l.k_b, "self_attn.k_proj.bias", {hid}));
    MOSAIC_TRY(lu(l.v_w, "self_attn.v_proj.weight", {hid, hid}));
    MOSAIC_TRY(lu(l.v_b, "self_attn.v_proj.bias", {hid}));
    MOSAIC_TRY(lu(l.o_w, "self_attn.out_proj.weight", {hid, hid}));
    MOSAIC_TRY(lu(l.o_b, "self_attn.out_proj.bias", {hid}));
    MOSAIC_TRY(lu(l.ln2_w, "layer_norm2.weight", {hid}));
    MOSAIC_TRY(lu(l.ln2_b, "layer_norm2.bias", {hid}));
    MOSAIC_TRY(lu(l.fc1_w, "mlp.fc1.weight", {inter, hid}));
    MOSAIC_TRY(lu(l.fc1_b, "mlp.fc1.bias", {inter}));
    MOSAIC_TRY(lu(l.fc2_w, "mlp.fc2.weight", {hid, inter}));
    MOSAIC_TRY(lu(l.fc2_b, "mlp.fc2.bias", {hid}));
  }
  MOSAIC_TRY(t.allocate_scratch());
  return t;
}

int vision_tower::output_tokens() const {
  return cfg_.num_patches() + (cfg_.feature_select == "full" ? 1 : 0);
}

status vision_tower::allocate_scratch() {
  const size_t rows = static_cast<size_t>(cfg_.num_patches()) + 1;
  const size_t hid = static_cast<size_t>(cfg_.hidden_size);
  const size_t patch_len =
      static_cast<size_t>(cfg_.num_channels) * cfg_.patch_size * cfg_.patch_size;
  auto alloc = [&](device_buffer& dst, size_t floats) -> status {
    auto buf = be_->allocate(floats * sizeof(float));
    if (!buf)
      return std::move(buf).err();
    dst = std::move(*buf);
    return {};
  };
  MOSAIC_TRY(alloc(patches_, static_cast<size_t>(cfg_.num_patches()) * patch_len));
  MOSAIC_TRY(alloc(x_, rows * hid));
  MOSAIC_TRY(alloc(h_, rows * hid));
  MOSAIC_TRY(alloc(q_, rows * hid));
  MOSAIC_TRY(alloc(k_, rows * hid));
  MOSAIC_TRY(alloc(v_, rows * hid));
  MOSAIC_TRY(alloc(mlp_, rows * static_cast<size_t>(cfg_.intermediate_size)));
  return {};
}

void vision_tower::run_layer(const layer& w) {
  backend& be = *be_;
  const int rows = cfg_.num_patches() + 1;
  const int hid = cfg_.hidden_size;
  const int inter = cfg_.intermediate_size;
  const float eps = cfg_.layer_norm_eps;

  // Self-attention block (pre-LN, non-causal, biases everywhere).
  be.layer_norm(x_.f32(), w.ln1_w.f32(), w.ln1_b.f32(), h_.f32(), rows, hid, eps);
  be.matmul(h_.f32(), w.q_w.f32(), q_.f32(), rows, hid, hid, true);
  be.add_bias(q_.f32(), w.q_b.f32(), rows, hid);
  be.matmul(h_.f32(), w.k_w.f32(), k_.f32(), rows, hid, hid, true);
  be.add_bias(k_.f32(), w.k_b.f32(), rows, hid);
  be.matmul(h_.f32(), w.v_w.f32(), v_.f32(), rows, hid, hid, true);
  be.add_bias(v_.f32(), w.v_b.f32(), rows, hid);
  attention_args a;
  a.q = q_.f32();
  a.k = k_.f32();
  a.v = v_.f32();
  a.out = h_.f32();
  a.nq = rows;
  a.nk = rows;
  a.n_heads = cfg_.num_heads;
  a.n_kv_heads = cfg_.num_heads;
  a.head_dim = cfg_.head_dim();
  a.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim()));
  a.causal = false;
  be.attention(a);
  // x += attn · Wo^T + bo
  be.matmul(h_.f32(), w.o_w.f32(), x_.f32(), rows, hid, hid, true, 1.0f, 1.0f);
  be.add_bias(x_.f32(), w.o_b.f32(), rows, hid);

  // MLP block.
  be.layer_norm(x_.f32(), w.ln2_w.f32(), w.ln2_b.f32(), h_.f32(), rows, hid, eps);
  be.matmul(h_.f32(), w.fc1_w.f32(), mlp_.f32(), rows, inter, hid, true);
  be.add_bias(mlp_.f32(), w.fc1_b.f32(), rows, inter);
  const size_t n = static_cast<size_t>(rows) * inter;
  if (cfg_.hidden_act == "gelu")
    be.gelu(mlp_.f32(), n);
  else
    be.quick_gelu(mlp_.f32(), n);
  be.matmul(mlp_.f32(), w.fc2_w.f32(), x_.f32(), rows, hid, inter, true, 1.0f, 1.0f);
  be.add_bias(x_.f32(), w.fc2_b.f32(), rows, hid);
}

status vision_tower::encode(const float* image, float* out) {
  backend& be = *be_;
  const int hid = cfg_.hidden_size;
  const int n_patches = cfg_.num_patches();
  const int patch_len = cfg_.num_channels * cfg_.patch_size * cfg_.patch_size;
  const size_t row_bytes = static_cast<size_t>(hid) * sizeof(float);

  // Row 0: class token; rows 1..n_patches: patch embeddings (conv, no bias).
  be.im2col_patches(image, patches_.f32(), cfg_.num_channels, cfg_.image_size, cfg_.image_size,
                    cfg_.patch_size);
  MOSAIC_TRY(be.copy(x_.f32(), class_emb_.f32(), row_bytes));
  be.matmul(patches_.f32(), patch_w_.f32(), x_.f32() + hid, n_patches, hid, patch_len, true);
  be.add(x_.f32(), pos_emb_.f32(), x_.f32(), static_cast<size_t>(n_patches + 1) * hid);
  // layer_norm does not promise in-place operation: normalise into h_.
  be.layer_norm(x_.f32(), pre_ln_w_.f32(), pre_ln_b_.f32(), h_.f32(), n_patches + 1, hid,
                cfg_.layer_norm_eps);
  MOSAIC_TRY(be.copy(x_.f32(), h_.f32(), static_cast<size_t>(n_patches + 1) * row_bytes));

  for (const layer& w : layers_)
    run_layer(w);

  const bool keep_class = cfg_.feature_select == "full";
  const float* src = keep_class ? x_.f32() : x_.f32() + hid;
  return be.copy(out, src, static_cast<size_t>(output_tokens()) * row_bytes);
}

result<std::vector<float>> vision_tower::encode_host(std::span<const float> image) {
  const size_t want = static_cast<size_t>(cfg_.num_channels) * cfg_.image_size * cfg_.image_size;
  if (image.size() != want)
    return make_error(errc::invalid_argument, "vision tower: image has ",
                      std::to_string(image.size()), " values, expected ", std::to_string(want),
                      " (channels x image_size x image_size, preprocessed)");
  auto img = be_->allocate(want * sizeof(float));
  if (!img)
    return std::move(img).err();
  const size_t out_n = static_cast<size_t>(output_tokens()) * cfg_.hidden_size;
  auto out = be_->allocate(out_n * sizeof(float));
  if (!out)
    return std::move(out).err();
  MOSAIC_TRY(be_->upload(img->data(), image.data(), want * sizeof(float)));
  MOSAIC_TRY(encode(img->f32(), out->f32()));
  MOSAIC_TRY(be_->synchronize());
  std::vector<float> host(out_n);
  MOSAIC_TRY(be_->download(host.data(), out->data(), out_n * sizeof(float)));
  return host;
}

} // namespace mosaic
