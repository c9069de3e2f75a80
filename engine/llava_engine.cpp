#include "engine/llava_engine.hpp"

#include "engine/model/builtin_model.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {

llava_engine::llava_engine(private_tag, mosaic::backend& be, std::filesystem::path dir,
                           model_config cfg, model_weights weights, mosaic::tokenizer tok,
                           decoder_weights dec, std::unique_ptr<kv_pool> pool,
                           vlcache_profile profile)
  : be_(&be), dir_(std::move(dir)), config_(std::move(cfg)), weights_(std::move(weights)),
    tokenizer_(std::move(tok)), decoder_(std::move(dec)), pool_(std::move(pool)),
    vlcache_(std::move(profile)) {}

result<std::unique_ptr<llava_engine>>
llava_engine::load(std::string_view model, mosaic::backend& be, kv_pool_options pool_options) {
  auto dir = resolve_model(model);
  if (!dir)
    return std::move(dir).err();
  auto cfg = load_model_config(*dir);
  if (!cfg)
    return std::move(cfg).err();
  auto weights = model_weights::load(*dir, *cfg);
  if (!weights)
    return std::move(weights).err();
  auto tok = tokenizer::load(*dir, *cfg);
  if (!tok)
    return std::move(tok).err();
  auto dec = upload_decoder_weights(be, cfg->text, lookup_in(*weights));
  if (!dec)
    return std::move(dec).err();
  auto pool = kv_pool::create(be, cfg->text.num_layers, cfg->text.kv_dim(), pool_options);
  if (!pool)
    return std::move(pool).err();
  auto profile = load_vlcache_profile(*dir, cfg->text.num_layers);
  if (!profile)
    return std::move(profile).err();
  return std::make_unique<llava_engine>(private_tag{}, be, std::move(*dir), std::move(*cfg),
                                        std::move(*weights), std::move(*tok), std::move(*dec),
                                        std::move(*pool), std::move(*profile));
}

result<link_plan> llava_engine::plan(const prompt& p, const policy_spec& policy,
                                     const prefix_kv& prefix) const {
  return build_link_plan(p, policy, config_.text, prefix, &vlcache_);
}

result<prefill_result> llava_engine::prefill(link_plan& plan, const prefill_options& options) {
  return run_prefill(*be_, decoder_, *pool_, plan, options);
}

result<prompt_prefill> llava_engine::prefill_prompt(const prompt& p, const policy_spec& policy,
                                                    const prefix_scope* scope,
                                                    prefill_options options) {
  return prefill_with_prefix_cache(*be_, decoder_, *pool_, p, policy, &vlcache_, scope,
                                   std::move(options));
}

result<compiled_image> llava_engine::compile_image(std::span<const float> embeddings,
                                                   const std::function<status(int)>& between_steps,
                                                   int chunk_tokens, token_grid grid) {
  const int hidden = config_.text.hidden_size;
  if (embeddings.empty() || embeddings.size() % static_cast<size_t>(hidden) != 0)
    return make_error(errc::invalid_argument, "compile_image: ", std::to_string(embeddings.size()),
                      " values are not whole rows of the decoder hidden size ",
                      std::to_string(hidden));
  return mosaic::compile_image(*be_, decoder_, *pool_, embeddings.data(),
                               static_cast<int>(embeddings.size() / static_cast<size_t>(hidden)),
                               between_steps, chunk_tokens, grid);
}

result<std::vector<float>> llava_engine::decode_step(std::span<const decode_input> inputs) {
  return mosaic::decode_step(*be_, decoder_, *pool_, inputs);
}

} // namespace mosaic
