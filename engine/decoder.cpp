#include "engine/decoder.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_set>

#include "engine/decoder_layer.hpp"

namespace mosaic {

namespace {

std::string str(long long v) {
  return std::to_string(v);
}

status check_inputs(const text_config& cfg, const kv_pool& pool,
                    std::span<const decode_input> inputs) {
  if (inputs.empty())
    return make_error(errc::invalid_argument, "decode_step needs at least one sequence");
  if (pool.n_layers() != cfg.num_layers || pool.kv_dim() != cfg.kv_dim())
    return make_error(errc::invalid_argument, "the KV pool's geometry does not match the model");
  std::unordered_set<const kv_sequence*> seen;
  for (size_t s = 0; s < inputs.size(); ++s) {
    const auto& in = inputs[s];
    if (in.sequence == nullptr || in.sequence->pool() != &pool)
      return make_error(errc::invalid_argument, "decode input ", str(static_cast<long long>(s)),
                        " has no sequence in this KV pool");
    if (!seen.insert(in.sequence).second)
      return make_error(errc::invalid_argument, "decode input ", str(static_cast<long long>(s)),
                        " repeats a sequence; one token per sequence per step");
    if (in.token < 0 || in.token >= cfg.vocab_size)
      return make_error(errc::invalid_argument, "decode input ", str(static_cast<long long>(s)),
                        " has token id ", str(in.token), " outside the vocabulary of ",
                        str(cfg.vocab_size));
    if (in.position < 0)
      return make_error(errc::invalid_argument, "decode input ", str(static_cast<long long>(s)),
                        " has a negative position");
  }
  return {};
}

} // namespace

result<std::vector<float>> decode_step(backend& be, const decoder_weights& w, kv_pool& pool,
                                       std::span<const decode_input> inputs) {
  const auto& cfg = w.config;
  MOSAIC_TRY(check_inputs(cfg, pool, inputs));
  const int n_seqs = static_cast<int>(inputs.size());
  const int h = cfg.hidden_size;
  const int kv = cfg.kv_dim();
  const int hd = cfg.head_dim();

  // Room for the new token in every sequence first, so that a failure
  // leaves every length unchanged.
  for (const auto& in : inputs)
    MOSAIC_TRY(in.sequence->reserve(in.sequence->length() + 1));

  std::vector<int32_t> tokens, positions, slots, lens;
  int max_blocks = 1;
  for (const auto& in : inputs) {
    tokens.push_back(in.token);
    positions.push_back(in.position);
    slots.push_back(in.sequence->slot(in.sequence->length()));
    lens.push_back(in.sequence->length() + 1);
    max_blocks = std::max(max_blocks, static_cast<int>(in.sequence->blocks().size()));
  }
  std::vector<int32_t> tables(static_cast<size_t>(n_seqs) * max_blocks, 0);
  for (int s = 0; s < n_seqs; ++s) {
    const auto& blocks = inputs[static_cast<size_t>(s)].sequence->blocks();
    std::copy(blocks.begin(), blocks.end(),
              tables.begin() + static_cast<ptrdiff_t>(s) * max_blocks);
  }

  auto tokens_d = upload_ints(be, tokens);
  auto positions_d = upload_ints(be, positions);
  auto slots_d = upload_ints(be, slots);
  auto lens_d = upload_ints(be, lens);
  auto tables_d = upload_ints(be, tables);
  for (auto* r : {&tokens_d, &positions_d, &slots_d, &lens_d, &tables_d})
    if (!*r)
      return std::move(*r).err();
  auto hidden = allocate_floats(be, static_cast<size_t>(n_seqs) * h);
  if (!hidden)
    return std::move(hidden).err();
  auto scratch = layer_scratch::allocate(be, cfg, n_seqs);
  if (!scratch)
    return std::move(scratch).err();
  layer_scratch& sc = *scratch;

  be.gather_rows(w.embed_tokens.f32(), tokens_d->i32(), hidden->f32(), n_seqs, h);
  paged_attention_args a;
  a.q = sc.q.f32();
  a.block_tables = tables_d->i32();
  a.seq_lens = lens_d->i32();
  a.out = sc.attn.f32();
  a.n_seqs = n_seqs;
  a.max_blocks_per_seq = max_blocks;
  a.block_size = pool.block_size();
  a.n_heads = cfg.num_heads;
  a.n_kv_heads = cfg.num_kv_heads;
  a.head_dim = hd;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int l = 0; l < cfg.num_layers; ++l) {
    const auto& lw = w.layers[static_cast<size_t>(l)];
    project_qkv(be, cfg, lw, hidden->f32(), n_seqs, sc);
    be.rope(sc.q.f32(), positions_d->i32(), n_seqs, cfg.num_heads, hd, cfg.rope_theta);
    be.rope(sc.k.f32(), positions_d->i32(), n_seqs, cfg.num_kv_heads, hd, cfg.rope_theta);
    be.scatter_rows(sc.k.f32(), slots_d->i32(), pool.k_layer(l), n_seqs, kv);
    be.scatter_rows(sc.v.f32(), slots_d->i32(), pool.v_layer(l), n_seqs, kv);
    a.k_pool = pool.k_layer(l);
    a.v_pool = pool.v_layer(l);
    be.paged_attention(a);
    output_and_mlp(be, cfg, lw, hidden->f32(), n_seqs, sc);
  }
  auto logits = compute_logits(be, w, hidden->f32(), n_seqs);
  if (!logits)
    return std::move(logits).err();
  for (const auto& in : inputs)
    MOSAIC_TRY(in.sequence->set_length(in.sequence->length() + 1));
  return logits;
}

} // namespace mosaic
