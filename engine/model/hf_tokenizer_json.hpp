#pragma once

// HF `tokenizer.json` for a Llama-style SentencePiece BPE model, so that
// `tokenizers`-based servers (transformers 5, vLLM) give the ids Mosaic's
// SentencePiece tokenizer gives. Without it transformers 5 builds a generic
// tokenizer from tokenizer.model that drops the dummy-prefix space: the ids
// differ silently.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

/// A token above (or among) the SentencePiece pieces that must be matched
/// as a whole, e.g. `<image>`.
struct hf_added_token {
  int32_t id = 0;
  std::string content;
  bool special = true;
};

/// The text of `tokenizer.json` for the serialized SentencePiece BPE model
/// `sp_model` (the bytes of tokenizer.model), as HF's Llama converter lays
/// it out with legacy=false: a BPE model over the same pieces (merges ranked
/// by the merged piece's score, byte fallback, fused unk), a Metaspace
/// pre-tokenizer that adds SentencePiece's dummy-prefix space only at the
/// start of the text (not after an added token such as `<image>`), BOS
/// added by the post-processor, and the control pieces plus `extra` as
/// added tokens. Fails on a model that is not BPE.
result<std::string> to_hf_tokenizer_json(std::string_view sp_model,
                                         std::span<const hf_added_token> extra);

} // namespace mosaic
