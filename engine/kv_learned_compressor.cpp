#include "engine/kv_learned_compressor.hpp"

#include <charconv>
#include <string>

#include "engine/decoder_layer.hpp"
#include "engine/model/safetensors.hpp"

namespace mosaic {

namespace {

constexpr const char* part_names[4] = {"image_k", "image_v", "text_k", "text_v"};
constexpr int max_group = 64;

result<int> group_of(const safetensors_file& f, const std::string& key) {
  const auto& meta = f.metadata();
  auto it = meta.find(key);
  if (it == meta.end())
    return 1;
  int g = 0;
  const auto& s = it->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), g);
  if (ec != std::errc{} || end != s.data() + s.size() || g < 1 || g > max_group)
    return make_error(errc::invalid_argument, f.path().string(), ": metadata ", key, " = \"", s,
                      "\" is not a group size from 1 to ", std::to_string(max_group));
  return g;
}

/// Reads `name` with shape `shape` and uploads it.
result<device_buffer> upload_tensor(backend& be, const safetensors_file& f, const std::string& name,
                                    const std::vector<int64_t>& shape) {
  const auto* info = f.find(name);
  if (info == nullptr)
    return make_error(errc::not_found, f.path().string(), ": missing tensor ", name);
  if (info->shape != shape)
    return make_error(errc::invalid_argument, f.path().string(), ": tensor ", name, " has shape ",
                      shape_to_string(info->shape), ", expected ", shape_to_string(shape));
  std::vector<float> host(static_cast<size_t>(info->numel()));
  f.read_f32_into(*info, host);
  auto buf = allocate_floats(be, host.size());
  if (!buf)
    return std::move(buf).err();
  MOSAIC_TRY(be.upload(buf->f32(), host.data(), sizeof(float) * host.size()));
  return buf;
}

/// Which original tokens become which output rows.
struct row_layout {
  std::vector<int32_t> as_is, as_is_dst;         ///< tokens copied unchanged, and their rows
  std::array<std::vector<int32_t>, 2> grouped;   ///< [image, text]: tokens of full groups, in order
  std::array<std::vector<int32_t>, 2> group_dst; ///< [image, text]: the row of each group
  std::vector<int32_t> first_token;              ///< per output row
  int rows = 0;
};

row_layout lay_out(const link_plan& plan, const learned_compressor& c) {
  row_layout out;
  const int n = plan.n_tokens();
  for (const auto& seg : plan.segments) {
    const int m = seg.kind == segment_kind::image ? 0 : 1;
    const int g = m == 0 ? c.image_group() : c.text_group();
    const int group_end = seg.end == n ? n - 1 : seg.end; // the last token stays as it is
    const int full = g > 1 ? std::max(0, group_end - seg.begin) / g : 0;
    for (int j = 0; j < full; ++j) {
      const int first = seg.begin + j * g;
      for (int t = first; t < first + g; ++t)
        out.grouped[size_t(m)].push_back(t);
      out.group_dst[size_t(m)].push_back(out.rows++);
      out.first_token.push_back(first);
    }
    for (int t = seg.begin + full * g; t < seg.end; ++t) {
      out.as_is.push_back(t);
      out.as_is_dst.push_back(out.rows++);
      out.first_token.push_back(t);
    }
  }
  return out;
}

std::vector<int32_t> slots_of(const kv_sequence& seq, const std::vector<int32_t>& tokens) {
  std::vector<int32_t> s;
  s.reserve(tokens.size());
  for (int32_t t : tokens)
    s.push_back(seq.slot(t));
  return s;
}

/// Device scratch of one compression.
struct scratch {
  device_buffer x, h, y; // [groups, g*kv], [groups, hidden], [groups, kv]
  device_buffer as_is_src, as_is_dst;
  std::array<device_buffer, 2> group_src, group_dst;
};

} // namespace

const learned_mlp* learned_compressor::mlp(int layer, part p) const noexcept {
  const int g = p == image_k || p == image_v ? image_group_ : text_group_;
  if (g == 1 || layer < 0 || layer >= n_layers())
    return nullptr;
  return &layers_[static_cast<size_t>(layer)][static_cast<size_t>(p)];
}

namespace {

result<learned_groups> groups_of(const safetensors_file& f) {
  auto ig = group_of(f, "image_group");
  if (!ig)
    return std::move(ig).err();
  auto tg = group_of(f, "text_group");
  if (!tg)
    return std::move(tg).err();
  if (*ig == 1 && *tg == 1)
    return make_error(errc::invalid_argument, f.path().string(),
                      ": image_group and text_group are both 1 (nothing to merge); set them in "
                      "the file's metadata");
  return learned_groups{*ig, *tg};
}

} // namespace

result<learned_groups> read_learned_groups(const std::filesystem::path& file) {
  auto f = safetensors_file::open(file);
  if (!f)
    return std::move(f).err();
  return groups_of(*f);
}

result<learned_groups> model_learned_groups(const std::filesystem::path& dir) {
  const auto file = dir / learned_compressor_file;
  if (std::error_code ec; !std::filesystem::exists(file, ec))
    return learned_groups{};
  return read_learned_groups(file);
}

result<learned_compressor> learned_compressor::load(backend& be, const std::filesystem::path& file,
                                                    int n_layers, int kv_dim) {
  auto f = safetensors_file::open(file);
  if (!f)
    return std::move(f).err();
  learned_compressor c;
  c.kv_dim_ = kv_dim;
  auto groups = groups_of(*f);
  if (!groups)
    return std::move(groups).err();
  c.image_group_ = groups->image;
  c.text_group_ = groups->text;
  const auto* probe =
      f->find(std::string{"layers.0."} + part_names[c.image_group_ > 1 ? 0 : 2] + ".fc1.weight");
  if (probe == nullptr || probe->shape.size() != 2 || probe->shape[0] < 1)
    return make_error(errc::invalid_argument, file.string(),
                      ": no valid layers.0 fc1.weight to size the MLPs from");
  c.hidden_ = static_cast<int>(probe->shape[0]);
  c.layers_.resize(static_cast<size_t>(n_layers));
  for (int l = 0; l < n_layers; ++l)
    for (int p = 0; p < 4; ++p) {
      const int g = p < 2 ? c.image_group_ : c.text_group_;
      if (g == 1)
        continue;
      const std::string base = "layers." + std::to_string(l) + "." + part_names[p] + ".";
      auto& mlp = c.layers_[static_cast<size_t>(l)][static_cast<size_t>(p)];
      const int64_t h = c.hidden_, kv = kv_dim;
      auto w1 = upload_tensor(be, *f, base + "fc1.weight", {h, int64_t(g) * kv});
      auto b1 = upload_tensor(be, *f, base + "fc1.bias", {h});
      auto w2 = upload_tensor(be, *f, base + "fc2.weight", {kv, h});
      auto b2 = upload_tensor(be, *f, base + "fc2.bias", {kv});
      for (auto* r : {&w1, &b1, &w2, &b2})
        if (!*r)
          return std::move(*r).err();
      mlp.w1 = std::move(*w1);
      mlp.b1 = std::move(*b1);
      mlp.w2 = std::move(*w2);
      mlp.b2 = std::move(*b2);
    }
  if (f->find("layers." + std::to_string(n_layers) + "." + part_names[c.image_group_ > 1 ? 0 : 2] +
              ".fc1.weight") != nullptr)
    return make_error(errc::invalid_argument, file.string(), " has more layers than the model's ",
                      std::to_string(n_layers), "; it was trained for another model");
  return c;
}

result<compressed_kv> compress_kv_learned(backend& be, kv_pool& pool, kv_sequence& input,
                                          const link_plan& plan, const learned_compressor& c) {
  if (input.pool() != &pool)
    return make_error(errc::invalid_argument,
                      "compress_kv_learned: the input sequence does not live in this KV pool");
  const int n = plan.n_tokens();
  if (n == 0 || input.length() != n)
    return make_error(errc::invalid_argument, "compress_kv_learned: the sequence holds ",
                      std::to_string(input.length()), " tokens but the plan has ",
                      std::to_string(n));
  if (c.n_layers() != pool.n_layers() || c.kv_dim() != pool.kv_dim())
    return make_error(errc::invalid_argument, "compress_kv_learned: the compressor is for ",
                      std::to_string(c.n_layers()), " layers of width ", std::to_string(c.kv_dim()),
                      ", the pool has ", std::to_string(pool.n_layers()), " of width ",
                      std::to_string(pool.kv_dim()));
  const auto lay = lay_out(plan, c);
  const int kv = pool.kv_dim();
  compressed_kv out;
  out.sequence = pool.new_sequence();
  MOSAIC_TRY(out.sequence.reserve(lay.rows)); // out_of_memory: input untouched

  scratch s;
  size_t most_groups = 0;
  for (int m = 0; m < 2; ++m)
    most_groups = std::max(most_groups, lay.group_dst[size_t(m)].size());
  const int widest = std::max(c.image_group(), c.text_group());
  auto x = allocate_floats(be, std::max<size_t>(1, most_groups * size_t(widest) * size_t(kv)));
  auto h = allocate_floats(be, std::max<size_t>(1, most_groups * size_t(c.hidden())));
  auto y = allocate_floats(be, std::max<size_t>(1, std::max(most_groups, lay.as_is.size()) * kv));
  for (auto* r : {&x, &h, &y})
    if (!*r)
      return std::move(*r).err();
  s.x = std::move(*x);
  s.h = std::move(*h);
  s.y = std::move(*y);
  const std::vector<int32_t> dst_all = out.sequence.slots(0, lay.rows);
  auto dst_of = [&](const std::vector<int32_t>& rows) {
    std::vector<int32_t> d;
    d.reserve(rows.size());
    for (int32_t r : rows)
      d.push_back(dst_all[size_t(r)]);
    return d;
  };
  auto up = [&](device_buffer& into, const std::vector<int32_t>& v) -> status {
    if (v.empty())
      return {};
    auto b = upload_ints(be, v);
    if (!b)
      return std::move(b).err();
    into = std::move(*b);
    return {};
  };
  MOSAIC_TRY(up(s.as_is_src, slots_of(input, lay.as_is)));
  MOSAIC_TRY(up(s.as_is_dst, dst_of(lay.as_is_dst)));
  for (size_t m = 0; m < 2; ++m) {
    MOSAIC_TRY(up(s.group_src[m], slots_of(input, lay.grouped[m])));
    MOSAIC_TRY(up(s.group_dst[m], dst_of(lay.group_dst[m])));
  }

  for (int l = 0; l < pool.n_layers(); ++l) {
    for (int value = 0; value < 2; ++value) {
      float* layer = value == 0 ? pool.k_layer(l) : pool.v_layer(l);
      if (!lay.as_is.empty()) {
        const int cnt = static_cast<int>(lay.as_is.size());
        be.gather_rows(layer, s.as_is_src.i32(), s.y.f32(), cnt, kv);
        be.scatter_rows(s.y.f32(), s.as_is_dst.i32(), layer, cnt, kv);
      }
      for (size_t m = 0; m < 2; ++m) {
        const int groups = static_cast<int>(lay.group_dst[m].size());
        if (groups == 0)
          continue;
        const int g = m == 0 ? c.image_group() : c.text_group();
        const auto p = static_cast<learned_compressor::part>(int(m) * 2 + value);
        const auto* mlp = c.mlp(l, p);
        // [groups * g, kv] gathered rows are [groups, g * kv]: the MLP input.
        be.gather_rows(layer, s.group_src[m].i32(), s.x.f32(), groups * g, kv);
        be.matmul(s.x.f32(), mlp->w1.f32(), s.h.f32(), groups, c.hidden(), g * kv, true);
        be.add_bias(s.h.f32(), mlp->b1.f32(), groups, c.hidden());
        be.gelu(s.h.f32(), size_t(groups) * size_t(c.hidden()));
        be.matmul(s.h.f32(), mlp->w2.f32(), s.y.f32(), groups, kv, c.hidden(), true);
        be.add_bias(s.y.f32(), mlp->b2.f32(), groups, kv);
        be.scatter_rows(s.y.f32(), s.group_dst[m].i32(), layer, groups, kv);
      }
    }
  }
  MOSAIC_TRY(be.synchronize());
  MOSAIC_TRY(out.sequence.set_length(lay.rows));
  out.next_position = plan.positions.back() + 1;
  out.kept.assign(static_cast<size_t>(pool.n_layers()), lay.first_token);

  const size_t block_bytes = pool.stats().bytes_per_block;
  auto& st = out.stats;
  st.tokens_before = n;
  st.tokens_after = lay.rows;
  for (const auto& seg : plan.segments) {
    const int len = seg.end - seg.begin;
    (seg.kind == segment_kind::image ? st.image_before : st.text_before) += len;
  }
  st.image_after = static_cast<int>(lay.group_dst[0].size());
  st.text_after = static_cast<int>(lay.group_dst[1].size());
  for (const auto& seg : plan.segments)
    for (size_t i = 0; i < lay.as_is.size(); ++i)
      if (lay.as_is[i] >= seg.begin && lay.as_is[i] < seg.end)
        (seg.kind == segment_kind::image ? st.image_after : st.text_after) += 1;
  st.bytes_before = input.blocks().size() * block_bytes;
  st.bytes_after = out.sequence.blocks().size() * block_bytes;
  input.release();
  return out;
}

} // namespace mosaic
