#include "engine/decoder.hpp"

#include <gtest/gtest.h>

#include <random>

#include "decoder_fixture.hpp"
#include "engine/prefill.hpp"
#include "forward_test_model.hpp"

namespace mosaic {
namespace {

using testing::max_rel_error;

class decoder_test : public testing::decoder_fixture {
protected:
  decoder_test() : decoder_fixture(2) {}

  kv_sequence prefill(kv_pool& pool, const std::vector<int32_t>& ids) {
    auto plan = plain_text_plan(cfg_, ids);
    auto r = run_prefill(*be_, weights_, pool, plan);
    EXPECT_TRUE(r) << r.err().to_string();
    return std::move(r->sequence);
  }

  std::vector<float> row(const std::vector<float>& logits, size_t s) const {
    const auto v = static_cast<size_t>(cfg_.vocab_size);
    return {logits.begin() + static_cast<ptrdiff_t>(s * v),
            logits.begin() + static_cast<ptrdiff_t>((s + 1) * v)};
  }
};

TEST_F(decoder_test, decode_after_prefill_equals_prefill_of_the_longer_sequence) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto pool = make_pool(32, 4);
  auto ids = model_->random_ids(6);
  auto seq = prefill(*pool, ids);
  for (int step = 0; step < 4; ++step) {
    const int32_t tok = model_->random_ids(1)[0];
    decode_input in{&seq, tok, seq.length()};
    auto logits = decode_step(*be_, weights_, *pool, {&in, 1});
    ASSERT_TRUE(logits) << logits.err().to_string();
    ids.push_back(tok);
    EXPECT_EQ(seq.length(), static_cast<int>(ids.size()));
    EXPECT_LE(max_rel_error(*logits, model_->reference_logits(model_->embed(ids))), 1e-4)
        << "step " << step;
  }
}

TEST_F(decoder_test, paged_batch_equals_contiguous_decode_as_sequences_join_and_leave) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  // Block size 3 divides none of the lengths; the contiguous pool holds
  // every sequence in one block.
  auto paged = make_pool(40, 3);
  auto contiguous = make_pool(3, 64);
  std::vector<std::vector<int32_t>> ids = {model_->random_ids(5), model_->random_ids(8),
                                           model_->random_ids(11)};
  std::vector<kv_sequence> ps, cs;
  for (int s = 0; s < 2; ++s) {
    ps.push_back(prefill(*paged, ids[size_t(s)]));
    cs.push_back(prefill(*contiguous, ids[size_t(s)]));
  }
  for (int step = 0; step < 5; ++step) {
    if (step == 2) { // a third sequence joins
      ps.push_back(prefill(*paged, ids[2]));
      cs.push_back(prefill(*contiguous, ids[2]));
    }
    std::vector<decode_input> batch;
    std::vector<size_t> which;
    for (size_t s = 0; s < ps.size(); ++s) {
      if (step >= 4 && s == 0)
        continue; // the first sequence has left
      const int32_t tok = model_->random_ids(1)[0];
      batch.push_back({&ps[s], tok, ps[s].length()});
      which.push_back(s);
    }
    auto got = decode_step(*be_, weights_, *paged, batch);
    ASSERT_TRUE(got) << got.err().to_string();
    for (size_t b = 0; b < batch.size(); ++b) {
      const size_t s = which[b];
      decode_input one{&cs[s], batch[b].token, cs[s].length()};
      auto want = decode_step(*be_, weights_, *contiguous, {&one, 1});
      ASSERT_TRUE(want);
      EXPECT_LE(max_rel_error(row(*got, b), *want), 1e-5) << "step " << step << " seq " << s;
      ids[s].push_back(batch[b].token);
      EXPECT_LE(max_rel_error(row(*got, b), model_->reference_logits(model_->embed(ids[s]))), 1e-4);
    }
    if (step == 3)
      ps[0].release();
  }
  ps.clear();
  EXPECT_EQ(paged->stats().blocks_used, 0);
}

TEST_F(decoder_test, exhausted_pool_is_an_error_and_lengths_do_not_move) {
  auto pool = make_pool(3, 2);
  auto a = prefill(*pool, model_->random_ids(4)); // 2 blocks, full
  auto b = prefill(*pool, model_->random_ids(2)); // 1 block, full
  std::vector<decode_input> batch = {{&a, 1, 4}, {&b, 2, 2}};
  auto r = decode_step(*be_, weights_, *pool, batch);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code, errc::out_of_memory);
  EXPECT_EQ(a.length(), 4);
  EXPECT_EQ(b.length(), 2);
}

TEST_F(decoder_test, rejects_bad_inputs) {
  auto pool = make_pool(8, 4);
  auto a = prefill(*pool, model_->random_ids(3));
  decode_input bad_token{&a, cfg_.vocab_size, 3};
  EXPECT_EQ(decode_step(*be_, weights_, *pool, {&bad_token, 1}).err().code, errc::invalid_argument);
  std::vector<decode_input> twice = {{&a, 1, 3}, {&a, 2, 4}};
  EXPECT_EQ(decode_step(*be_, weights_, *pool, twice).err().code, errc::invalid_argument);
  EXPECT_EQ(a.length(), 3);
}

} // namespace
} // namespace mosaic
