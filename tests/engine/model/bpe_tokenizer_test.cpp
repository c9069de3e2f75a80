// Byte-level BPE against HF tokenizers 0.21 (tests/data/hf_bpe, made by
// tools/golden/make_bpe_goldens.py with Qwen2's tokenizer.json layout):
// ids and decoded text for varied held-out text, and bad input.

#include "engine/model/bpe_tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace mosaic {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path data_dir() {
  const char* d = std::getenv("MOSAIC_TEST_DATA");
  return d == nullptr ? fs::path{} : fs::path{d} / "hf_bpe";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class bpe_tokenizer_test : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(data_dir().empty()) << "MOSAIC_TEST_DATA (ctest sets it)";
    auto t = bpe_tokenizer::load(data_dir() / "tokenizer.json");
    ASSERT_TRUE(t) << t.err().to_string();
    tok_ = std::make_unique<bpe_tokenizer>(std::move(*t));
    goldens_ = json::parse(slurp(data_dir() / "goldens.json"), nullptr, false);
    ASSERT_TRUE(goldens_.is_object());
    ASSERT_GE(goldens_["cases"].size(), 50u);
  }
  std::unique_ptr<bpe_tokenizer> tok_;
  json goldens_;
};

TEST_F(bpe_tokenizer_test, ids_and_decoded_text_equal_hf_tokenizers) {
  size_t tokens = 0;
  for (const auto& c : goldens_["cases"]) {
    const auto text = c["text"].get<std::string>();
    SCOPED_TRACE(text.substr(0, 80));
    auto ids = tok_->encode(text);
    ASSERT_TRUE(ids) << ids.err().to_string();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(*ids, want);
    tokens += want.size();
    if (c["decoded"].is_string()) {
      EXPECT_EQ(tok_->decode(want), c["decoded"].get<std::string>());
    }
  }
  EXPECT_GT(tokens, 3000u);
}

TEST_F(bpe_tokenizer_test, special_tokens_are_whole_ids_and_near_misses_are_text) {
  const int32_t start = tok_->token_id("<|im_start|>");
  const int32_t pad = tok_->token_id("<|image_pad|>");
  ASSERT_GE(start, 0);
  ASSERT_GE(pad, 0);
  auto ids = tok_->encode("<|im_start|>user\n<|image_pad|><|image_pad|>");
  ASSERT_TRUE(ids);
  EXPECT_EQ(ids->front(), start);
  EXPECT_EQ(ids->at(ids->size() - 1), pad);
  EXPECT_EQ(ids->at(ids->size() - 2), pad);
  auto near = tok_->encode("<|im_start|");
  ASSERT_TRUE(near);
  EXPECT_EQ(std::count(near->begin(), near->end(), start), 0);
  EXPECT_EQ(tok_->decode(*near), "<|im_start|");
  EXPECT_EQ(tok_->token_id("no such token"), -1);
}

TEST_F(bpe_tokenizer_test, bad_input_is_refused_and_hostile_input_is_fast) {
  auto bad = tok_->encode(std::string("ok \xff\xfe", 5));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.err().code, errc::invalid_argument);
  // Long runs of one letter and of spaces: the merge heap keeps this
  // n log n (a naive pairwise loop is quadratic here).
  const auto t0 = std::chrono::steady_clock::now();
  auto a = tok_->encode(std::string(200000, 'a'));
  auto s = tok_->encode(std::string(100000, ' ') + "x");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(a);
  ASSERT_TRUE(s);
  EXPECT_EQ(tok_->decode(*a), std::string(200000, 'a'));
  EXPECT_LT(took, std::chrono::seconds(5));
  // Many short words: each match must not re-read the rest of the text
  // (PCRE2's UTF check per call made this quadratic).
  std::string words;
  for (int i = 0; i < 200000; ++i)
    words += "a ";
  const auto t1 = std::chrono::steady_clock::now();
  auto w = tok_->encode(words);
  ASSERT_TRUE(w);
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(5));
  // Longer than a context could hold: refused before any work.
  auto huge = tok_->encode(std::string(bpe_tokenizer::max_text_bytes + 1, 'a'));
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.err().code, errc::invalid_argument);
}

TEST(bpe_tokenizer_parse, other_layouts_and_broken_files_are_refused_with_the_reason) {
  const auto good = json::parse(slurp(data_dir() / "tokenizer.json"));
  auto refused = [](const json& j, const std::string& says) {
    auto t = bpe_tokenizer::parse(j.dump());
    ASSERT_FALSE(t) << says;
    EXPECT_NE(t.err().message.find(says), std::string::npos) << t.err().message;
  };
  EXPECT_FALSE(bpe_tokenizer::parse("{not json"));
  json j = good;
  j["model"]["type"] = "Unigram";
  refused(j, "model.type");
  j = good;
  j["model"]["byte_fallback"] = true;
  refused(j, "byte_fallback");
  j = good;
  j["normalizer"] = {{"type", "NFKC"}};
  refused(j, "normalizer");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  refused(j, "does not compile");
  j = good;
  j["model"]["merges"].push_back(json::array({"zz", "qq"}));
  refused(j, "not in the vocabulary");
  j = good;
  j["model"]["vocab"].erase("a");
  refused(j, "byte-level alphabet");
  j = good;
  j["added_tokens"][0]["lstrip"] = true;
  refused(j, "lstrip");
  // Found by tests/fuzz bpe_tokenizer: fields of the wrong type (null
  // where an object belongs) threw from the JSON library; now each is a
  // clear error.
  for (const char* field : {"model", "pre_tokenizer", "added_tokens", "normalizer", "decoder"}) {
    for (const json& v : {json(nullptr), json(5), json("x"), json::array()}) {
      j = good;
      j[field] = v;
      auto t = bpe_tokenizer::parse(j.dump());
      // No normaliser, no decoder and no added tokens are valid files.
      const std::string f = field;
      const bool fine = (v.is_null() && f != "model" && f != "pre_tokenizer") ||
                        (f == "added_tokens" && v.is_array());
      if (fine) {
        EXPECT_TRUE(t) << field << " = " << v.dump();
        continue;
      }
      EXPECT_FALSE(t) << field << " = " << v.dump();
    }
  }
  // Deep nesting where a normaliser belongs: refused without recursing
  // through it (printing it whole would overflow the stack).
  std::string deep = good.dump();
  const std::string nest = std::string(100000, '[') + std::string(100000, ']');
  j = good;
  j["normalizer"] = json::array();
  deep = j.dump();
  const auto at = deep.find("\"normalizer\":[]");
  ASSERT_NE(at, std::string::npos);
  deep.replace(at, 15, "\"normalizer\":" + nest);
  auto nested = bpe_tokenizer::parse(deep);
  EXPECT_FALSE(nested);
  j = good;
  j["model"]["vocab"]["a"] = "not an id";
  refused(j, "out of range");
  j = good;
  j["added_tokens"][0]["id"] = 16000000; // sparse: would allocate 16M entries
  refused(j, "for ");
  auto missing = bpe_tokenizer::load(data_dir() / "no-such-file.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found);
}

} // namespace
} // namespace mosaic
