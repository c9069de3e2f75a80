#pragma once

// The model's tokenizer: SentencePiece (`tokenizer.model`) plus the added
// tokens above the SentencePiece vocabulary (`<image>` = 32000 in
// llava-1.5), and the LLaVA-1.5 chat template; or, for Qwen2-VL and
// Qwen2.5-VL, byte-level BPE from `tokenizer.json`
// (engine/model/bpe_tokenizer.hpp) and Qwen's ChatML template, where each
// "<image>" marker becomes <|vision_start|><|image_pad|><|vision_end|>.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/model_config.hpp"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace mosaic {

class bpe_tokenizer;

/// One chat turn. `role` is "system", "user" or "assistant"; each literal
/// "<image>" in the text marks one image.
struct chat_message {
  std::string role;
  std::string text_with_image_markers;
};

/// The literal that marks an image in prompts and chat messages.
inline constexpr std::string_view image_marker = "<image>";

class tokenizer {
public:
  /// Loads `<dir>/tokenizer.model` and the added tokens of
  /// `tokenizer_config.json` / `added_tokens.json` if present. The image
  /// token id comes from `cfg.image_token_index`.
  static result<tokenizer> load(const std::filesystem::path& dir, const model_config& cfg);

  ~tokenizer();
  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  tokenizer(const tokenizer&) = delete;
  tokenizer& operator=(const tokenizer&) = delete;

  /// Tokenises plain text (no BOS). "<image>" is NOT special here (Qwen:
  /// special tokens written in the text are, as HF's tokenizer does).
  std::vector<int32_t> encode(std::string_view text) const;
  /// Joins pieces into text; control tokens (BOS/EOS) and the image token
  /// are skipped, ids out of range become "" (never a crash).
  std::string decode(std::span<const int32_t> ids) const;
  /// The text of one token as it appears in a stream (leading space kept,
  /// byte-fallback tokens as their byte); "" for control tokens.
  std::string decode_piece(int32_t id) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t image_token_id() const { return image_token_id_; }
  /// Ids the model can use: SentencePiece pieces plus added tokens, or the
  /// config's vocab_size if larger (checkpoints pad it, e.g. 32064).
  int32_t vocab_size() const { return vocab_size_; }
  /// SentencePiece pieces only.
  int32_t sp_vocab_size() const;

  /// Tokenises a full prompt in which each literal "<image>" marks one
  /// image: text runs via SentencePiece, each marker becomes ONE
  /// image_token_id (the engine expands it to image_tokens() slots);
  /// prepends BOS. Qwen: no BOS; a marker becomes <|vision_start|>, ONE
  /// <|image_pad|>, <|vision_end|> (a pad already in the text is one
  /// image too).
  std::vector<int32_t> encode_prompt(std::string_view prompt) const;

  /// LLaVA-1.5 chat template (as llava-hf's tokenizer_config.json):
  /// "USER: <image>\nWhat is this? ASSISTANT: It is a cat. USER: ...";
  /// a system message is emitted without a role prefix; with
  /// `add_generation_prompt` the text ends in "ASSISTANT:". Qwen: ChatML
  /// as Qwen2-VL's template ("<|im_start|>user\n...<|im_end|>\n", the
  /// default system message when the first is not one), each "<image>" as
  /// <|vision_start|><|image_pad|><|vision_end|>.
  std::string apply_chat_template(const std::vector<chat_message>& messages,
                                  bool add_generation_prompt) const;

private:
  tokenizer();
  static result<tokenizer> load_unchecked(const std::filesystem::path& dir,
                                          const model_config& cfg);

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<bpe_tokenizer> bpe_; ///< Qwen: set instead of sp_
  int32_t vision_start_id_ = -1;       ///< Qwen
  int32_t vision_end_id_ = -1;         ///< Qwen
  int32_t bos_id_ = 1;
  int32_t eos_id_ = 2;
  int32_t image_token_id_ = 32000;
  int32_t vocab_size_ = 0;
  /// Added tokens (id >= sp vocab): their text, indexed by id - sp vocab.
  std::vector<std::string> added_;
};

/// The Jinja chat template Mosaic writes into tokenizer_config.json (the
/// llava-hf llava-1.5 template); `apply_chat_template` implements it.
std::string_view llava_chat_template_jinja();

} // namespace mosaic
