// A small byte-level BPE trainer for the built-in Qwen2-VL presets: the
// tokenizer.json it writes has Qwen2's layout (NFC, Split on Qwen2's
// pre-tokenizer regex, ByteLevel, BPE without byte fallback, Qwen2-VL's
// special tokens after the vocabulary), so engine/model/bpe_tokenizer.hpp
// and HF tokenizers read it as they read Qwen's own.

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model/builtin_model_parts.hpp"

namespace mosaic::builtin {

namespace {

using json = nlohmann::json;

// Qwen2's pre-tokenizer pattern, as Qwen/Qwen2-VL-*'s tokenizer.json has it.
constexpr const char* qwen2_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

/// GPT-2's byte alphabet: byte b as a printable code point, in UTF-8.
std::vector<std::string> byte_alphabet() {
  std::vector<int> cps(256, -1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    cps[static_cast<size_t>(b)] = printable ? b : 256 + extra++;
  }
  std::vector<std::string> out(256);
  for (int b = 0; b < 256; ++b) {
    const int cp = cps[static_cast<size_t>(b)];
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else { // every code point here is below 0x800: two bytes
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    out[static_cast<size_t>(b)] = s;
  }
  return out;
}

/// Words for training, split roughly as the pattern does: a run of letters
/// or digits with the space before it, or a run of other bytes. Merges
/// learnt on them are valid for any split; the pattern decides at use.
std::map<std::string, int> count_words(const std::vector<std::string>& corpus) {
  std::map<std::string, int> words;
  for (const auto& line : corpus) {
    size_t i = 0;
    while (i < line.size()) {
      size_t j = i;
      if (line[j] == ' ')
        ++j;
      auto alnum = [](unsigned char c) { return std::isalnum(c) != 0 || c >= 0x80; };
      if (j < line.size() && alnum(static_cast<unsigned char>(line[j]))) {
        while (j < line.size() && alnum(static_cast<unsigned char>(line[j])))
          ++j;
      } else {
        j = std::max(j, i + 1);
      }
      ++words[line.substr(i, j - i)];
      i = j;
    }
  }
  return words;
}

} // namespace

result<std::string> train_byte_bpe_json(const std::vector<std::string>& corpus, int n_merges,
                                        const std::vector<std::string>& specials) {
  if (n_merges < 0 || n_merges > 1 << 20)
    return make_error(errc::invalid_argument, "byte BPE: merges out of range");
  const auto alphabet = byte_alphabet();
  // Each word as its symbols (byte-level strings), with its count.
  std::vector<std::pair<std::vector<std::string>, int>> words;
  for (const auto& [w, n] : count_words(corpus)) {
    std::vector<std::string> symbols;
    for (unsigned char c : w)
      symbols.push_back(alphabet[c]);
    words.emplace_back(std::move(symbols), n);
  }
  json vocab = json::object();
  std::vector<std::string> order;
  for (int b = 0; b < 256; ++b) { // the alphabet, in byte order
    vocab[alphabet[static_cast<size_t>(b)]] = static_cast<int>(order.size());
    order.push_back(alphabet[static_cast<size_t>(b)]);
  }
  json merges = json::array();
  // Until n_merges new tokens: a merge whose result is a token already
  // (made from other parts) is kept but adds none.
  while (order.size() < 256 + static_cast<size_t>(n_merges)) {
    // The most frequent adjacent pair; ties go to the smaller pair, so the
    // result does not depend on map order.
    std::map<std::pair<std::string, std::string>, long long> pairs;
    for (const auto& [s, n] : words)
      for (size_t i = 0; i + 1 < s.size(); ++i)
        pairs[{s[i], s[i + 1]}] += n;
    const std::pair<std::string, std::string>* best = nullptr;
    long long best_n = 1; // a pair seen once is not worth a token
    for (const auto& [p, n] : pairs)
      if (n > best_n) {
        best = &p;
        best_n = n;
      }
    if (best == nullptr)
      return make_error(errc::invalid_argument, "byte BPE: the corpus runs out of pairs after ",
                        std::to_string(order.size() - 256), " of ", std::to_string(n_merges),
                        " tokens");
    const std::string a = best->first, b = best->second, joined = a + b;
    for (auto& [s, n] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          out.push_back(joined);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s = std::move(out);
    }
    merges.push_back(json::array({a, b}));
    if (!vocab.contains(joined)) {
      vocab[joined] = static_cast<int>(order.size());
      order.push_back(joined);
    }
  }
  json added = json::array();
  for (const auto& s : specials) {
    const int id = static_cast<int>(order.size());
    order.push_back(s);
    vocab[s] = id;
    added.push_back({{"id", id},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json tok = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", {{"type", "NFC"}}},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers", json::array({{{"type", "Split"},
                                                {"pattern", {{"Regex", qwen2_pattern}}},
                                                {"behavior", "Isolated"},
                                                {"invert", false}},
                                               {{"type", "ByteLevel"},
                                                {"add_prefix_space", false},
                                                {"trim_offsets", false},
                                                {"use_regex", false}}})}}},
              {"post_processor", nullptr},
              {"decoder",
               {{"type", "ByteLevel"},
                {"add_prefix_space", false},
                {"trim_offsets", false},
                {"use_regex", false}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}}}};
  return tok.dump(1) + "\n";
}

} // namespace mosaic::builtin
