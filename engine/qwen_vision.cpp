#include "engine/qwen_vision.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/decoder_layer.hpp" // allocate_floats, upload_ints

namespace mosaic {

namespace {

std::string block_name(int i, std::string_view suffix) {
  return "visual.blocks." + std::to_string(i) + "." + std::string{suffix};
}

constexpr float vision_eps = 1e-6f; // every norm of both towers and mergers
constexpr float vision_rope_theta = 10000.0f;

} // namespace

result<qwen_vision> qwen_vision::create(backend& be, const model_config& cfg,
                                        const weight_lookup& lookup) {
  if (!cfg.qwen_vl())
    return make_error(errc::invalid_argument, "qwen_vision: model_type \"", cfg.model_type,
                      "\" is not Qwen2-VL or Qwen2.5-VL");
  const auto& v = cfg.vision;
  qwen_vision t{be, cfg};
  const int64_t e = v.hidden_size;
  const int64_t inter = v.intermediate_size;
  const int64_t m2 = int64_t{v.spatial_merge_size} * v.spatial_merge_size;
  auto up = [&](device_buffer& dst, std::string_view name, std::initializer_list<int64_t> shape) {
    return upload_weight_into(dst, be, lookup, name, shape);
  };
  // The Conv3d weight [E, C, T, P, P] flattened is the [E, C*T*P*P]
  // matrix over preprocess_qwen2vl's rows (laid out channel, frame, y, x).
  const std::string patch = "visual.patch_embed.proj.weight";
  const host_tensor* pw = lookup(patch);
  if (pw != nullptr && pw->shape.size() == 5)
    MOSAIC_TRY(up(t.patch_w_, patch,
                  {e, v.num_channels, v.temporal_patch_size, v.patch_size, v.patch_size}));
  else
    MOSAIC_TRY(
        up(t.patch_w_, patch,
           {e, int64_t{v.num_channels} * v.temporal_patch_size * v.patch_size * v.patch_size}));
  t.blocks_.resize(static_cast<size_t>(v.num_layers));
  for (int i = 0; i < v.num_layers; ++i) {
    block& b = t.blocks_[static_cast<size_t>(i)];
    auto bu = [&](device_buffer& dst, std::string_view suffix,
                  std::initializer_list<int64_t> shape) {
      return up(dst, block_name(i, suffix), shape);
    };
    MOSAIC_TRY(bu(b.norm1_w, "norm1.weight", {e}));
    MOSAIC_TRY(bu(b.norm2_w, "norm2.weight", {e}));
    if (!t.rms()) {
      MOSAIC_TRY(bu(b.norm1_b, "norm1.bias", {e}));
      MOSAIC_TRY(bu(b.norm2_b, "norm2.bias", {e}));
    }
    MOSAIC_TRY(bu(b.qkv_w, "attn.qkv.weight", {3 * e, e}));
    MOSAIC_TRY(bu(b.qkv_b, "attn.qkv.bias", {3 * e}));
    MOSAIC_TRY(bu(b.proj_w, "attn.proj.weight", {e, e}));
    MOSAIC_TRY(bu(b.proj_b, "attn.proj.bias", {e}));
    if (t.rms()) {
      MOSAIC_TRY(bu(b.fc1_w, "mlp.gate_proj.weight", {inter, e}));
      MOSAIC_TRY(bu(b.fc1_b, "mlp.gate_proj.bias", {inter}));
      MOSAIC_TRY(bu(b.up_w, "mlp.up_proj.weight", {inter, e}));
      MOSAIC_TRY(bu(b.up_b, "mlp.up_proj.bias", {inter}));
      MOSAIC_TRY(bu(b.fc2_w, "mlp.down_proj.weight", {e, inter}));
      MOSAIC_TRY(bu(b.fc2_b, "mlp.down_proj.bias", {e}));
    } else {
      MOSAIC_TRY(bu(b.fc1_w, "mlp.fc1.weight", {inter, e}));
      MOSAIC_TRY(bu(b.fc1_b, "mlp.fc1.bias", {inter}));
      MOSAIC_TRY(bu(b.fc2_w, "mlp.fc2.weight", {e, inter}));
      MOSAIC_TRY(bu(b.fc2_b, "mlp.fc2.bias", {e}));
    }
  }
  MOSAIC_TRY(up(t.ln_q_w_, "visual.merger.ln_q.weight", {e}));
  if (!t.rms())
    MOSAIC_TRY(up(t.ln_q_b_, "visual.merger.ln_q.bias", {e}));
  MOSAIC_TRY(up(t.mlp0_w_, "visual.merger.mlp.0.weight", {m2 * e, m2 * e}));
  MOSAIC_TRY(up(t.mlp0_b_, "visual.merger.mlp.0.bias", {m2 * e}));
  MOSAIC_TRY(up(t.mlp2_w_, "visual.merger.mlp.2.weight", {v.out_hidden_size, m2 * e}));
  MOSAIC_TRY(up(t.mlp2_b_, "visual.merger.mlp.2.bias", {v.out_hidden_size}));
  return t;
}

void qwen_vision::norm(const float* x, const device_buffer& w, const device_buffer& b, float* y,
                       int rows) const {
  if (rms())
    be_->rms_norm(x, w.f32(), y, rows, cfg_.vision.hidden_size, vision_eps);
  else
    be_->layer_norm(x, w.f32(), b.f32(), y, rows, cfg_.vision.hidden_size, vision_eps);
}

qwen_vision::windows qwen_vision::window_order(const vision_grid& grid, int merge, int side) {
  windows out;
  const int gh = grid.h / merge, gw = grid.w / merge;
  const int nwh = (gh + side - 1) / side, nww = (gw + side - 1) / side;
  out.order.reserve(static_cast<size_t>(grid.t) * gh * gw);
  for (int f = 0; f < grid.t; ++f)
    for (int wy = 0; wy < nwh; ++wy)
      for (int wx = 0; wx < nww; ++wx) {
        int units = 0;
        for (int y = wy * side; y < std::min(gh, (wy + 1) * side); ++y)
          for (int x = wx * side; x < std::min(gw, (wx + 1) * side); ++x, ++units)
            out.order.push_back((f * gh + y) * gw + x);
        out.window_units.push_back(units);
      }
  return out;
}

result<std::vector<float>> qwen_vision::encode(std::span<const float> patches,
                                               const vision_grid& grid,
                                               const std::function<status()>& between_blocks) {
  const auto& v = cfg_.vision;
  const int m = v.spatial_merge_size;
  const int m2 = m * m;
  const int patch_len = v.num_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
  const long long n_ll = static_cast<long long>(grid.t) * grid.h * grid.w;
  const long long most = static_cast<long long>(cfg_.image_tokens()) * m2;
  if (grid.t <= 0 || grid.h <= 0 || grid.w <= 0 || grid.h % m != 0 || grid.w % m != 0 ||
      n_ll > most)
    return make_error(errc::invalid_argument, "qwen_vision: grid ", std::to_string(grid.t), "x",
                      std::to_string(grid.h), "x", std::to_string(grid.w), " is not whole ",
                      std::to_string(m), "x", std::to_string(m), " merges of at most ",
                      std::to_string(most), " patches");
  const int n = static_cast<int>(n_ll);
  if (patches.size() != static_cast<size_t>(n) * patch_len)
    return make_error(errc::invalid_argument, "qwen_vision: ", std::to_string(patches.size()),
                      " pixel values for ", std::to_string(n), " patches of ",
                      std::to_string(patch_len));
  backend& be = *be_;
  const int e = v.hidden_size;
  const int inter = v.intermediate_size;
  const int hd = v.head_dim();
  const int units = n / m2;
  const int out = v.out_hidden_size;

  // Each patch's (row, column) in the image, in preprocess_qwen2vl's order
  // (frame, merged row, merged column, then the 2x2 inside the merge).
  std::vector<int32_t> pos(2 * static_cast<size_t>(n));
  {
    size_t r = 0;
    for (int f = 0; f < grid.t; ++f)
      for (int by = 0; by < grid.h / m; ++by)
        for (int bx = 0; bx < grid.w / m; ++bx)
          for (int dy = 0; dy < m; ++dy)
            for (int dx = 0; dx < m; ++dx, ++r) {
              pos[r] = by * m + dy;
              pos[static_cast<size_t>(n) + r] = bx * m + dx;
            }
  }
  // Attention groups: every frame whole (Qwen2-VL; Qwen2.5-VL's full
  // blocks), or Qwen2.5-VL's windows after regrouping the units.
  std::vector<int> full_groups(static_cast<size_t>(grid.t), grid.h * grid.w);
  std::vector<int> window_groups;
  std::vector<int32_t> unit_order;
  const bool windowed = cfg_.qwen25_vl() && v.window_size > 0;
  if (windowed) {
    const int side = std::max(1, v.window_size / m / v.patch_size);
    auto w = window_order(grid, m, side);
    unit_order = std::move(w.order);
    for (int u : w.window_units)
      if (u > 0)
        window_groups.push_back(u * m2);
    // Regroup the positions with their patches.
    std::vector<int32_t> moved(pos.size());
    for (int j = 0; j < units; ++j)
      for (int k = 0; k < m2; ++k)
        for (size_t c = 0; c < 2; ++c)
          moved[c * n + static_cast<size_t>(j) * m2 + k] =
              pos[c * n + static_cast<size_t>(unit_order[static_cast<size_t>(j)]) * m2 + k];
    pos = std::move(moved);
  }

  auto alloc = [&](size_t floats) { return allocate_floats(be, floats); };
  auto px = alloc(static_cast<size_t>(n) * patch_len);
  auto px_grouped = alloc(windowed ? static_cast<size_t>(n) * patch_len : 1);
  auto x = alloc(static_cast<size_t>(n) * e);
  auto h = alloc(static_cast<size_t>(n) * e);
  auto qkv = alloc(static_cast<size_t>(n) * 3 * e);
  auto mlp = alloc(static_cast<size_t>(n) * inter);
  auto mlp_up = alloc(cfg_.qwen25_vl() ? static_cast<size_t>(n) * inter : 1);
  auto merged = alloc(static_cast<size_t>(units) * m2 * e);
  auto y = alloc(static_cast<size_t>(units) * out);
  auto result_rows = alloc(static_cast<size_t>(units) * out);
  auto pos_d = upload_ints(be, pos);
  auto order_d = upload_ints(be, unit_order);
  for (auto* r :
       {&px, &px_grouped, &x, &h, &qkv, &mlp, &mlp_up, &merged, &y, &result_rows, &pos_d, &order_d})
    if (!*r)
      return std::move(*r).err();

  MOSAIC_TRY(be.upload(px->data(), patches.data(), patches.size() * sizeof(float)));
  const float* rows_in = px->f32();
  if (windowed) { // regroup the patch rows unit by unit (m2 rows each)
    be.gather_rows(px->f32(), order_d->i32(), px_grouped->f32(), units, m2 * patch_len);
    rows_in = px_grouped->f32();
  }
  be.matmul(rows_in, patch_w_.f32(), x->f32(), n, e, patch_len, true);

  // Two sections of hd / 4 pairs, rows then columns, each its own ladder.
  const rope_sections rope2d{{hd / 4, hd / 4, 0}, true};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const block& b = blocks_[l];
    if (between_blocks && l > 0) {
      MOSAIC_TRY(be.synchronize());
      MOSAIC_TRY(between_blocks());
    }
    norm(x->f32(), b.norm1_w, b.norm1_b, h->f32(), n);
    be.matmul(h->f32(), b.qkv_w.f32(), qkv->f32(), n, 3 * e, e, true);
    be.add_bias(qkv->f32(), b.qkv_b.f32(), n, 3 * e);
    // Rows are [q | k | v], each [heads, hd].
    be.rope_sectioned(qkv->f32(), pos_d->i32(), n, v.num_heads, hd, vision_rope_theta, rope2d,
                      3 * e);
    be.rope_sectioned(qkv->f32() + e, pos_d->i32(), n, v.num_heads, hd, vision_rope_theta, rope2d,
                      3 * e);
    const bool full =
        !windowed || std::find(v.fullatt_block_indexes.begin(), v.fullatt_block_indexes.end(),
                               static_cast<int>(l)) != v.fullatt_block_indexes.end();
    int row = 0;
    for (int len : full ? full_groups : window_groups) {
      attention_args a;
      const size_t at = static_cast<size_t>(row) * 3 * e;
      a.q = qkv->f32() + at;
      a.k = qkv->f32() + at + e;
      a.v = qkv->f32() + at + 2 * e;
      a.out = h->f32() + static_cast<size_t>(row) * e;
      a.nq = len;
      a.nk = len;
      a.n_heads = v.num_heads;
      a.n_kv_heads = v.num_heads;
      a.head_dim = hd;
      a.q_stride = 3 * e;
      a.kv_stride = 3 * e;
      a.scale = scale;
      a.causal = false;
      be.attention(a);
      row += len;
    }
    be.matmul(h->f32(), b.proj_w.f32(), x->f32(), n, e, e, true, 1.0f, 1.0f);
    be.add_bias(x->f32(), b.proj_b.f32(), n, e);

    norm(x->f32(), b.norm2_w, b.norm2_b, h->f32(), n);
    be.matmul(h->f32(), b.fc1_w.f32(), mlp->f32(), n, inter, e, true);
    be.add_bias(mlp->f32(), b.fc1_b.f32(), n, inter);
    const size_t cells = static_cast<size_t>(n) * inter;
    if (cfg_.qwen25_vl()) {
      be.matmul(h->f32(), b.up_w.f32(), mlp_up->f32(), n, inter, e, true);
      be.add_bias(mlp_up->f32(), b.up_b.f32(), n, inter);
      be.silu_mul(mlp->f32(), mlp_up->f32(), mlp->f32(), cells);
    } else if (v.hidden_act == "quick_gelu") {
      be.quick_gelu(mlp->f32(), cells);
    } else {
      be.gelu(mlp->f32(), cells);
    }
    be.matmul(mlp->f32(), b.fc2_w.f32(), x->f32(), n, e, inter, true, 1.0f, 1.0f);
    be.add_bias(x->f32(), b.fc2_b.f32(), n, e);
  }

  // Merger: norm, each unit's m2 consecutive rows as one row of m2 * E.
  norm(x->f32(), ln_q_w_, ln_q_b_, merged->f32(), n);
  be.matmul(merged->f32(), mlp0_w_.f32(), h->f32(), units, m2 * e, m2 * e, true);
  be.add_bias(h->f32(), mlp0_b_.f32(), units, m2 * e);
  be.gelu(h->f32(), static_cast<size_t>(units) * m2 * e);
  be.matmul(h->f32(), mlp2_w_.f32(), y->f32(), units, out, m2 * e, true);
  be.add_bias(y->f32(), mlp2_b_.f32(), units, out);
  const float* final_rows = y->f32();
  if (windowed) { // back to raster order: unit order[j] is row j
    be.scatter_rows(y->f32(), order_d->i32(), result_rows->f32(), units, out);
    final_rows = result_rows->f32();
  }
  std::vector<float> host(static_cast<size_t>(units) * out);
  MOSAIC_TRY(be.synchronize());
  MOSAIC_TRY(be.download(host.data(), final_rows, host.size() * sizeof(float)));
  return host;
}

} // namespace mosaic
