#include "engine/model/tokenizer.hpp"

#include <fstream>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include "engine/model/bpe_tokenizer.hpp"

namespace mosaic {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in)
    return json();
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// "<0x0A>" → '\n'; -1 if `piece` is not a byte-fallback piece.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>')
    return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[static_cast<size_t>(i)];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

} // namespace

tokenizer::tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
tokenizer::~tokenizer() = default;
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;

result<tokenizer> tokenizer::load(const fs::path& dir, const model_config& cfg) {
  try {
    return load_unchecked(dir, cfg);
  } catch (const std::exception& e) { // nlohmann or SentencePiece
    return make_error(errc::corrupt_data, "cannot load the tokenizer in ", dir.string(), ": ",
                      e.what());
  }
}

result<tokenizer> tokenizer::load_unchecked(const fs::path& dir, const model_config& cfg) {
  tokenizer t;
  if (cfg.qwen_vl()) {
    auto bpe = bpe_tokenizer::load(dir / "tokenizer.json");
    if (!bpe)
      return std::move(bpe).err();
    t.sp_.reset();
    t.bpe_ = std::make_unique<bpe_tokenizer>(std::move(*bpe));
    // The ids the model was trained with must be the tokenizer's.
    for (const auto& [text, id] :
         {std::pair<const char*, int>{"<|image_pad|>", cfg.image_token_index},
          {"<|vision_start|>", cfg.vision_start_token_id},
          {"<|vision_end|>", cfg.vision_end_token_id}})
      if (t.bpe_->token_id(text) != id)
        return make_error(errc::invalid_argument, (dir / "tokenizer.json").string(), ": ", text,
                          " is id ", std::to_string(t.bpe_->token_id(text)),
                          " but config.json says ", std::to_string(id));
    t.bos_id_ = -1; // Qwen2 prepends nothing
    t.eos_id_ = cfg.text.eos_token_id;
    t.image_token_id_ = cfg.image_token_index;
    t.vision_start_id_ = cfg.vision_start_token_id;
    t.vision_end_id_ = cfg.vision_end_token_id;
    t.vocab_size_ = std::max(t.bpe_->vocab_size(), cfg.text.vocab_size);
    return t;
  }
  auto model_path = dir / "tokenizer.model";
  std::error_code ec;
  if (!fs::exists(model_path, ec))
    return make_error(errc::not_found, "no tokenizer.model in ", dir.string(),
                      " (Mosaic needs the SentencePiece model of the checkpoint)");
  if (auto s = t.sp_->Load(model_path.string()); !s.ok())
    return make_error(errc::corrupt_data, model_path.string(),
                      ": not a SentencePiece model: ", s.ToString());
  const int32_t sp_size = t.sp_->GetPieceSize();
  t.bos_id_ = t.sp_->bos_id() >= 0 ? t.sp_->bos_id() : cfg.text.bos_token_id;
  t.eos_id_ = t.sp_->eos_id() >= 0 ? t.sp_->eos_id() : cfg.text.eos_token_id;
  t.image_token_id_ = cfg.image_token_index;

  // Added tokens: id → text, from either file transformers writes.
  std::map<int32_t, std::string> added;
  json tc = read_json(dir / "tokenizer_config.json");
  if (tc.is_object() && tc.contains("added_tokens_decoder") &&
      tc["added_tokens_decoder"].is_object()) {
    for (const auto& [id_text, tok] : tc["added_tokens_decoder"].items()) {
      int32_t id = 0;
      try {
        id = std::stoi(id_text);
      } catch (const std::exception&) {
        return make_error(errc::corrupt_data, "tokenizer_config.json: added_tokens_decoder key '",
                          id_text, "' is not a token id");
      }
      if (tok.is_object() && tok.contains("content") && tok["content"].is_string())
        added[id] = tok["content"].get<std::string>();
    }
  }
  json at = read_json(dir / "added_tokens.json");
  if (at.is_object())
    for (const auto& [text, id] : at.items())
      if (id.is_number_integer())
        added[id.get<int32_t>()] = text;
  if (t.image_token_id_ >= sp_size)
    added.emplace(t.image_token_id_, std::string(image_marker));

  int32_t top = sp_size;
  for (const auto& [id, text] : added)
    if (id >= sp_size && id < (1 << 24))
      top = std::max(top, id + 1);
  t.added_.assign(static_cast<size_t>(top - sp_size), std::string());
  for (const auto& [id, text] : added)
    if (id >= sp_size && id < top)
      t.added_[static_cast<size_t>(id - sp_size)] = text;
  t.vocab_size_ = std::max(top, cfg.text.vocab_size);
  return t;
}

int32_t tokenizer::sp_vocab_size() const {
  return bpe_ ? bpe_->vocab_size() : sp_->GetPieceSize();
}

std::vector<int32_t> tokenizer::encode(std::string_view text) const {
  if (bpe_) {
    auto ids = bpe_->encode(text);
    return ids ? std::move(*ids) : std::vector<int32_t>{};
  }
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids).ok())
    return {};
  return {ids.begin(), ids.end()};
}

std::string tokenizer::decode(std::span<const int32_t> ids) const {
  if (bpe_) { // skip_special_tokens, as a server's answer
    std::vector<int32_t> kept;
    for (int32_t id : ids)
      if (!bpe_->is_special(id))
        kept.push_back(id);
    return bpe_->decode(kept);
  }
  const int32_t sp_size = sp_vocab_size();
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (!run.empty()) {
      std::string text;
      if (sp_->Decode(run, &text).ok())
        out += text;
      run.clear();
    }
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_ || id == image_token_id_)
      continue;
    if (id < sp_size) {
      if (!sp_->IsControl(id))
        run.push_back(id);
      continue;
    }
    flush();
    out += added_.size() > static_cast<size_t>(id - sp_size) ? added_[id - sp_size] : "";
  }
  flush();
  return out;
}

std::string tokenizer::decode_piece(int32_t id) const {
  if (bpe_)
    return bpe_->is_special(id) ? std::string{} : bpe_->token_bytes(id);
  const int32_t sp_size = sp_vocab_size();
  if (id < 0 || id >= vocab_size_ || id == image_token_id_)
    return {};
  if (id >= sp_size)
    return added_.size() > static_cast<size_t>(id - sp_size) ? added_[id - sp_size] : "";
  if (sp_->IsControl(id))
    return {};
  const std::string& piece = sp_->IdToPiece(id);
  if (sp_->IsByte(id)) {
    int b = byte_piece_value(piece);
    return b < 0 ? std::string() : std::string(1, static_cast<char>(b));
  }
  if (sp_->IsUnknown(id))
    return " \xE2\x81\x87 "; // SentencePiece's rendering of <unk>
  std::string out;
  static constexpr std::string_view space = "\xE2\x96\x81"; // "▁"
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, space.size(), space) == 0) {
      out.push_back(' ');
      i += space.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

std::vector<int32_t> tokenizer::encode_prompt(std::string_view prompt) const {
  if (bpe_) {
    std::vector<int32_t> out;
    while (true) {
      const size_t at = prompt.find(image_marker);
      const auto ids = encode(prompt.substr(0, at));
      out.insert(out.end(), ids.begin(), ids.end());
      if (at == std::string_view::npos)
        break;
      out.insert(out.end(), {vision_start_id_, image_token_id_, vision_end_id_});
      prompt.remove_prefix(at + image_marker.size());
    }
    return out;
  }
  std::vector<int32_t> out{bos_id_};
  bool first = true;
  while (true) {
    size_t at = prompt.find(image_marker);
    std::string_view text = prompt.substr(0, at);
    if (!text.empty()) {
      if (first) {
        auto ids = encode(text);
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        // Text after an image continues the sequence: no dummy-prefix
        // space (as HF's LlamaTokenizer with legacy=false). Encode behind
        // the unk piece and drop the tokens that piece produced.
        std::string unk = sp_->IdToPiece(sp_->unk_id());
        auto prefix = encode(unk);
        std::string joined = unk;
        joined.append(text);
        auto ids = encode(joined);
        size_t skip = std::min(prefix.size(), ids.size());
        out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(skip), ids.end());
      }
    }
    if (at == std::string_view::npos)
      break;
    out.push_back(image_token_id_);
    prompt.remove_prefix(at + image_marker.size());
    first = false;
  }
  return out;
}

std::string tokenizer::apply_chat_template(const std::vector<chat_message>& messages,
                                           bool add_generation_prompt) const {
  std::string out;
  if (bpe_) { // Qwen2-VL's ChatML template
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      if (i == 0 && m.role != "system")
        out += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
      out += "<|im_start|>" + m.role + "\n";
      std::string_view text = m.text_with_image_markers;
      while (true) {
        const size_t at = text.find(image_marker);
        out += text.substr(0, at);
        if (at == std::string_view::npos)
          break;
        out += "<|vision_start|><|image_pad|><|vision_end|>";
        text.remove_prefix(at + image_marker.size());
      }
      out += "<|im_end|>\n";
    }
    if (add_generation_prompt)
      out += "<|im_start|>assistant\n";
    return out;
  }
  for (const auto& m : messages) {
    if (m.role != "system") {
      for (char c : m.role)
        out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
      out += ": ";
    }
    out += m.text_with_image_markers;
    out += ' ';
  }
  if (add_generation_prompt)
    out += "ASSISTANT:";
  return out;
}

std::string_view llava_chat_template_jinja() {
  // The prompt `mosaic serve` builds from chat messages
  // (server/request_convert.cpp, then engine/generation.cpp's chat_prompt):
  // one "USER: " in front, message parts in their order with "<image>" per
  // image, a system message followed by "\n", " ASSISTANT: " before an
  // answer, " USER: " before each later user turn. BOS comes from the
  // tokenizer, as in Mosaic's encode_prompt.
  return "{%- set ns = namespace(first=true) -%}{{- 'USER: ' -}}"
         "{%- for message in messages -%}"
         "{%- if message['role'] == 'assistant' -%}{{- ' ASSISTANT: ' -}}"
         "{%- elif message['role'] == 'user' and not ns.first -%}{{- ' USER: ' -}}{%- endif -%}"
         "{%- if message['role'] != 'system' -%}{%- set ns.first = false -%}{%- endif -%}"
         "{%- if message['content'] is string -%}{{- message['content'] -}}"
         "{%- else -%}{%- for part in message['content'] -%}"
         "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
         "{%- elif part['type'] in ['image', 'image_url'] -%}{{- '<image>' -}}{%- endif -%}"
         "{%- endfor -%}{%- endif -%}"
         "{%- if message['role'] == 'system' -%}{{- '\n' -}}{%- endif -%}"
         "{%- endfor -%}"
         "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}";
}

} // namespace mosaic
