// End to end through the actors on builtin:tiny: reuse policies agree with
// the full recompute where they must, an uploaded image is a library hit,
// and a corrupt library entry falls back to computing the image.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (a string of image_data_segment); the values are
// always initialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/backend.hpp"
#include "engine/generation.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/builtin_model.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace mosaic::actors {
namespace {

using namespace test;

class pipeline_test : public ::testing::Test {
protected:
  void SetUp() override {
    rng_.seed(seed_);
    auto o = tiny_options(library_.path());
    o.ram_budget_bytes = 0; // every hit is read from disk by the loader
    // A new image is stored after its first use (the default waits for a
    // second sighting: pipeline_store_after_use below).
    o.store_after_use = "first";
    auto c = local_cluster::start(o);
    ASSERT_TRUE(c) << c.err().to_string();
    cluster_ = std::move(*c);
  }

  completion run(const wire::generate_request& req) {
    auto done = cluster_->submit(req)->wait(30s);
    EXPECT_TRUE(done) << done.err().to_string();
    return done ? *done : completion{};
  }

  uint64_t seed_ = fresh_seed();
  std::mt19937_64 rng_;
  temp_dir library_{"mosaic_actors_lib"};
  std::unique_ptr<local_cluster> cluster_;
};

TEST_F(pipeline_test, reuse_policies_match_full_recompute_where_they_must) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_), random_png(rng_)};
  for (const auto& img : images)
    ASSERT_TRUE(cluster_->upload("alice", img));
  const int n_img = cluster_->context().engine->config().image_tokens();

  const auto full = run(greedy_request(images, "full", 12));
  const auto prefix = run(greedy_request(images, "prefix", 12));
  const auto mpic = run(greedy_request(images, "mpic:" + std::to_string(n_img), 12));
  ASSERT_FALSE(full.tokens.empty());
  EXPECT_EQ(prefix.tokens, full.tokens);
  EXPECT_EQ(mpic.tokens, full.tokens);
  EXPECT_EQ(full.text, mpic.text);
  const auto s = cluster_->stats();
  EXPECT_EQ(s.library_hits, 6u); // every image of the three requests
  EXPECT_EQ(s.library_misses, 0u);
  EXPECT_EQ(s.load_fallbacks, 0u);
  EXPECT_EQ(s.completed, 3u); // the router answered each one
  EXPECT_EQ(s.pool.blocks_used, 0);
}

TEST_F(pipeline_test, a_repeated_request_reuses_the_prefix_cache_per_tenant) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_), random_png(rng_)};
  const int block = cluster_->context().engine->pool().block_size();
  const auto first = run(greedy_request(images, "prefix", 8));
  const uint32_t n = first.usage.prompt_tokens();
  EXPECT_EQ(first.usage.cached_tokens(), 0u);
  const auto again = run(greedy_request(images, "prefix", 8));
  EXPECT_EQ(again.usage.prompt_tokens(), n);
  EXPECT_GE(again.usage.cached_tokens(), n - uint32_t(block)) << "prompt of " << n;
  EXPECT_LT(again.usage.cached_tokens(), n);
  EXPECT_EQ(again.tokens, first.tokens);
  // Another tenant's identical prompt shares nothing.
  const auto bob = run(greedy_request(images, "prefix", 8, "bob"));
  EXPECT_EQ(bob.usage.cached_tokens(), 0u);
  EXPECT_EQ(bob.tokens, first.tokens);
  // `full` uses no cache.
  EXPECT_EQ(run(greedy_request(images, "full", 8)).usage.cached_tokens(), 0u);
  const auto s = cluster_->stats();
  EXPECT_GE(s.pool.prefix_hits, uint64_t(n - block));
  EXPECT_EQ(s.pool.blocks_used, 0); // cached blocks are free for allocation
  EXPECT_GT(s.pool.blocks_cached, 0);
}

TEST_F(pipeline_test, the_encoder_cache_is_per_tenant) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  // Uploads go through the encoder every time (a request's image may be
  // a library hit instead).
  const auto png = random_png(rng_);
  const auto before = cluster_->stats();
  ASSERT_TRUE(cluster_->upload("alice", png));
  ASSERT_TRUE(cluster_->upload("alice", png)); // her cached encoder output
  const auto alice = cluster_->stats();
  EXPECT_EQ(alice.encodes - before.encodes, 1u);
  EXPECT_EQ(alice.encoder_cache_hits - before.encoder_cache_hits, 1u);
  // Bob's identical image is encoded anew: a cache hit would tell him
  // (by its speed) that another tenant sent it.
  ASSERT_TRUE(cluster_->upload("bob", png));
  const auto bob = cluster_->stats();
  EXPECT_EQ(bob.encodes - alice.encodes, 1u);
  EXPECT_EQ(bob.encoder_cache_hits, alice.encoder_cache_hits);
}

TEST_F(pipeline_test, each_inline_image_is_decoded_once_per_request) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  // Two misses: the linker decodes and keys each image and lends the
  // pixels to the encoder, which does not decode them again.
  const std::vector<std::vector<uint8_t>> images{random_png(rng_), random_png(rng_)};
  const auto before = cluster_->stats();
  const auto first = run(greedy_request(images, "full", 4));
  ASSERT_FALSE(first.tokens.empty());
  const auto after = cluster_->stats();
  EXPECT_EQ(after.encodes - before.encodes, 2u);
  EXPECT_EQ(after.image_decodes - before.image_decodes, 2u);
  // Nothing lent stays behind. An upload's encoder decodes the bytes
  // itself: its entries carry the keys the linker computed (both hit),
  // and linking them with every token recomputed gives the same answer.
  EXPECT_EQ(cluster_->context().decoded.size(), 0u);
  for (const auto& img : images)
    ASSERT_TRUE(cluster_->upload("alice", img));
  EXPECT_EQ(cluster_->stats().image_decodes - after.image_decodes, 2u);
  const int n_img = cluster_->context().engine->config().image_tokens();
  const auto hits_before = cluster_->stats().library_hits;
  EXPECT_EQ(run(greedy_request(images, "mpic:" + std::to_string(n_img), 4)).tokens, first.tokens);
  EXPECT_EQ(cluster_->stats().library_hits - hits_before, 2u);
}

TEST_F(pipeline_test, a_stop_string_that_starts_inside_a_token_returns_none_of_it) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_)};
  auto req = greedy_request(images, "full", 24);
  req.tenant = "stops";      // its own prefix cache: nothing shared with other cases
  req.sampling.logprobs = 2; // held-back tokens keep theirs
  const auto free_run = run(req);
  ASSERT_EQ(free_run.logprobs.size(), free_run.tokens.size());
  // Token texts and where each ends in the answer.
  std::vector<size_t> ends;
  {
    size_t at = 0;
    const auto& tok = cluster_->context().engine->tokenizer();
    for (int32_t t : free_run.tokens)
      ends.push_back(at += tok.decode_piece(t).size());
  }
  ASSERT_EQ(ends.empty() ? 0 : ends.back(), free_run.text.size());
  // A stop string that begins in the middle of one token and ends in the
  // next one (2 characters of each at most), at the first place where
  // that exists and the string does not occur earlier.
  std::string stop;
  size_t begin = 0;
  for (size_t i = 0; i + 1 < ends.size() && stop.empty(); ++i) {
    const size_t start = i == 0 ? 0 : ends[i - 1];
    if (ends[i] - start < 2 || ends[i + 1] - ends[i] < 1)
      continue;
    begin = ends[i] - 1;
    const auto candidate = free_run.text.substr(begin, 2);
    if (free_run.text.find(candidate) == begin)
      stop = candidate;
  }
  if (stop.empty())
    GTEST_SKIP() << "no token boundary fits in this answer: " << free_run.text;
  req.sampling.stop = {stop};
  const auto stopped = run(req);
  EXPECT_EQ(stopped.finish, msg::FinishReason::stop);
  EXPECT_EQ(stopped.text, free_run.text.substr(0, begin)) << "stop '" << stop << "'";
  ASSERT_EQ(stopped.logprobs.size(), stopped.tokens.size());
  ASSERT_LE(stopped.tokens.size(), free_run.tokens.size());
  for (size_t i = 0; i < stopped.tokens.size(); ++i) {
    ASSERT_EQ(stopped.logprobs[i].size(), 3u);
    EXPECT_EQ(stopped.logprobs[i][0].token_id, free_run.tokens[i]);
    // The second run reads the image from the library entry its first run
    // stored (embeddings kept in 16 bits): close, not equal.
    EXPECT_NEAR(stopped.logprobs[i][0].logprob, free_run.logprobs[i][0].logprob, 2e-3);
  }
}

TEST_F(pipeline_test, logprobs_and_prompt_ids_come_with_the_tokens_when_asked) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_), random_png(rng_)};
  const auto& engine = *cluster_->context().engine;
  auto req = greedy_request(images, "full", 8);
  req.tenant = "logprobs";
  const auto plain = run(req);
  EXPECT_TRUE(plain.logprobs.empty());
  EXPECT_TRUE(plain.prompt_token_ids.empty());
  req.sampling.logprobs = 5;
  req.sampling.return_token_ids = true;
  const auto c = run(req);
  EXPECT_EQ(c.tokens, plain.tokens); // asking changes nothing sampled
  ASSERT_EQ(c.logprobs.size(), c.tokens.size());
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    const auto& lp = c.logprobs[i];
    ASSERT_EQ(lp.size(), 6u) << "token " << i;
    EXPECT_EQ(lp[0].token_id, c.tokens[i]);
    EXPECT_EQ(lp[0].text, engine.tokenizer().decode_piece(c.tokens[i]));
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(lp[1].token_id, c.tokens[i]);
    EXPECT_EQ(lp[1].logprob, lp[0].logprob);
    double mass = 0.0;
    for (size_t k = 1; k < lp.size(); ++k) {
      EXPECT_LE(lp[k].logprob, 0.0f);
      if (k > 1) {
        EXPECT_LE(lp[k].logprob, lp[k - 1].logprob);
      }
      mass += std::exp(double(lp[k].logprob));
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
  }
  // The prompt as the model read it: every image as its image tokens.
  ASSERT_EQ(c.prompt_token_ids.size(), size_t(c.usage.prompt_tokens()));
  const int32_t image_id = engine.tokenizer().image_token_id();
  EXPECT_EQ(std::count(c.prompt_token_ids.begin(), c.prompt_token_ids.end(), image_id),
            std::ptrdiff_t(images.size()) * engine.config().image_tokens());
  EXPECT_EQ(c.prompt_token_ids.front(), engine.tokenizer().bos_id());
}

TEST_F(pipeline_test, ignore_eos_and_min_tokens_fix_the_answer_length) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::vector<uint8_t>> images{random_png(rng_)};
  auto req = greedy_request(images, "full", 20);
  req.sampling.ignore_eos = true;
  const auto fixed = run(req);
  EXPECT_EQ(fixed.tokens.size(), 20u);
  EXPECT_EQ(fixed.finish, msg::FinishReason::length);
  EXPECT_EQ(fixed.usage.completion_tokens(), 20u);
  // min_tokens: no end-of-sequence before 12 tokens, whatever the model
  // prefers (sampled at a high temperature, EOS comes early otherwise).
  auto hot = greedy_request(images, "full", 12);
  hot.sampling.temperature = 2.0f;
  hot.sampling.min_tokens = 12;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    hot.sampling.seed = seed;
    const auto c = run(hot);
    EXPECT_EQ(c.tokens.size(), 12u) << "seed " << seed;
  }
}

TEST_F(pipeline_test, every_stage_of_a_request_is_timed) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  using actors::request_stage;
  const auto before = cluster_->stats();
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run(greedy_request({random_png(rng_)}, "mpic:4", 2)); // a miss: encoded
  const double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  // Store after use compiles the new image after the first token.
  const size_t compile = size_t(request_stage::compile);
  for (int i = 0; i < 500 && cluster_->stats().stage_count[compile] == before.stage_count[compile];
       ++i)
    std::this_thread::sleep_for(10ms);
  const auto after = cluster_->stats();
  auto us = [&](request_stage s) { return after.stage_us[size_t(s)] - before.stage_us[size_t(s)]; };
  auto count = [&](request_stage s) {
    return after.stage_count[size_t(s)] - before.stage_count[size_t(s)];
  };
  std::set<std::string> names;
  for (size_t i = 0; i < actors::n_request_stages; ++i) {
    const auto s = request_stage(i);
    names.insert(actors::stage_name(s));
    // The encoder decodes nothing: the linker lent it the pixels.
    if (s == request_stage::image_decode)
      EXPECT_EQ(count(s), 0u) << "the miss was decoded twice";
    else
      EXPECT_GE(count(s), 1u) << actors::stage_name(s) << " was not timed";
  }
  EXPECT_EQ(names.size(), actors::n_request_stages);
  EXPECT_EQ(names.count("unknown"), 0u);
  EXPECT_GT(us(request_stage::vision_encode), 0u);
  EXPECT_GT(us(request_stage::prefill_compute), 0u);
  EXPECT_GT(us(request_stage::compile), 0u);
  // The stages on the request's path happen one after another within it.
  const double path =
      double(us(request_stage::prepare) + us(request_stage::library_lookup) +
             us(request_stage::resolve_images) + us(request_stage::prefill_queue) +
             us(request_stage::prefill_load_wait) + us(request_stage::prefill_compute));
  EXPECT_LE(path, wall_us);
  EXPECT_LE(us(request_stage::vision_encode), us(request_stage::resolve_images));
  EXPECT_FALSE(r.tokens.empty());
}

TEST_F(pipeline_test, an_uploaded_image_is_a_hit_by_bytes_and_by_key) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto png = random_png(rng_);
  auto up = cluster_->upload("alice", png);
  ASSERT_TRUE(up) << up.err().to_string();
  EXPECT_EQ(up->n_tokens, uint32_t(cluster_->context().engine->config().image_tokens()));
  EXPECT_EQ(cluster_->stats().stores, 1u);

  const auto by_bytes = run(greedy_request({png}, "mpic:4", 8));
  EXPECT_EQ(cluster_->stats().library_hits, 1u);
  EXPECT_EQ(cluster_->stats().library_misses, 0u);

  auto req = greedy_request({png}, "mpic:4", 8);
  req.segments[1] = wire::image_key_segment{up->image_key};
  const auto by_key = run(req);
  EXPECT_EQ(cluster_->stats().library_hits, 2u);
  EXPECT_EQ(by_key.tokens, by_bytes.tokens);

  // Another tenant cannot see alice's upload: a key it names is not found.
  req.tenant = "bob";
  auto other = cluster_->submit(req)->wait(30s);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.err().code, errc::not_found) << other.err().to_string();
}

TEST_F(pipeline_test, a_new_image_is_stored_after_use_and_hits_next_time) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto png = random_png(rng_);
  const auto first = run(greedy_request({png}, "mpic:4", 6));
  EXPECT_EQ(cluster_->stats().library_misses, 1u);
  ASSERT_TRUE(eventually([&] { return cluster_->stats().stores == 1; }))
      << "the image was not stored after use";
  const auto second = run(greedy_request({png}, "mpic:4", 6));
  EXPECT_EQ(cluster_->stats().library_hits, 1u);
  EXPECT_FALSE(second.tokens.empty());
}

TEST_F(pipeline_test, the_baselines_full_and_prefix_store_nothing_after_use) {
  // `full` and `prefix` never link library KV: as the systems they stand
  // for, they do no library work (no compile after use).
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (const char* policy : {"full", "prefix"}) {
    const auto png = random_png(rng_);
    const auto r = run(greedy_request({png}, policy, 4));
    EXPECT_FALSE(r.tokens.empty());
  }
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(cluster_->stats().library_misses, 2u);
  EXPECT_EQ(cluster_->stats().stores, 0u) << "a baseline request stored its image";
}

/// A PNG of the LLaVA-1.6 goldens (images of several sizes).
std::vector<uint8_t> next_png(const char* name) {
  const char* data = std::getenv("MOSAIC_TEST_DATA");
  std::ifstream in(std::filesystem::path(data != nullptr ? data : "tests/data") /
                       "hf_tiny_llava_next" / "goldens" / name,
                   std::ios::binary);
  return std::vector<uint8_t>{std::istreambuf_iterator<char>(in), {}};
}

TEST(pipeline_anyres, images_of_different_sizes_are_served_by_bytes_and_by_key) {
  // builtin:tiny-next (LLaVA-1.6: anyres, Mistral): each image's token
  // count follows from its size, and an image named by key takes its
  // library entry's count.
  temp_dir library{"mosaic_actors_lib"};
  auto o = tiny_options(library.path());
  o.model = "builtin:tiny-next";
  o.ram_budget_bytes = 0;
  auto c = local_cluster::start(o);
  ASSERT_TRUE(c) << c.err().to_string();
  auto& cluster = **c;
  const auto& cfg = cluster.context().engine->config();
  ASSERT_TRUE(cfg.anyres());
  const auto wide = next_png("image_2.png"); // 200 x 61
  const auto tall = next_png("image_1.png"); // 60 x 90
  ASSERT_FALSE(wide.empty());
  ASSERT_FALSE(tall.empty());
  auto up = cluster.upload("alice", wide);
  ASSERT_TRUE(up) << up.err().to_string();
  const auto wide_tokens = cfg.image_tokens_for(61, 200);
  const auto tall_tokens = cfg.image_tokens_for(90, 60);
  ASSERT_TRUE(wide_tokens && tall_tokens);
  EXPECT_EQ(up->n_tokens, uint32_t(*wide_tokens));
  EXPECT_NE(*wide_tokens, *tall_tokens);

  auto run = [&](const wire::generate_request& req) {
    auto done = cluster.submit(req)->wait(30s);
    EXPECT_TRUE(done) << done.err().to_string();
    return done ? *done : completion{};
  };
  const auto full = run(greedy_request({wide, tall}, "full", 8));
  ASSERT_FALSE(full.tokens.empty());
  // Every token recomputed from the linked entries: the same answer.
  const auto all =
      run(greedy_request({wide, tall}, "mpic:" + std::to_string(cfg.image_tokens()), 8));
  EXPECT_EQ(all.tokens, full.tokens);
  EXPECT_EQ(all.usage.prompt_tokens(), full.usage.prompt_tokens());
  EXPECT_EQ(full.image_tokens, uint32_t(*wide_tokens + *tall_tokens));
  // By key: the same prompt, the wide image's count from its entry.
  const auto by_bytes = run(greedy_request({wide, tall}, "mpic:4", 8));
  auto req = greedy_request({wide, tall}, "mpic:4", 8);
  req.segments[1] = wire::image_key_segment{up->image_key};
  const auto by_key = run(req);
  EXPECT_EQ(by_key.tokens, by_bytes.tokens);
  EXPECT_EQ(by_key.usage.prompt_tokens(), full.usage.prompt_tokens());
  EXPECT_GE(cluster.stats().library_hits, 3u);
  // A key that is not in the library: its count is unknown, the request
  // is refused as not found (nothing is prefilled).
  req.segments[1] = wire::image_key_segment{digest{}};
  auto missing = cluster.submit(req)->wait(30s);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.err().code, errc::not_found) << missing.err().to_string();
}

TEST(pipeline_qwen_vl, m_rope_answers_equal_the_engine_by_bytes_by_key_and_linked) {
  // builtin:tiny-qwen2vl and tiny-qwen25vl: dynamic resolution, M-RoPE.
  // The served answer (decode positions = index + rope delta) equals the
  // engine's own prefill and decode; an image linked from its library
  // entry (compiled alone from the M-RoPE origin, its grid stored with it)
  // with every token recomputed gives the same answer; by key = by bytes.
  const auto wide = next_png("image_2.png");   // 200 x 61: 14 tokens
  const auto square = next_png("image_0.png"); // 96 x 72: 9 tokens
  ASSERT_FALSE(wide.empty());
  ASSERT_FALSE(square.empty());
  for (const char* model : {"builtin:tiny-qwen2vl", "builtin:tiny-qwen25vl"}) {
    SCOPED_TRACE(model);
    temp_dir library{"mosaic_actors_lib"};
    auto o = tiny_options(library.path());
    o.model = model;
    o.ram_budget_bytes = 0;
    auto c = local_cluster::start(o);
    ASSERT_TRUE(c) << c.err().to_string();
    auto& cluster = **c;
    const auto& cfg = cluster.context().engine->config();
    ASSERT_TRUE(cfg.qwen_vl());
    auto up = cluster.upload("alice", wide);
    ASSERT_TRUE(up) << up.err().to_string();
    EXPECT_EQ(up->n_tokens, 14u);
    auto run = [&](const wire::generate_request& req) {
      auto done = cluster.submit(req)->wait(30s);
      EXPECT_TRUE(done) << done.err().to_string();
      return done ? *done : completion{};
    };
    const auto full = run(greedy_request({wide, square}, "full", 8));
    ASSERT_FALSE(full.tokens.empty());
    EXPECT_EQ(full.image_tokens, 14u + 9u);

    // The engine alone, on its own backend: the same prompt, greedy.
    auto be = make_backend("cpu", 1);
    ASSERT_TRUE(be) << be.err().to_string();
    auto eng = llava_engine::load(model, **be, {256, 16});
    ASSERT_TRUE(eng) << eng.err().to_string();
    auto enc = image_encoder::create(**be, (*eng)->config(), lookup_in((*eng)->weights()));
    ASSERT_TRUE(enc) << enc.err().to_string();
    std::vector<std::vector<float>> emb;
    std::vector<prompt_image> images;
    for (const auto* bytes : {&wide, &square}) {
      auto img = decode_image(*bytes, image_limits{});
      ASSERT_TRUE(img) << img.err().to_string();
      auto e = enc->encode(*img);
      ASSERT_TRUE(e) << e.err().to_string();
      emb.push_back(std::move(*e));
      auto grid = cfg.image_token_grid(img->height, img->width);
      ASSERT_TRUE(grid) << grid.err().to_string();
      prompt_image pi;
      pi.n_tokens = int(grid->count());
      pi.grid = *grid;
      images.push_back(pi);
    }
    for (size_t i = 0; i < images.size(); ++i)
      images[i].embeddings = emb[i].data();
    const auto& tok = (*eng)->tokenizer();
    auto text = chat_prompt(tok, "Look at these: <image> and <image> and what do you see?", 2);
    ASSERT_TRUE(text) << text.err().to_string();
    auto p = build_prompt(tok, *text, images);
    ASSERT_TRUE(p) << p.err().to_string();
    sampling_params greedy;
    greedy.eos_id = tok.eos_id();
    auto ref = generate(**eng, *p, *parse_policy("full"), greedy, 8);
    ASSERT_TRUE(ref) << ref.err().to_string();
    EXPECT_EQ(full.tokens, ref->tokens);

    const auto all =
        run(greedy_request({wide, square}, "mpic:" + std::to_string(cfg.image_tokens()), 8));
    EXPECT_EQ(all.tokens, full.tokens);
    const auto by_bytes = run(greedy_request({wide, square}, "mpic:2", 8));
    auto req = greedy_request({wide, square}, "mpic:2", 8);
    req.segments[1] = wire::image_key_segment{up->image_key};
    const auto by_key = run(req);
    EXPECT_EQ(by_key.tokens, by_bytes.tokens);
    EXPECT_EQ(by_key.usage.prompt_tokens(), full.usage.prompt_tokens());
    EXPECT_GE(cluster.stats().library_hits, 3u);
  }
}

TEST(pipeline_context, an_answer_ends_where_a_sliding_window_ends) {
  // Mosaic's attention has no window: a model with one is served up to
  // it, prompt and answer together (HF Mistral sees a key while
  // query - key < window).
  temp_dir dir{"mosaic_window_model"};
  ASSERT_TRUE(write_builtin_model(builtin_preset::tiny_next, dir.path()));
  std::ifstream in(dir.path() / "config.json");
  auto config = nlohmann::json::parse(in);
  in.close();
  constexpr int window = 120; // above the 88 tokens an image can take
  config["text_config"]["sliding_window"] = window;
  std::ofstream(dir.path() / "config.json") << config.dump(2);
  temp_dir library{"mosaic_actors_lib"};
  auto o = tiny_options(library.path());
  o.model = dir.path().string();
  auto c = local_cluster::start(o);
  ASSERT_TRUE(c) << c.err().to_string();
  ASSERT_EQ((*c)->context().engine->config().text.context_length(), window);
  auto req = greedy_request({}, "full", 500);
  req.sampling.ignore_eos = true;
  auto done = (*c)->submit(req)->wait(30s);
  ASSERT_TRUE(done) << done.err().to_string();
  EXPECT_EQ(done->finish, msg::FinishReason::length);
  // The last token is predicted at position window - 1.
  EXPECT_EQ(int(done->usage.prompt_tokens()) + int(done->tokens.size()), window + 1);
}

TEST(pipeline_store_after_use, repeat_stores_an_image_from_its_second_sighting_on) {
  temp_dir library{"mosaic_actors_lib"};
  auto o = tiny_options(library.path());
  o.store_after_use = "repeat";
  auto c = local_cluster::start(o);
  ASSERT_TRUE(c) << c.err().to_string();
  auto& cluster = **c;
  std::mt19937_64 rng{fresh_seed()};
  const auto png = random_png(rng);
  auto run = [&](const wire::generate_request& req) {
    auto done = cluster.submit(req)->wait(30s);
    EXPECT_TRUE(done) << done.err().to_string();
  };
  auto at = [&](const char* text) {
    auto req = greedy_request({png}, "mpic:4", 4);
    req.segments.insert(req.segments.begin(), wire::text_segment{text});
    return req;
  };
  run(at("first"));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(cluster.stats().stores, 0u) << "a first sighting was stored";
  run(at("second, elsewhere")); // the encoder saw it: stored now
  ASSERT_TRUE(eventually([&] { return cluster.stats().stores == 1; }));
  run(at("third, elsewhere again"));
  EXPECT_EQ(cluster.stats().library_hits, 1u);
}

TEST_F(pipeline_test, a_corrupt_library_entry_falls_back_to_the_full_answer) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto png = random_png(rng_);
  ASSERT_TRUE(cluster_->upload("alice", png));
  const auto full = run(greedy_request({png}, "full", 10));

  // Flip bytes inside layer 0's K section (header and embeddings stay good).
  int corrupted = 0;
  for (const auto& f : std::filesystem::directory_iterator(library_.path())) {
    if (f.path().extension() != ".mkv")
      continue;
    std::fstream io{f.path(), std::ios::in | std::ios::out | std::ios::binary};
    io.seekp(8192 + 64);
    const char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    io.write(junk, sizeof junk);
    ++corrupted;
  }
  ASSERT_EQ(corrupted, 1);

  const auto fell_back = run(greedy_request({png}, "mpic:2", 10));
  EXPECT_EQ(fell_back.tokens, full.tokens);
  EXPECT_EQ(cluster_->stats().load_fallbacks, 1u);
}

} // namespace
} // namespace mosaic::actors
