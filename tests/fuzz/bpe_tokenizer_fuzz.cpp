// Byte-level BPE (Qwen2's tokenizer.json): the input is a tokenizer.json,
// then "\n@@\n", then text. A tokenizer.json that parses encodes the text;
// the text is also encoded by the fixed test tokenizer (tests/data/hf_bpe),
// as a prompt from a client would be. Checked: ids are in the vocabulary,
// and ASCII text without special tokens decodes back to itself.

#include <algorithm>
#include <cstdlib>

#include "engine/model/bpe_tokenizer.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

const mosaic::bpe_tokenizer& fixed() {
  static const mosaic::bpe_tokenizer t = [] {
    auto r = mosaic::bpe_tokenizer::load(MOSAIC_SOURCE_DIR "/tests/data/hf_bpe/tokenizer.json");
    if (!r)
      std::abort();
    return std::move(*r);
  }();
  return t;
}

void encode_and_check(const mosaic::bpe_tokenizer& t, std::string_view text) {
  auto ids = t.encode(text);
  if (!ids)
    return;
  for (int32_t id : *ids)
    if (id < 0 || id >= t.vocab_size())
      std::abort();
  const bool plain_ascii = text.find("<|") == std::string_view::npos &&
                           std::all_of(text.begin(), text.end(),
                                       [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (plain_ascii && t.decode(*ids) != text)
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [json_text, text] = mosaic::fuzz::split_once(mosaic::fuzz::as_text(data, size), "\n@@\n");
  if (!json_text.empty())
    if (auto t = mosaic::bpe_tokenizer::parse(json_text))
      encode_and_check(*t, text);
  encode_and_check(fixed(), text);
  return 0;
}
