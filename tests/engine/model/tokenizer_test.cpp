#include "engine/model/tokenizer.hpp"

#include <algorithm>
#include <fstream>
#include <memory>
#include <random>

#include <gtest/gtest.h>

#include "engine/model/builtin_model.hpp"
#include "tests/engine/model/temp_dir.hpp"

namespace mosaic {
namespace {

// One builtin:tiny tokenizer for the whole suite.
class tokenizer_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::temp_dir>();
    ASSERT_TRUE(write_builtin_model(builtin_preset::tiny, dir_->path()));
    cfg_ = std::make_unique<model_config>(*load_model_config(dir_->path()));
    auto t = tokenizer::load(dir_->path(), *cfg_);
    ASSERT_TRUE(t) << t.err().to_string();
    tok_ = std::make_unique<tokenizer>(std::move(*t));
  }
  static void TearDownTestSuite() {
    tok_.reset();
    cfg_.reset();
    dir_.reset();
  }
  static std::unique_ptr<test::temp_dir> dir_;
  static std::unique_ptr<model_config> cfg_;
  static std::unique_ptr<tokenizer> tok_;
};

std::unique_ptr<test::temp_dir> tokenizer_test::dir_;
std::unique_ptr<model_config> tokenizer_test::cfg_;
std::unique_ptr<tokenizer> tokenizer_test::tok_;

std::string random_text(std::mt19937_64& rng) {
  static const char* pieces[] = {"the", " red",   " circle", " ",  "  ",      "?",
                                 "\n",  "42",     "é",       "猫", "Zq",      "x",
                                 "!",   " image", "\t",      "~",  "Ünïcödé", "\xF0\x9F\x98\x80"};
  std::string s;
  int n = 1 + static_cast<int>(rng() % 20);
  for (int i = 0; i < n; ++i)
    s += pieces[rng() % std::size(pieces)];
  return s;
}

TEST_F(tokenizer_test, encode_decode_round_trips_any_text) {
  std::mt19937_64 rng(std::random_device{}());
  for (int i = 0; i < 200; ++i) {
    std::string text = random_text(rng);
    auto ids = tok_->encode(text);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, tok_->sp_vocab_size());
      ASSERT_NE(id, 0) << "unk in '" << text << "' (byte fallback should cover everything)";
    }
    EXPECT_EQ(tok_->decode(ids), text);
    // Streaming: pieces concatenate to the text plus the dummy-prefix space.
    std::string streamed;
    for (int32_t id : ids)
      streamed += tok_->decode_piece(id);
    EXPECT_EQ(streamed, " " + text);
  }
  // Common words are single pieces: the vocabulary was learned.
  EXPECT_EQ(tok_->encode("the").size(), 1u);
  EXPECT_LT(tok_->encode("What color is the circle next to the house?").size(), 14u);
}

TEST_F(tokenizer_test, image_markers_become_one_image_token_each) {
  const int32_t img = tok_->image_token_id();
  EXPECT_EQ(img, cfg_->image_token_index);
  EXPECT_EQ(img, tok_->sp_vocab_size());
  auto ids = tok_->encode_prompt("USER: <image>\nWhat is in <image> and<image>? ASSISTANT:");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), tok_->bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), img), 3);
  // Text around the markers survives.
  EXPECT_EQ(tok_->decode(ids), "USER: \nWhat is in  and? ASSISTANT:");
  // The text after a marker gets no dummy-prefix space.
  auto it = std::find(ids.begin(), ids.end(), img);
  ASSERT_NE(it + 1, ids.end());
  EXPECT_EQ(tok_->decode_piece(*(it + 1)), "\n");
  // Adjacent markers and a prompt that is only a marker.
  auto two = tok_->encode_prompt("<image><image>");
  EXPECT_EQ(two, (std::vector<int32_t>{tok_->bos_id(), img, img}));
  // "<image>" in plain encode is just text.
  auto plain = tok_->encode("<image>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), img), 0);
}

TEST_F(tokenizer_test, special_and_out_of_range_ids_decode_safely) {
  std::vector<int32_t> ids = {tok_->bos_id(), -5, tok_->image_token_id(), 1 << 30, tok_->eos_id()};
  EXPECT_EQ(tok_->decode(ids), "");
  EXPECT_EQ(tok_->decode_piece(-1), "");
  EXPECT_EQ(tok_->decode_piece(1 << 30), "");
  EXPECT_EQ(tok_->decode_piece(tok_->eos_id()), "");
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->vocab_size(), cfg_->text.vocab_size);
}

TEST_F(tokenizer_test, llava_chat_template) {
  std::vector<chat_message> chat = {
      {"user", "<image>\nWhat is this?"}, {"assistant", "A red circle."}, {"user", "And <image>?"}};
  EXPECT_EQ(tok_->apply_chat_template(chat, true),
            "USER: <image>\nWhat is this? ASSISTANT: A red circle. USER: And <image>? ASSISTANT:");
  EXPECT_EQ(tok_->apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}}, false),
            "Be brief. USER: Hi ");
  auto ids = tok_->encode_prompt(tok_->apply_chat_template(chat, true));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok_->image_token_id()), 2);
}

TEST(tokenizer, missing_or_corrupt_model_file_is_an_error) {
  test::temp_dir tmp;
  model_config cfg = builtin_config(builtin_preset::tiny);
  auto r = tokenizer::load(tmp.path(), cfg);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::not_found);
  { std::ofstream(tmp.path() / "tokenizer.model") << "this is not a protobuf"; }
  auto c = tokenizer::load(tmp.path(), cfg);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.err().code, errc::corrupt_data);
}

} // namespace
} // namespace mosaic
