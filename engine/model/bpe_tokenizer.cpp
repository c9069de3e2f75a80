// Byte-level BPE (HF tokenizers' BPE model with the ByteLevel pre-tokenizer
// and decoder, as Qwen2's tokenizer.json configures them). The steps follow
// tokenizers 0.21: AddedVocabulary splits the raw text on added tokens;
// each other segment is normalised (NFC), split by the pattern (Isolated:
// matches and the text between them are pieces), mapped byte by byte to
// GPT-2's printable alphabet, and merged by BPE (lowest merge rank first,
// leftmost among equal ranks).

#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/model/bpe_tokenizer.hpp"

#include "engine/model/bounded_read.hpp"

#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <pcre2.h>
#include <queue>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>
#include <unordered_map>

namespace mosaic {

namespace {

using json = nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
// others for code points from 256 up, in byte order.
struct byte_alphabet {
  std::array<std::string, 256> to_char;
  std::unordered_map<char32_t, uint8_t> to_byte;

  byte_alphabet() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      char buf[U8_MAX_LENGTH];
      int32_t n = 0;
      U8_APPEND_UNSAFE(buf, n, static_cast<UChar32>(cp));
      to_char[static_cast<size_t>(b)].assign(buf, static_cast<size_t>(n));
      to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const byte_alphabet& alphabet() {
  static const byte_alphabet a;
  return a;
}

// One code point of s at i (ICU's U8_NEXT: an ill-formed sequence is
// consumed as far as it goes and yields a negative value); advances i.
UChar32 next_code_point(std::string_view s, size_t& i) {
  int32_t at = static_cast<int32_t>(i);
  UChar32 c = 0;
  U8_NEXT(s.data(), at, static_cast<int32_t>(s.size()), c);
  i = static_cast<size_t>(at);
  return c;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();)
    if (next_code_point(s, i) < 0)
      return false;
  return true;
}

struct added_token {
  std::string content;
  int32_t id = 0;
  bool special = false;
};

// Lookups that never throw, whatever the file holds: a missing key, or a
// key of another type, reads as null / "" / the default.
const json& at(const json& j, const char* key) {
  static const json null;
  if (!j.is_object())
    return null;
  const auto it = j.find(key);
  return it == j.end() ? null : *it;
}

std::string text_at(const json& j, const char* key) {
  const json& v = at(j, key);
  return v.is_string() ? v.get<std::string>() : std::string{};
}

bool flag_at(const json& j, const char* key, bool otherwise) {
  const json& v = at(j, key);
  return v.is_boolean() ? v.get<bool>() : otherwise;
}

} // namespace

struct bpe_tokenizer::impl {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;            // byte-level form or added content
  std::unordered_map<std::string, int> merge_rank; // "a b" → rank
  std::vector<added_token> added;                  // longest first
  std::array<bool, 256> starts_added{};            // first bytes of added tokens
  std::vector<bool> special;                       // by id: a special added token
  bool nfc = false;
  bool ignore_merges = false;
  pcre2_code* pattern = nullptr;
  pcre2_match_context* context = nullptr; // step and heap limits per match

  ~impl() {
    if (context != nullptr)
      pcre2_match_context_free(context);
    if (pattern != nullptr)
      pcre2_code_free(pattern);
  }

  void bpe(const std::string& word, std::vector<int32_t>& out) const;
  status encode_segment(std::string_view text, std::vector<int32_t>& out) const;
};

void bpe_tokenizer::impl::bpe(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // The word's symbols (one byte-level character each) as a linked list;
  // a heap of candidate merges keyed by (rank, left position), each entry
  // checked against the symbols' generations when it is popped.
  struct symbol {
    std::string text;
    int prev, next;
    unsigned gen = 0;
  };
  std::vector<symbol> syms;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    (void)next_code_point(word, i);
    const int n = static_cast<int>(syms.size());
    syms.push_back({word.substr(start, i - start), n - 1, n + 1});
  }
  if (syms.empty())
    return;
  syms.back().next = -1;
  struct candidate {
    int rank, left, right;
    unsigned left_gen, right_gen;
    bool operator>(const candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<candidate, std::vector<candidate>, std::greater<>> heap;
  auto consider = [&](int l) {
    if (l < 0)
      return;
    const int r = syms[static_cast<size_t>(l)].next;
    if (r < 0)
      return;
    std::string key = syms[static_cast<size_t>(l)].text;
    key += ' ';
    key += syms[static_cast<size_t>(r)].text;
    if (auto it = merge_rank.find(key); it != merge_rank.end())
      heap.push(
          {it->second, l, r, syms[static_cast<size_t>(l)].gen, syms[static_cast<size_t>(r)].gen});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i)
    consider(i);
  while (!heap.empty()) {
    const candidate c = heap.top();
    heap.pop();
    auto& l = syms[static_cast<size_t>(c.left)];
    if (l.gen != c.left_gen || l.next != c.right ||
        syms[static_cast<size_t>(c.right)].gen != c.right_gen)
      continue; // stale: one side merged since
    auto& r = syms[static_cast<size_t>(c.right)];
    l.text += r.text;
    ++l.gen;
    r.gen = std::numeric_limits<unsigned>::max(); // dead
    l.next = r.next;
    if (r.next >= 0)
      syms[static_cast<size_t>(r.next)].prev = c.left;
    consider(l.prev);
    consider(c.left);
  }
  for (int i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
    auto it = vocab.find(syms[static_cast<size_t>(i)].text);
    // Every single byte is in the alphabet and every merge result in the
    // vocabulary (checked at load), so this always finds one.
    if (it != vocab.end())
      out.push_back(it->second);
  }
}

status bpe_tokenizer::impl::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  if (nfc) {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(st);
    if (U_FAILURE(st))
      return make_error(errc::internal, "ICU has no NFC normaliser: ", u_errorName(st));
    // Straight on UTF-8 (no UTF-16 copy); text already in NFC, as most
    // prompts are, is copied as it is.
    const icu::StringPiece in(text.data(), static_cast<int32_t>(text.size()));
    if (n->isNormalizedUTF8(in, st) && U_SUCCESS(st)) {
      normalized.assign(text);
    } else {
      st = U_ZERO_ERROR;
      icu::StringByteSink<std::string> sink(&normalized, static_cast<int32_t>(text.size()));
      n->normalizeUTF8(0, in, sink, nullptr, st);
      if (U_FAILURE(st))
        return make_error(errc::internal, "NFC normalisation failed: ", u_errorName(st));
    }
  } else {
    normalized.assign(text);
  }
  const auto& a = alphabet();
  auto piece = [&](size_t from, size_t to) {
    std::string word;
    for (size_t i = from; i < to; ++i)
      word += a.to_char[static_cast<unsigned char>(normalized[i])];
    bpe(word, out);
  };
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(pattern, nullptr);
  if (md == nullptr)
    return make_error(errc::out_of_memory, "pcre2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(normalized.data());
  const size_t size = normalized.size();
  size_t done = 0;   // end of the last piece
  size_t search = 0; // where the next match may start
  status s;
  while (search < size) {
    // NO_UTF_CHECK: the text is valid UTF-8 (checked in encode, and ICU's
    // output); without it PCRE2 re-validates the rest of the text on every
    // call, which is quadratic in the text's length.
    const int rc = pcre2_match(pattern, subject, size, search, PCRE2_NO_UTF_CHECK, md, context);
    if (rc == PCRE2_ERROR_NOMATCH)
      break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      s = make_error(errc::invalid_argument,
                     "pre-tokenizer pattern: ", reinterpret_cast<const char*>(msg));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {
      // An empty match makes no piece; look again one character on (none
      // of Qwen's alternatives matches empty).
      if (ov[0] >= size)
        break;
      size_t i = ov[0];
      (void)next_code_point(normalized, i);
      search = std::min(i, size);
      continue;
    }
    if (ov[0] > done)
      piece(done, ov[0]); // text between matches is a piece of its own
    piece(ov[0], ov[1]);
    done = search = ov[1];
  }
  if (s && done < size)
    piece(done, size);
  pcre2_match_data_free(md);
  return s;
}

bpe_tokenizer::bpe_tokenizer(std::unique_ptr<impl> p) : p_(std::move(p)) {}
bpe_tokenizer::~bpe_tokenizer() = default;
bpe_tokenizer::bpe_tokenizer(bpe_tokenizer&&) noexcept = default;
bpe_tokenizer& bpe_tokenizer::operator=(bpe_tokenizer&&) noexcept = default;

result<bpe_tokenizer> bpe_tokenizer::load(const std::filesystem::path& path) {
  auto text = read_bounded_file(path, max_file_bytes, "a tokenizer.json is at most 64 MiB");
  if (!text)
    return std::move(text).err();
  auto t = parse(*text);
  if (!t)
    return make_error(t.err().code, path.string(), ": ", t.err().message);
  return t;
}

result<bpe_tokenizer> bpe_tokenizer::parse(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object())
    return make_error(errc::invalid_argument, "tokenizer.json is not a JSON object");
  auto bad = [](auto&&... parts) {
    return make_error(errc::unsupported, "tokenizer.json: ", parts...);
  };
  auto p = std::make_unique<impl>();
  const json& model = at(j, "model");
  if (text_at(model, "type") != "BPE")
    return bad("model.type must be \"BPE\" (byte-level BPE)");
  if (flag_at(model, "byte_fallback", false))
    return bad("model.byte_fallback is not supported (byte-level BPE needs none)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const json& v = at(model, k);
    if (!v.is_null() && !(v.is_string() && v.get<std::string>().empty()))
      return bad("model.", k, " is not supported");
  }
  p->ignore_merges = flag_at(model, "ignore_merges", false);
  const json& vocab = at(model, "vocab");
  if (!vocab.is_object() || vocab.empty())
    return make_error(errc::invalid_argument, "tokenizer.json: model.vocab is empty");
  int32_t max_id = -1;
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24))
      return make_error(errc::invalid_argument, "tokenizer.json: vocab id of \"", tok,
                        "\" out of range");
    p->vocab[tok] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  const json& merges = at(model, "merges");
  if (!merges.is_array())
    return make_error(errc::invalid_argument, "tokenizer.json: model.merges is not a list");
  int rank = 0;
  for (const auto& m : merges) {
    std::string a, b;
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else if (m.is_string()) { // older files: "a b"
      const auto s = m.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return make_error(errc::invalid_argument, "tokenizer.json: merge \"", s,
                          "\" is not two symbols");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      return make_error(errc::invalid_argument, "tokenizer.json: merge ", std::to_string(rank),
                        " is neither [a, b] nor \"a b\"");
    }
    if (!p->vocab.contains(a + b))
      return make_error(errc::invalid_argument, "tokenizer.json: merge ", std::to_string(rank),
                        " makes \"", a + b, "\", which is not in the vocabulary");
    p->merge_rank[a + ' ' + b] = rank++; // a repeated merge: the last rank wins, as in HF
  }
  for (const auto& ch : alphabet().to_char)
    if (!p->vocab.contains(ch))
      return make_error(
          errc::invalid_argument,
          "tokenizer.json: the vocabulary lacks a byte of the byte-level alphabet (\"", ch, "\")");

  // Normaliser: NFC or none.
  const json& norm = at(j, "normalizer");
  if (!norm.is_null()) {
    if (text_at(norm, "type") != "NFC")
      return bad("normalizer must be NFC or null, not \"", text_at(norm, "type"), "\" (",
                 norm.type_name(), ")");
    p->nfc = true;
  }
  // Pre-tokenizer: Sequence[Split(Regex, Isolated), ByteLevel(use_regex false)].
  const json& pre = at(j, "pre_tokenizer");
  const json& seq = at(pre, "pretokenizers");
  if (text_at(pre, "type") != "Sequence" || !seq.is_array() || seq.size() != 2 ||
      text_at(seq[0], "type") != "Split" || text_at(seq[1], "type") != "ByteLevel")
    return bad("pre_tokenizer must be Sequence[Split, ByteLevel] as Qwen2's");
  const json& split = seq[0];
  if (text_at(split, "behavior") != "Isolated" || flag_at(split, "invert", false) ||
      !at(at(split, "pattern"), "Regex").is_string())
    return bad("the Split pre-tokenizer must be a Regex, Isolated, not inverted");
  if (flag_at(seq[1], "add_prefix_space", false) || flag_at(seq[1], "use_regex", true))
    return bad("the ByteLevel pre-tokenizer must have add_prefix_space and use_regex off");
  const auto regex = text_at(at(split, "pattern"), "Regex");
  int err = 0;
  PCRE2_SIZE err_at = 0;
  p->pattern =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &err_at, nullptr);
  if (p->pattern == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return make_error(errc::invalid_argument, "tokenizer.json: the pre-tokenizer pattern does not ",
                      "compile at offset ", std::to_string(err_at), ": ",
                      reinterpret_cast<const char*>(msg));
  }
  (void)pcre2_jit_compile(p->pattern, PCRE2_JIT_COMPLETE); // falls back to the interpreter
  // An operator's pattern that backtracks badly fails the request instead
  // of holding a thread for minutes: Qwen2's needs a few steps per piece.
  p->context = pcre2_match_context_create(nullptr);
  if (p->context == nullptr)
    return make_error(errc::out_of_memory, "pcre2 match context");
  pcre2_set_match_limit(p->context, 1000000);
  pcre2_set_heap_limit(p->context, 16 * 1024); // KiB
  const json& dec = at(j, "decoder");
  if (!dec.is_null() && text_at(dec, "type") != "ByteLevel")
    return bad("decoder must be ByteLevel, not \"", text_at(dec, "type"), "\" (", dec.type_name(),
               ")");

  // Added tokens: matched on the raw text, longest first.
  const json& added = at(j, "added_tokens");
  if (!added.is_null() && !added.is_array())
    return make_error(errc::invalid_argument, "tokenizer.json: added_tokens is not a list");
  for (const auto& t : added.is_array() ? added : json::array()) {
    if (!at(t, "content").is_string() || !at(t, "id").is_number_integer())
      return make_error(errc::invalid_argument,
                        "tokenizer.json: an added token lacks content or id");
    const auto content = text_at(t, "content");
    if (content.empty())
      return make_error(errc::invalid_argument, "tokenizer.json: an added token is empty");
    if (flag_at(t, "lstrip", false) || flag_at(t, "rstrip", false) ||
        flag_at(t, "single_word", false) || flag_at(t, "normalized", false))
      return bad("added token \"", content, "\": lstrip, rstrip, single_word and normalized ",
                 "are not supported");
    const int64_t id = at(t, "id").get<int64_t>();
    if (id < 0 || id >= (1 << 24))
      return make_error(errc::invalid_argument, "tokenizer.json: added token id out of range");
    p->added.push_back({content, static_cast<int32_t>(id), flag_at(t, "special", false)});
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  for (const auto& t : p->added)
    p->starts_added[static_cast<unsigned char>(t.content[0])] = true;
  std::stable_sort(p->added.begin(), p->added.end(),
                   [](const added_token& a, const added_token& b) {
                     return a.content.size() > b.content.size();
                   });
  // Ids index a table: sparse ids in a small file must not allocate for
  // millions of empty entries.
  const size_t entries = p->vocab.size() + p->added.size();
  if (static_cast<size_t>(max_id) >= 2 * entries + 256)
    return make_error(errc::invalid_argument, "tokenizer.json: id ", std::to_string(max_id),
                      " for ", std::to_string(entries), " tokens");
  p->id_to_token.assign(static_cast<size_t>(max_id) + 1, std::string{});
  for (const auto& [tok, id] : p->vocab)
    p->id_to_token[static_cast<size_t>(id)] = tok;
  p->special.assign(p->id_to_token.size(), false);
  for (const auto& t : p->added) {
    p->id_to_token[static_cast<size_t>(t.id)] = t.content;
    p->special[static_cast<size_t>(t.id)] = t.special;
  }
  return bpe_tokenizer{std::move(p)};
}

result<std::vector<int32_t>> bpe_tokenizer::encode(std::string_view text) const {
  if (text.size() > max_text_bytes)
    return make_error(errc::invalid_argument, "text of ", std::to_string(text.size()),
                      " bytes; at most ", std::to_string(max_text_bytes), " are tokenised at once");
  if (!valid_utf8(text))
    return make_error(errc::invalid_argument, "text is not valid UTF-8");
  std::vector<int32_t> out;
  size_t from = 0;
  size_t at = 0;
  while (at < text.size()) {
    const added_token* hit = nullptr;
    if (!p_->starts_added[static_cast<unsigned char>(text[at])]) {
      ++at;
      continue;
    }
    for (const auto& t : p_->added) // longest first: the first hit is the longest
      if (text.compare(at, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    if (hit == nullptr) {
      ++at;
      continue;
    }
    if (at > from)
      MOSAIC_TRY(p_->encode_segment(text.substr(from, at - from), out));
    out.push_back(hit->id);
    at += hit->content.size();
    from = at;
  }
  if (from < text.size())
    MOSAIC_TRY(p_->encode_segment(text.substr(from), out));
  return out;
}

std::string bpe_tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= p_->id_to_token.size())
    return {};
  const auto& a = alphabet();
  const std::string& tok = p_->id_to_token[static_cast<size_t>(id)];
  // HF's ByteLevel decoder: a token all of whose characters are in the
  // byte alphabet becomes those bytes; any other token stays as it is.
  std::string as_bytes;
  for (size_t i = 0; i < tok.size();) {
    const UChar32 cp = next_code_point(tok, i);
    if (auto it = a.to_byte.find(static_cast<char32_t>(cp)); cp >= 0 && it != a.to_byte.end())
      as_bytes += static_cast<char>(it->second);
    else
      return tok;
  }
  return as_bytes;
}

bool bpe_tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < p_->special.size() &&
         p_->special[static_cast<size_t>(id)];
}

std::string bpe_tokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (const int32_t id : ids)
    bytes += token_bytes(id);
  // Lossy UTF-8, as String::from_utf8_lossy.
  std::string out;
  icu::UnicodeString::fromUTF8(icu::StringPiece(bytes.data(), static_cast<int32_t>(bytes.size())))
      .toUTF8String(out);
  return out;
}

int32_t bpe_tokenizer::token_id(std::string_view token) const {
  for (const auto& t : p_->added)
    if (t.content == token)
      return t.id;
  if (auto it = p_->vocab.find(std::string(token)); it != p_->vocab.end())
    return it->second;
  return -1;
}

int32_t bpe_tokenizer::vocab_size() const {
  return static_cast<int32_t>(p_->id_to_token.size());
}

} // namespace mosaic
