#include "engine/model/hf_tokenizer_json.hpp"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

namespace mosaic {

namespace {

using json = nlohmann::ordered_json;

constexpr std::string_view metaspace = "\xE2\x96\x81"; // "▁"

json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

struct merge {
  float score; // of the merged piece: SentencePiece merges the best-scoring pair first
  int left;
  int right;
};

} // namespace

result<std::string> to_hf_tokenizer_json(std::string_view sp_model,
                                         std::span<const hf_added_token> extra) {
  sentencepiece::SentencePieceProcessor sp;
  if (auto s = sp.LoadFromSerializedProto(sp_model); !s.ok())
    return make_error(errc::corrupt_data, "not a SentencePiece model: ", s.ToString());
  const int n = sp.GetPieceSize();
  if (sp.unk_id() < 0 || sp.bos_id() < 0)
    return make_error(errc::invalid_argument,
                      "tokenizer.json needs a SentencePiece model with <unk> and <s>");

  json vocab = json::object();
  std::unordered_map<std::string, int> id_of;
  for (int id = 0; id < n; ++id) {
    vocab[sp.IdToPiece(id)] = id;
    id_of.emplace(sp.IdToPiece(id), id);
  }
  // Every split of a normal piece into two pieces is a merge (HF's
  // SentencePieceExtractor does the same): ranked by the merged piece's
  // score, best first, then by the halves' ids.
  std::vector<merge> merges;
  for (int id = 0; id < n; ++id) {
    if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsByte(id) || sp.IsUnused(id))
      continue;
    const std::string& piece = sp.IdToPiece(id);
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      auto l = id_of.find(piece.substr(0, cut));
      auto r = id_of.find(piece.substr(cut));
      if (l != id_of.end() && r != id_of.end())
        merges.push_back({sp.GetScore(id), l->second, r->second});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const merge& a, const merge& b) {
    if (a.score != b.score)
      return a.score > b.score;
    return a.left != b.left ? a.left < b.left : a.right < b.right;
  });
  json merge_list = json::array();
  for (const auto& m : merges)
    merge_list.push_back({sp.IdToPiece(m.left), sp.IdToPiece(m.right)});

  std::map<int32_t, json> added;
  for (int id = 0; id < n; ++id)
    if (sp.IsControl(id) || sp.IsUnknown(id))
      added[id] = added_token(id, sp.IdToPiece(id), true);
  for (const auto& t : extra)
    added[t.id] = added_token(t.id, t.content, t.special);
  json added_list = json::array();
  for (auto& [id, t] : added)
    added_list.push_back(std::move(t));

  const std::string bos = sp.IdToPiece(sp.bos_id());
  auto bos_then = [&](std::initializer_list<const char*> seqs) {
    json out = json::array();
    for (const char* s : seqs) {
      out.push_back({{"SpecialToken", {{"id", bos}, {"type_id", 0}}}});
      out.push_back({{"Sequence", {{"id", s}, {"type_id", 0}}}});
    }
    return out;
  };
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_list},
      {"normalizer", nullptr},
      // "first": the dummy-prefix space only where the text starts, as
      // SentencePiece with add_dummy_prefix and Mosaic's encode_prompt
      // (text after an <image> continues the sequence).
      {"pre_tokenizer",
       {{"type", "Metaspace"},
        {"replacement", std::string(metaspace)},
        {"prepend_scheme", "first"},
        {"split", false}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", bos_then({"A"})},
        {"pair", bos_then({"A", "B"})},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {sp.bos_id()}}, {"tokens", {bos}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"},
           {"pattern", {{"String", std::string(metaspace)}}},
           {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", sp.IdToPiece(sp.unk_id())},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}}};
  return tok.dump(1) + "\n";
}

} // namespace mosaic
