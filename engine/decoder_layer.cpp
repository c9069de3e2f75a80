#include "engine/decoder_layer.hpp"

#include <algorithm>

namespace mosaic {

result<device_buffer> allocate_floats(backend& be, size_t n) {
  return be.allocate(std::max<size_t>(n, 1) * sizeof(float));
}

result<device_buffer> upload_ints(backend& be, const std::vector<int32_t>& values) {
  auto buf = be.allocate(std::max<size_t>(values.size(), 1) * sizeof(int32_t));
  if (!buf)
    return std::move(buf).err();
  if (!values.empty())
    MOSAIC_TRY(be.upload(buf->data(), values.data(), values.size() * sizeof(int32_t)));
  return buf;
}

result<layer_scratch> layer_scratch::allocate(backend& be, const text_config& cfg, int rows) {
  layer_scratch s;
  s.rows = rows;
  const auto r = static_cast<size_t>(rows);
  const auto q_dim = static_cast<size_t>(cfg.num_heads) * cfg.head_dim();
  const auto kv = static_cast<size_t>(cfg.kv_dim());
  const auto h = static_cast<size_t>(cfg.hidden_size);
  const auto ff = static_cast<size_t>(cfg.intermediate_size);
  struct field {
    device_buffer* buf;
    size_t n;
  };
  for (auto [buf, n] : {field{&s.x, r * h}, field{&s.q, r * q_dim}, field{&s.k, r * kv},
                        field{&s.v, r * kv}, field{&s.attn, r * q_dim}, field{&s.o, r * h},
                        field{&s.gate, r * ff}, field{&s.up, r * ff}}) {
    auto b = allocate_floats(be, n);
    if (!b)
      return std::move(b).err();
    *buf = std::move(*b);
  }
  return s;
}

void project_qkv(backend& be, const text_config& cfg, const decoder_layer_weights& w,
                 const float* h, int rows, layer_scratch& s) {
  const int hidden = cfg.hidden_size;
  const int q_dim = cfg.num_heads * cfg.head_dim();
  const int kv = cfg.kv_dim();
  be.rms_norm(h, w.attn_norm.f32(), s.x.f32(), rows, hidden, cfg.rms_norm_eps);
  be.matmul(s.x.f32(), w.q_proj.f32(), s.q.f32(), rows, q_dim, hidden, true);
  be.matmul(s.x.f32(), w.k_proj.f32(), s.k.f32(), rows, kv, hidden, true);
  be.matmul(s.x.f32(), w.v_proj.f32(), s.v.f32(), rows, kv, hidden, true);
  if (!w.q_bias.empty()) { // Qwen2
    be.add_bias(s.q.f32(), w.q_bias.f32(), rows, q_dim);
    be.add_bias(s.k.f32(), w.k_bias.f32(), rows, kv);
    be.add_bias(s.v.f32(), w.v_bias.f32(), rows, kv);
  }
}

void output_and_mlp(backend& be, const text_config& cfg, const decoder_layer_weights& w, float* h,
                    int rows, layer_scratch& s) {
  const int hidden = cfg.hidden_size;
  const int q_dim = cfg.num_heads * cfg.head_dim();
  const int ff = cfg.intermediate_size;
  // Residual accumulation straight into h (beta = 1).
  be.matmul(s.attn.f32(), w.o_proj.f32(), h, rows, hidden, q_dim, true, 1.0f, 1.0f);
  be.rms_norm(h, w.mlp_norm.f32(), s.x.f32(), rows, hidden, cfg.rms_norm_eps);
  be.matmul(s.x.f32(), w.gate_proj.f32(), s.gate.f32(), rows, ff, hidden, true);
  be.matmul(s.x.f32(), w.up_proj.f32(), s.up.f32(), rows, ff, hidden, true);
  be.silu_mul(s.gate.f32(), s.up.f32(), s.gate.f32(), static_cast<size_t>(rows) * ff);
  be.matmul(s.gate.f32(), w.down_proj.f32(), h, rows, hidden, ff, true, 1.0f, 1.0f);
}

result<std::vector<float>> compute_logits(backend& be, const decoder_weights& w, const float* h,
                                          int rows) {
  const auto& cfg = w.config;
  auto x = allocate_floats(be, static_cast<size_t>(rows) * cfg.hidden_size);
  if (!x)
    return std::move(x).err();
  auto logits = allocate_floats(be, static_cast<size_t>(rows) * cfg.vocab_size);
  if (!logits)
    return std::move(logits).err();
  be.rms_norm(h, w.final_norm.f32(), x->f32(), rows, cfg.hidden_size, cfg.rms_norm_eps);
  be.matmul(x->f32(), w.output_weight(), logits->f32(), rows, cfg.vocab_size, cfg.hidden_size,
            true);
  std::vector<float> out(static_cast<size_t>(rows) * cfg.vocab_size);
  MOSAIC_TRY(be.synchronize());
  MOSAIC_TRY(be.download(out.data(), logits->data(), out.size() * sizeof(float)));
  return out;
}

} // namespace mosaic
