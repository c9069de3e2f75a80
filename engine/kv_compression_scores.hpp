#pragma once

// Token scores of the KV compressors (engine/kv_compression.hpp), one
// vector per layer; higher = more worth keeping. Internal to the engine.

#include <vector>

#include "engine/backend.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"

namespace mosaic::detail {

/// Per-layer scores: [n_layers][n_tokens].
using layer_scores = std::vector<std::vector<float>>;

/// SnapKV: recomputes the queries of the last `window` prompt tokens layer
/// by layer (their hidden states from the input embeddings, attention over
/// the sequence's pool KV) and sums, over those queries and every head,
/// the softmax attention each token receives; then averages over a
/// `pool_kernel`-wide neighbourhood.
result<layer_scores> snapkv_scores(backend& be, const decoder_weights& w, kv_pool& pool,
                                   const kv_sequence& seq, const link_plan& plan, int window,
                                   int pool_kernel);

/// Key norm: minus the L2 norm of each token's key row per layer.
result<layer_scores> keynorm_scores(backend& be, kv_pool& pool, const kv_sequence& seq,
                                    int n_tokens);

} // namespace mosaic::detail
