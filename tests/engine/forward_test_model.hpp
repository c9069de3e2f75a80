#pragma once

// Test support for the forward pass: a small random Llama decoder (GQA,
// untied lm_head) held as host tensors under canonical names, uploaded
// through the same `upload_decoder_weights` the engine uses, and a naive
// host reference forward (double accumulation, no backend) as the oracle.

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "engine/cpu/cpu_backend.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/model/model_config.hpp"

namespace mosaic::testing {

inline text_config tiny_text_config(int layers = 3) {
  text_config c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = layers;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.rope_theta = 10000.0f;
  c.rms_norm_eps = 1e-5f;
  c.tie_word_embeddings = false;
  return c;
}

/// Random weights under canonical names.
class random_decoder {
public:
  random_decoder(const text_config& cfg, uint32_t seed) : cfg_(cfg), rng_(seed) {
    const int64_t h = cfg.hidden_size, q = cfg.num_heads * cfg.head_dim(), kv = cfg.kv_dim(),
                  ff = cfg.intermediate_size, v = cfg.vocab_size;
    const std::string p = "language_model.model.";
    add(p + "embed_tokens.weight", {v, h}, 1.0f, 0.0f);
    add(p + "norm.weight", {h}, 0.1f, 1.0f);
    add("language_model.lm_head.weight", {v, h}, 1.0f / std::sqrt(float(h)), 0.0f);
    for (int l = 0; l < cfg.num_layers; ++l) {
      const std::string lp = p + "layers." + std::to_string(l) + ".";
      add(lp + "input_layernorm.weight", {h}, 0.1f, 1.0f);
      add(lp + "post_attention_layernorm.weight", {h}, 0.1f, 1.0f);
      add(lp + "self_attn.q_proj.weight", {q, h}, 1.0f / std::sqrt(float(h)), 0.0f);
      add(lp + "self_attn.k_proj.weight", {kv, h}, 1.0f / std::sqrt(float(h)), 0.0f);
      add(lp + "self_attn.v_proj.weight", {kv, h}, 1.0f / std::sqrt(float(h)), 0.0f);
      add(lp + "self_attn.o_proj.weight", {h, q}, 1.0f / std::sqrt(float(q)), 0.0f);
      add(lp + "mlp.gate_proj.weight", {ff, h}, 1.0f / std::sqrt(float(h)), 0.0f);
      add(lp + "mlp.up_proj.weight", {ff, h}, 1.0f / std::sqrt(float(h)), 0.0f);
      add(lp + "mlp.down_proj.weight", {h, ff}, 1.0f / std::sqrt(float(ff)), 0.0f);
    }
  }

  const text_config& config() const { return cfg_; }
  weight_lookup lookup() const {
    return [this](std::string_view name) -> const host_tensor* {
      auto it = tensors_.find(name);
      return it == tensors_.end() ? nullptr : &it->second;
    };
  }
  const std::vector<float>& at(const std::string& name) const {
    return tensors_.find(name)->second.data;
  }
  const std::vector<float>& layer(int l, const std::string& name) const {
    return at("language_model.model.layers." + std::to_string(l) + "." + name);
  }

  /// Random input embeddings (e.g. a projector output) [n, hidden].
  std::vector<float> random_embeddings(int n) {
    std::normal_distribution<float> d{0.0f, 1.0f};
    std::vector<float> out(static_cast<size_t>(n) * cfg_.hidden_size);
    for (auto& x : out)
      x = d(rng_);
    return out;
  }
  std::vector<int32_t> random_ids(int n) {
    std::uniform_int_distribution<int32_t> d{0, cfg_.vocab_size - 1};
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (auto& x : out)
      x = d(rng_);
    return out;
  }

  // -- reference ------------------------------------------------------------

  /// Embedding rows of text ids.
  std::vector<float> embed(const std::vector<int32_t>& ids) const {
    const auto& e = at("language_model.model.embed_tokens.weight");
    std::vector<float> out;
    for (int32_t id : ids)
      out.insert(out.end(), e.begin() + int64_t(id) * cfg_.hidden_size,
                 e.begin() + int64_t(id + 1) * cfg_.hidden_size);
    return out;
  }

  /// RoPE (HF rotate_half) of one row of `heads` heads at `pos`.
  void rope_row(double* x, int heads, int pos) const {
    const int hd = cfg_.head_dim(), half = hd / 2;
    for (int hh = 0; hh < heads; ++hh) {
      double* r = x + hh * hd;
      for (int i = 0; i < half; ++i) {
        const double ang = pos * std::pow(double(cfg_.rope_theta), -2.0 * i / hd);
        const double a = r[i], b = r[i + half];
        r[i] = a * std::cos(ang) - b * std::sin(ang);
        r[i + half] = b * std::cos(ang) + a * std::sin(ang);
      }
    }
  }

  /// Naive forward of input embeddings x [n, hidden] at positions 0..n-1;
  /// returns the last token's logits. `k_out` (optional) receives every
  /// layer's post-RoPE K: [layers, n, kv_dim].
  std::vector<float> reference_logits(const std::vector<float>& x,
                                      std::vector<double>* k_out = nullptr) const {
    const int H = cfg_.hidden_size, n = int(x.size()) / H, hd = cfg_.head_dim();
    const int nh = cfg_.num_heads, nkv = cfg_.num_kv_heads, kvd = cfg_.kv_dim(), qd = nh * hd;
    const int ff = cfg_.intermediate_size;
    std::vector<double> h(x.begin(), x.end());
    auto linear = [](const std::vector<double>& in, int rows, int in_dim,
                     const std::vector<float>& w, int out_dim) {
      std::vector<double> out(size_t(rows) * out_dim, 0.0);
      for (int r = 0; r < rows; ++r)
        for (int o = 0; o < out_dim; ++o) {
          double s = 0.0;
          for (int i = 0; i < in_dim; ++i)
            s += in[size_t(r) * in_dim + i] * w[size_t(o) * in_dim + i];
          out[size_t(r) * out_dim + o] = s;
        }
      return out;
    };
    auto norm = [&](const std::vector<double>& in, const std::vector<float>& w) {
      std::vector<double> out(in.size());
      for (int r = 0; r < n; ++r) {
        double ss = 0.0;
        for (int i = 0; i < H; ++i)
          ss += in[size_t(r) * H + i] * in[size_t(r) * H + i];
        const double inv = 1.0 / std::sqrt(ss / H + cfg_.rms_norm_eps);
        for (int i = 0; i < H; ++i)
          out[size_t(r) * H + i] = in[size_t(r) * H + i] * inv * w[size_t(i)];
      }
      return out;
    };
    if (k_out != nullptr)
      k_out->clear();
    for (int l = 0; l < cfg_.num_layers; ++l) {
      auto xn = norm(h, layer(l, "input_layernorm.weight"));
      auto q = linear(xn, n, H, layer(l, "self_attn.q_proj.weight"), qd);
      auto k = linear(xn, n, H, layer(l, "self_attn.k_proj.weight"), kvd);
      auto v = linear(xn, n, H, layer(l, "self_attn.v_proj.weight"), kvd);
      for (int t = 0; t < n; ++t) {
        rope_row(&q[size_t(t) * qd], nh, t);
        rope_row(&k[size_t(t) * kvd], nkv, t);
      }
      if (k_out != nullptr)
        k_out->insert(k_out->end(), k.begin(), k.end());
      std::vector<double> attn(size_t(n) * qd, 0.0);
      for (int t = 0; t < n; ++t)
        for (int hh = 0; hh < nh; ++hh) {
          const int g = hh / (nh / nkv);
          std::vector<double> sc(size_t(t) + 1);
          double mx = -1e300;
          for (int j = 0; j <= t; ++j) {
            double s = 0.0;
            for (int i = 0; i < hd; ++i)
              s += q[size_t(t) * qd + hh * hd + i] * k[size_t(j) * kvd + g * hd + i];
            sc[size_t(j)] = s / std::sqrt(double(hd));
            mx = std::max(mx, sc[size_t(j)]);
          }
          double z = 0.0;
          for (auto& s : sc)
            z += (s = std::exp(s - mx));
          for (int j = 0; j <= t; ++j)
            for (int i = 0; i < hd; ++i)
              attn[size_t(t) * qd + hh * hd + i] +=
                  sc[size_t(j)] / z * v[size_t(j) * kvd + g * hd + i];
        }
      auto o = linear(attn, n, qd, layer(l, "self_attn.o_proj.weight"), H);
      for (size_t i = 0; i < h.size(); ++i)
        h[i] += o[i];
      auto xm = norm(h, layer(l, "post_attention_layernorm.weight"));
      auto gate = linear(xm, n, H, layer(l, "mlp.gate_proj.weight"), ff);
      auto up = linear(xm, n, H, layer(l, "mlp.up_proj.weight"), ff);
      for (size_t i = 0; i < gate.size(); ++i)
        gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      auto down = linear(gate, n, ff, layer(l, "mlp.down_proj.weight"), H);
      for (size_t i = 0; i < h.size(); ++i)
        h[i] += down[i];
    }
    auto hn = norm(h, at("language_model.model.norm.weight"));
    std::vector<double> last(hn.end() - H, hn.end());
    auto logits = linear(last, 1, H, at("language_model.lm_head.weight"), cfg_.vocab_size);
    return std::vector<float>(logits.begin(), logits.end());
  }

private:
  void add(const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    std::normal_distribution<float> d{0.0f, 1.0f};
    host_tensor t;
    t.shape = shape;
    int64_t n = 1;
    for (auto s : shape)
      n *= s;
    t.data.resize(size_t(n));
    for (auto& x : t.data)
      x = offset + scale * d(rng_);
    tensors_.emplace(name, std::move(t));
  }

  text_config cfg_;
  std::mt19937 rng_;
  std::map<std::string, host_tensor, std::less<>> tensors_;
};

/// max |a - b| / max |b|.
inline double max_rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, mag = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    mag = std::max(mag, std::abs(double(b[i])));
  }
  return a.size() == b.size() ? diff / mag : 1e30;
}

} // namespace mosaic::testing
