#include "engine/llava_engine.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "engine/cpu/cpu_backend.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

using testing::max_rel_error;

/// builtin:tiny generated into a private MOSAIC_HOME.
class llava_engine_test : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    home_ = std::filesystem::temp_directory_path() /
            ("mosaic_engine_test_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(home_);
    setenv("MOSAIC_HOME", home_.c_str(), 1);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(home_); }

  static inline std::filesystem::path home_;
  std::unique_ptr<backend> be_ = make_cpu_backend(2);
};

TEST_F(llava_engine_test, builtin_tiny_serves_a_cached_image_prompt) {
  auto engine = llava_engine::load("builtin:tiny", *be_, {64, 16});
  ASSERT_TRUE(engine) << engine.err().to_string();
  auto& e = **engine;
  const auto& cfg = e.config();
  EXPECT_TRUE(e.vlcache().uniform);
  const int n_img = cfg.image_tokens();

  std::mt19937 rng{std::random_device{}()};
  std::normal_distribution<float> d;
  std::vector<float> emb(size_t(n_img) * cfg.text.hidden_size);
  for (auto& x : emb)
    x = d(rng);
  auto entry = e.compile_image(emb);
  ASSERT_TRUE(entry) << entry.err().to_string();
  EXPECT_EQ(entry->n_tokens, n_img);

  prompt p;
  auto head = e.tokenizer().encode("USER: ");
  head.insert(head.begin(), e.tokenizer().bos_id());
  p.images.push_back({"img", n_img, &*entry, nullptr});
  p.parts.push_back({segment_kind::text, head, -1});
  p.parts.push_back({segment_kind::image, {}, 0});
  p.parts.push_back({segment_kind::text, e.tokenizer().encode("\nWhat is this? ASSISTANT:"), -1});

  auto full_plan = e.plan(p, *parse_policy("full"));
  auto mpic_plan = e.plan(p, *parse_policy("mpic:" + std::to_string(n_img)));
  ASSERT_TRUE(full_plan && mpic_plan);
  auto full = e.prefill(*full_plan);
  auto mpic = e.prefill(*mpic_plan);
  ASSERT_TRUE(full && mpic);
  ASSERT_EQ(full->logits.size(), size_t(cfg.text.vocab_size));
  EXPECT_LE(max_rel_error(mpic->logits, full->logits), 1e-5);

  // Decoding one token equals prefilling the longer prompt.
  const int32_t next = e.tokenizer().encode(" A")[0];
  decode_input in{&full->sequence, next, full->sequence.length()};
  auto step = e.decode_step({&in, 1});
  ASSERT_TRUE(step) << step.err().to_string();
  p.parts.back().text_ids.push_back(next);
  auto longer_plan = e.plan(p, *parse_policy("full"));
  ASSERT_TRUE(longer_plan);
  auto longer = e.prefill(*longer_plan);
  ASSERT_TRUE(longer);
  EXPECT_LE(max_rel_error(*step, longer->logits), 1e-4);
}

TEST_F(llava_engine_test, a_missing_model_is_a_clear_error) {
  auto engine = llava_engine::load((home_ / "no_such_model").string(), *be_);
  ASSERT_FALSE(engine);
  EXPECT_FALSE(engine.err().message.empty());
}

} // namespace
} // namespace mosaic
