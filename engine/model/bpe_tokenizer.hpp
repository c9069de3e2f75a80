#pragma once

// Byte-level BPE from a HF `tokenizer.json`, as Qwen2 / Qwen2-VL /
// Qwen2.5-VL ship it: NFC normaliser, Split on a pre-tokenizer regex
// (isolated), ByteLevel without its own regex, BPE over GPT-2's byte
// alphabet without byte fallback, added (special) tokens matched on the raw
// text first, ByteLevel decoder. The regex runs on PCRE2 (Unicode
// properties on), NFC on ICU; both from Debian. Other layouts of
// tokenizer.json are refused with the part that differs.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"

namespace mosaic {

class bpe_tokenizer {
public:
  /// tokenizer.json is read whole; larger than this is refused.
  static constexpr size_t max_file_bytes = 64u << 20;
  /// encode refuses longer text: a context of 128k tokens is well under
  /// this, and one word's merge state costs ~50 bytes per byte.
  static constexpr size_t max_text_bytes = 8u << 20;

  static result<bpe_tokenizer> load(const std::filesystem::path& tokenizer_json);
  static result<bpe_tokenizer> parse(std::string_view json_text);

  ~bpe_tokenizer();
  bpe_tokenizer(bpe_tokenizer&&) noexcept;
  bpe_tokenizer& operator=(bpe_tokenizer&&) noexcept;
  bpe_tokenizer(const bpe_tokenizer&) = delete;
  bpe_tokenizer& operator=(const bpe_tokenizer&) = delete;

  /// HF `encode(text, add_special_tokens=False).ids`: added tokens in the
  /// text are recognised (leftmost, then longest). Text that is not valid
  /// UTF-8 → invalid_argument.
  result<std::vector<int32_t>> encode(std::string_view text) const;
  /// HF `decode(ids, skip_special_tokens=False)`; bytes that do not form
  /// UTF-8 become U+FFFD, as HF's lossy decode; unknown ids are skipped.
  std::string decode(std::span<const int32_t> ids) const;

  /// One token's bytes as the ByteLevel decoder gives them (possibly part
  /// of a UTF-8 character: a stream joins them); "" for unknown ids.
  std::string token_bytes(int32_t id) const;
  /// Whether `id` is an added token marked special (<|im_end|>, ...).
  bool is_special(int32_t id) const;

  /// Id of a token's text (a vocabulary entry in byte-level form, or an
  /// added token's content); -1 if none.
  int32_t token_id(std::string_view token) const;
  /// Highest id + 1.
  int32_t vocab_size() const;

private:
  struct impl;
  explicit bpe_tokenizer(std::unique_ptr<impl> p);
  std::unique_ptr<impl> p_;
};

} // namespace mosaic
