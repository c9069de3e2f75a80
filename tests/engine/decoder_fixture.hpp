#pragma once

// The set-up shared by the decoder, prefill and KV-compression tests: a
// random `layers`-layer decoder drawn from a fresh seed (print `trace()`
// in failure messages to reproduce it), uploaded to a 2-thread CPU backend.

#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "engine/kv_pool.hpp"
#include "engine/prefill.hpp"
#include "forward_test_model.hpp"

namespace mosaic::testing {

class decoder_fixture : public ::testing::Test {
protected:
  explicit decoder_fixture(int layers) : cfg_(tiny_text_config(layers)) {}

  void SetUp() override {
    seed_ = std::random_device{}();
    model_ = std::make_unique<random_decoder>(cfg_, seed_);
    auto w = upload_decoder_weights(*be_, cfg_, model_->lookup());
    ASSERT_TRUE(w) << w.err().to_string();
    weights_ = std::move(*w);
  }

  /// A pool of `blocks` blocks of `block_size` tokens for this decoder;
  /// nullptr (and a test failure) when it cannot be made.
  std::unique_ptr<kv_pool> make_pool(int blocks, int block_size) {
    auto p = kv_pool::create(*be_, cfg_.num_layers, cfg_.kv_dim(), {blocks, block_size});
    if (!p) {
      ADD_FAILURE() << p.err().to_string();
      return nullptr;
    }
    return std::move(*p);
  }

  /// An image's standalone KV (as a library entry holds it) from its
  /// input embeddings [n, hidden], compiled with `pool`.
  compiled_image compile_in(kv_pool& pool, const std::vector<float>& emb) {
    const int n = int(emb.size()) / cfg_.hidden_size;
    auto c = compile_image(*be_, weights_, pool, emb.data(), n);
    EXPECT_TRUE(c) << c.err().to_string();
    return c ? std::move(*c) : compiled_image{};
  }

  std::string trace() const { return "seed " + std::to_string(seed_); }

  text_config cfg_;
  uint32_t seed_ = 0;
  std::unique_ptr<backend> be_ = make_cpu_backend(2);
  std::unique_ptr<random_decoder> model_;
  decoder_weights weights_;
};

} // namespace mosaic::testing
