// The learned KV compressor shipped with the trained checkpoint
// (tests/data/hf_trained_llava/fastcache_compressor.safetensors, trained by
// tools/fastcache/train_compressor.py --vqa): it loads for that model, and
// a question asked over the compressed KV of its images (the question's
// tokens decoded one by one after compression) is answered as the
// uncompressed model answers it for most held-out questions.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cpu/cpu_backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/kv_learned_compressor.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

fs::path data_dir() {
  const char* env = std::getenv("MOSAIC_TEST_DATA");
  return fs::path(env != nullptr ? env : "tests/data");
}

struct question {
  std::string user;
  std::vector<decoded_image> images;
};

std::vector<question> heldout(int n) {
  const fs::path dir = data_dir() / "vqa_heldout";
  std::ifstream in(dir / "heldout.jsonl");
  std::vector<question> out;
  std::string line;
  while (static_cast<int>(out.size()) < n && std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    question q{j.at("user").get<std::string>(), {}};
    for (const auto& f : j.at("images")) {
      std::ifstream png(dir / f.get<std::string>(), std::ios::binary);
      std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(png), {}};
      auto img = decode_image(bytes, image_limits{});
      EXPECT_TRUE(img) << f;
      if (img)
        q.images.push_back(std::move(*img));
    }
    out.push_back(std::move(q));
  }
  return out;
}

TEST(trained_compressor, shipped_weights_load_and_keep_most_answers) {
  const fs::path model = data_dir() / "hf_trained_llava";
  auto be = make_cpu_backend(1);
  auto eng = llava_engine::load(model.string(), *be);
  ASSERT_TRUE(eng) << eng.err().to_string();
  const auto& t = (*eng)->config().text;
  auto learned =
      learned_compressor::load(*be, model / learned_compressor_file, t.num_layers, t.kv_dim());
  ASSERT_TRUE(learned) << learned.err().to_string();
  EXPECT_EQ(learned->image_group(), 4);
  EXPECT_EQ(learned->text_group(), 1);
  auto enc = image_encoder::create(*be, (*eng)->config(), lookup_in((*eng)->weights()));
  ASSERT_TRUE(enc);

  const auto questions = heldout(24);
  ASSERT_EQ(questions.size(), 24u);
  const auto& tok = (*eng)->tokenizer();
  sampling_params greedy;
  greedy.stop_token_ids = {tok.eos_id()};
  int same = 0;
  for (const auto& q : questions) {
    std::vector<std::vector<float>> emb;
    std::vector<prompt_image> images;
    for (const auto& img : q.images) {
      auto e = enc->encode(img);
      ASSERT_TRUE(e);
      emb.push_back(std::move(*e));
    }
    for (const auto& e : emb)
      images.push_back(prompt_image{"", enc->view_tokens(), nullptr, e.data()});
    auto text = chat_prompt(tok, q.user, static_cast<int>(q.images.size()));
    ASSERT_TRUE(text);
    auto p = build_prompt(tok, *text, images);
    ASSERT_TRUE(p) << p.err().to_string();
    const auto full = *parse_policy("full");
    auto plain = generate(**eng, *p, full, greedy, 8);
    ASSERT_TRUE(plain) << plain.err().to_string();
    auto merged =
        generate(**eng, *p, full, greedy, 8, {*parse_compression("learned"), &*learned, 12});
    ASSERT_TRUE(merged) << merged.err().to_string();
    ASSERT_TRUE(merged->compression);
    // Image rows merge in groups of 4 (16 image tokens -> 4 rows).
    EXPECT_EQ(merged->compression->image_after * 4, merged->compression->image_before);
    same += merged->tokens == plain->tokens ? 1 : 0;
  }
  EXPECT_EQ((*eng)->pool().stats().blocks_used, 0);
  // Over the 200 held-out questions the merged KV gave the uncompressed answer
  // on 84.5% (docs/quality-16.md), here 19 of 24; a compressor that had learned nothing
  // (its untrained initialisation, one step) agreed on 10 of these 24.
  std::printf("%d of 24 answers as without compression\n", same);
  EXPECT_GE(same, 17);
}

} // namespace
} // namespace mosaic
