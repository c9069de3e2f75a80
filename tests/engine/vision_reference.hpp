#pragma once

// Test helpers for the image side: random CLIP/projector weights under their
// canonical names and a naive scalar reference of the same math (direct
// convolution, textbook attention), independent of the backend.

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model/model_config.hpp"
#include "engine/model/weights.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic::test {

/// A name → tensor map that serves as a weight_lookup.
struct weight_map {
  std::map<std::string, host_tensor, std::less<>> tensors;

  void add_random(std::mt19937& rng, const std::string& name, std::vector<int64_t> shape,
                  float scale, float offset = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    std::uniform_real_distribution<float> dist(-scale, scale);
    host_tensor t;
    t.shape = std::move(shape);
    t.data.resize(static_cast<size_t>(n));
    for (float& v : t.data)
      v = offset + dist(rng);
    tensors[name] = std::move(t);
  }
  const float* get(const std::string& name) const { return tensors.at(name).data.data(); }
  weight_lookup lookup() const {
    return [this](std::string_view name) -> const host_tensor* {
      auto it = tensors.find(name);
      return it == tensors.end() ? nullptr : &it->second;
    };
  }
};

inline std::string vision_layer(int i, const std::string& suffix) {
  return "vision_tower.vision_model.encoder.layers." + std::to_string(i) + "." + suffix;
}

/// Random weights for every layer of `c` (not only the ones run).
inline void add_vision_weights(weight_map& w, std::mt19937& rng, const vision_config& c) {
  const int64_t h = c.hidden_size, in = c.intermediate_size, p = c.patch_size;
  const std::string e = "vision_tower.vision_model.";
  w.add_random(rng, e + "embeddings.patch_embedding.weight", {h, c.num_channels, p, p}, 0.3f);
  w.add_random(rng, e + "embeddings.class_embedding", {h}, 1.0f);
  w.add_random(rng, e + "embeddings.position_embedding.weight", {c.num_patches() + 1, h}, 0.5f);
  w.add_random(rng, e + "pre_layrnorm.weight", {h}, 0.2f, 1.0f);
  w.add_random(rng, e + "pre_layrnorm.bias", {h}, 0.2f);
  for (int i = 0; i < c.num_layers; ++i) {
    for (std::string ln : {"layer_norm1", "layer_norm2"}) {
      w.add_random(rng, vision_layer(i, ln + ".weight"), {h}, 0.2f, 1.0f);
      w.add_random(rng, vision_layer(i, ln + ".bias"), {h}, 0.2f);
    }
    for (std::string proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      w.add_random(rng, vision_layer(i, "self_attn." + proj + ".weight"), {h, h}, 0.5f);
      w.add_random(rng, vision_layer(i, "self_attn." + proj + ".bias"), {h}, 0.2f);
    }
    w.add_random(rng, vision_layer(i, "mlp.fc1.weight"), {in, h}, 0.4f);
    w.add_random(rng, vision_layer(i, "mlp.fc1.bias"), {in}, 0.2f);
    w.add_random(rng, vision_layer(i, "mlp.fc2.weight"), {h, in}, 0.3f);
    w.add_random(rng, vision_layer(i, "mlp.fc2.bias"), {h}, 0.2f);
  }
}

inline void add_projector_weights(weight_map& w, std::mt19937& rng, int64_t in, int64_t out) {
  w.add_random(rng, "multi_modal_projector.linear_1.weight", {out, in}, 0.4f);
  w.add_random(rng, "multi_modal_projector.linear_1.bias", {out}, 0.2f);
  w.add_random(rng, "multi_modal_projector.linear_2.weight", {out, out}, 0.4f);
  w.add_random(rng, "multi_modal_projector.linear_2.bias", {out}, 0.2f);
}

// -- scalar reference ---------------------------------------------------------

using matrix = std::vector<double>; // row-major

/// y[r] = x[r] · W^T + b; W: [out, in].
inline matrix ref_linear(const matrix& x, int rows, int in, const float* w, const float* b,
                         int out) {
  matrix y(static_cast<size_t>(rows) * out);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = b != nullptr ? b[o] : 0.0;
      for (int i = 0; i < in; ++i)
        acc += x[static_cast<size_t>(r) * in + i] * w[static_cast<size_t>(o) * in + i];
      y[static_cast<size_t>(r) * out + o] = acc;
    }
  return y;
}

inline matrix ref_layer_norm(const matrix& x, int rows, int dim, const float* w, const float* b,
                             double eps) {
  matrix y(x.size());
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < dim; ++i)
      mean += x[static_cast<size_t>(r) * dim + i];
    mean /= dim;
    for (int i = 0; i < dim; ++i) {
      const double d = x[static_cast<size_t>(r) * dim + i] - mean;
      var += d * d;
    }
    var /= dim;
    for (int i = 0; i < dim; ++i)
      y[static_cast<size_t>(r) * dim + i] =
          (x[static_cast<size_t>(r) * dim + i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  }
  return y;
}

inline double ref_gelu(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
inline double ref_quick_gelu(double x) {
  return x / (1.0 + std::exp(-1.702 * x));
}

/// HF CLIPVisionModel + LLaVA feature selection, straight from the formulas.
inline matrix ref_vision_tower(const weight_map& w, const vision_config& c,
                               const std::vector<float>& image) {
  const int h = c.hidden_size, p = c.patch_size, side = c.patches_per_side();
  const int rows = c.num_patches() + 1, s = c.image_size;
  const std::string e = "vision_tower.vision_model.";
  const float* conv = w.get(e + "embeddings.patch_embedding.weight");
  const float* cls = w.get(e + "embeddings.class_embedding");
  const float* pos = w.get(e + "embeddings.position_embedding.weight");
  matrix x(static_cast<size_t>(rows) * h);
  for (int o = 0; o < h; ++o)
    x[static_cast<size_t>(o)] = cls[o];
  for (int py = 0; py < side; ++py)
    for (int px = 0; px < side; ++px)
      for (int o = 0; o < h; ++o) {
        double acc = 0;
        for (int ch = 0; ch < c.num_channels; ++ch)
          for (int dy = 0; dy < p; ++dy)
            for (int dx = 0; dx < p; ++dx)
              acc += conv[((static_cast<size_t>(o) * c.num_channels + ch) * p + dy) * p + dx] *
                     image[(static_cast<size_t>(ch) * s + py * p + dy) * s + px * p + dx];
        x[static_cast<size_t>(1 + py * side + px) * h + o] = acc;
      }
  for (size_t i = 0; i < x.size(); ++i)
    x[i] += pos[i];
  x = ref_layer_norm(x, rows, h, w.get(e + "pre_layrnorm.weight"), w.get(e + "pre_layrnorm.bias"),
                     c.layer_norm_eps);

  const int heads = c.num_heads, hd = c.head_dim();
  for (int l = 0; l < c.layers_to_run(); ++l) {
    auto W = [&](const std::string& s2) { return w.get(vision_layer(l, s2)); };
    matrix n = ref_layer_norm(x, rows, h, W("layer_norm1.weight"), W("layer_norm1.bias"),
                              c.layer_norm_eps);
    matrix q = ref_linear(n, rows, h, W("self_attn.q_proj.weight"), W("self_attn.q_proj.bias"), h);
    matrix k = ref_linear(n, rows, h, W("self_attn.k_proj.weight"), W("self_attn.k_proj.bias"), h);
    matrix v = ref_linear(n, rows, h, W("self_attn.v_proj.weight"), W("self_attn.v_proj.bias"), h);
    matrix att(static_cast<size_t>(rows) * h, 0.0);
    for (int hh = 0; hh < heads; ++hh)
      for (int i = 0; i < rows; ++i) {
        std::vector<double> sc(static_cast<size_t>(rows));
        double mx = -1e300;
        for (int j = 0; j < rows; ++j) {
          double d = 0;
          for (int t = 0; t < hd; ++t)
            d += q[static_cast<size_t>(i) * h + hh * hd + t] *
                 k[static_cast<size_t>(j) * h + hh * hd + t];
          sc[static_cast<size_t>(j)] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[static_cast<size_t>(j)]);
        }
        double sum = 0;
        for (double& v2 : sc)
          sum += (v2 = std::exp(v2 - mx));
        for (int j = 0; j < rows; ++j)
          for (int t = 0; t < hd; ++t)
            att[static_cast<size_t>(i) * h + hh * hd + t] +=
                sc[static_cast<size_t>(j)] / sum * v[static_cast<size_t>(j) * h + hh * hd + t];
      }
    matrix o =
        ref_linear(att, rows, h, W("self_attn.out_proj.weight"), W("self_attn.out_proj.bias"), h);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] += o[i];
    n = ref_layer_norm(x, rows, h, W("layer_norm2.weight"), W("layer_norm2.bias"),
                       c.layer_norm_eps);
    matrix f = ref_linear(n, rows, h, W("mlp.fc1.weight"), W("mlp.fc1.bias"), c.intermediate_size);
    for (double& v2 : f)
      v2 = c.hidden_act == "gelu" ? ref_gelu(v2) : ref_quick_gelu(v2);
    matrix g = ref_linear(f, rows, c.intermediate_size, W("mlp.fc2.weight"), W("mlp.fc2.bias"), h);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] += g[i];
  }
  if (c.feature_select == "full")
    return x;
  return matrix(x.begin() + h, x.end());
}

/// LLaVA projector: linear_1 → GELU (erf) → linear_2.
inline matrix ref_projector(const weight_map& w, const matrix& features, int rows, int in,
                            int out) {
  matrix m = ref_linear(features, rows, in, w.get("multi_modal_projector.linear_1.weight"),
                        w.get("multi_modal_projector.linear_1.bias"), out);
  for (double& v : m)
    v = ref_gelu(v);
  return ref_linear(m, rows, out, w.get("multi_modal_projector.linear_2.weight"),
                    w.get("multi_modal_projector.linear_2.bias"), out);
}

} // namespace mosaic::test
