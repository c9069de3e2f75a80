#pragma once

// The decoder side of a LLaVA model on one backend, as one object: config,
// host and device weights, tokenizer, the paged KV pool and the VLCache
// profile, with the forward entry points (plan, prefill, compile_image,
// decode_step). A thin composition of engine/{policies,prefill,decoder}.
// The vision side (engine/image_encoder.hpp) is built from `weights()`.
//
// Thread-safety: like its backend, one engine is driven by one thread at
// a time.

#include <filesystem>
#include <memory>
#include <span>
#include <string_view>

#include "engine/backend.hpp"
#include "engine/compiled_image.hpp"
#include "engine/decoder.hpp"
#include "engine/decoder_weights.hpp"
#include "engine/error.hpp"
#include "engine/kv_pool.hpp"
#include "engine/link_plan.hpp"
#include "engine/model/model_config.hpp"
#include "engine/model/tokenizer.hpp"
#include "engine/model/weights.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"
#include "engine/prefix_cache.hpp"

namespace mosaic {

class llava_engine {
public:
  struct private_tag {};

  /// Loads a model: `model` is "builtin:tiny", "builtin:small" or an HF
  /// LLaVA directory (see resolve_model). Uploads the decoder weights to
  /// `be` (which must outlive the engine), loads the tokenizer and the
  /// vlcache profile (uniform when the model has none) and creates the KV
  /// pool.
  static result<std::unique_ptr<llava_engine>> load(std::string_view model, mosaic::backend& be,
                                                    kv_pool_options pool = {});

  // -- accessors --------------------------------------------------------------

  const model_config& config() const { return config_; }
  const std::filesystem::path& model_dir() const { return dir_; }
  const mosaic::tokenizer& tokenizer() const { return tokenizer_; }
  mosaic::backend& backend() const { return *be_; }
  /// Host weights under canonical names (the image encoder uploads its
  /// own from here: `lookup_in(weights())`).
  const model_weights& weights() const { return weights_; }
  /// The decoder's weights in backend memory.
  const decoder_weights& decoder() const { return decoder_; }
  kv_pool& pool() const { return *pool_; }
  const vlcache_profile& vlcache() const { return vlcache_; }

  // -- forward ----------------------------------------------------------------

  /// Builds the link plan of `policy` for `p` (vlcache uses the model's
  /// profile).
  result<link_plan> plan(const prompt& p, const policy_spec& policy,
                         const prefix_kv& prefix = {}) const;
  /// Runs a plan in one pass; the sequence stays in pool() for decode.
  result<prefill_result> prefill(link_plan& plan, const prefill_options& options = {});
  /// Plans `p` under `policy` on top of the longest prefix that pool()'s
  /// prefix cache holds for `scope` (engine/prefix_cache.hpp; no cache
  /// when `scope` is null or the policy is `full`), runs it (options'
  /// chunking and hooks apply; `extend` is set here) and publishes the
  /// prompt's new full blocks.
  result<prompt_prefill> prefill_prompt(const prompt& p, const policy_spec& policy,
                                        const prefix_scope* scope, prefill_options options = {});
  /// Compiles an image's standalone KV from its projector output
  /// [n_tokens, hidden] (host); `between_steps` and `chunk_tokens` as in
  /// mosaic::compile_image.
  result<compiled_image> compile_image(std::span<const float> embeddings,
                                       const std::function<status(int layer)>& between_steps = {},
                                       int chunk_tokens = 0, token_grid grid = {});
  /// One batched decode step; logits [inputs.size(), vocab].
  result<std::vector<float>> decode_step(std::span<const decode_input> inputs);

  llava_engine(private_tag, mosaic::backend& be, std::filesystem::path dir, model_config cfg,
               model_weights weights, mosaic::tokenizer tok, decoder_weights dec,
               std::unique_ptr<kv_pool> pool, vlcache_profile profile);

private:
  mosaic::backend* be_;
  std::filesystem::path dir_;
  model_config config_;
  model_weights weights_;
  mosaic::tokenizer tokenizer_;
  decoder_weights decoder_;
  std::unique_ptr<kv_pool> pool_;
  vlcache_profile vlcache_;
};

} // namespace mosaic
