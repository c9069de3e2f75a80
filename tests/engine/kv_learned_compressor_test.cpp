#include "engine/kv_learned_compressor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "decoder_fixture.hpp"
#include "engine/decoder.hpp"
#include "engine/model/safetensors.hpp"
#include "engine/policies.hpp"
#include "engine/prefill.hpp"
#include "tests/support/temp_dir.hpp"

namespace mosaic {
namespace {

using mosaic::testing::temp_dir;

/// A random compressor file (weights small enough that gelu sees both signs).
struct weight_file {
  std::filesystem::path path;
  int hidden = 0, image_group = 1, text_group = 1;
  // [layer][part] -> w1, b1, w2, b2 (host copies, for the reference)
  std::vector<std::array<std::array<std::vector<float>, 4>, 4>> w;
};

weight_file write_compressor(const std::filesystem::path& path, int layers, int kv, int hidden,
                             int image_group, int text_group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.2f);
  weight_file f{path, hidden, image_group, text_group, {}};
  f.w.resize(size_t(layers));
  safetensors_writer out;
  const char* names[4] = {"image_k", "image_v", "text_k", "text_v"};
  for (int l = 0; l < layers; ++l)
    for (int p = 0; p < 4; ++p) {
      const int g = p < 2 ? image_group : text_group;
      if (g == 1)
        continue;
      const std::vector<std::vector<int64_t>> shapes = {
          {hidden, int64_t(g) * kv}, {hidden}, {kv, hidden}, {kv}};
      const char* suffix[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
      for (int t = 0; t < 4; ++t) {
        size_t n = 1;
        for (auto s : shapes[size_t(t)])
          n *= size_t(s);
        auto& v = f.w[size_t(l)][size_t(p)][size_t(t)];
        v.resize(n);
        for (auto& x : v)
          x = d(rng);
        EXPECT_TRUE(out.add("layers." + std::to_string(l) + "." + names[p] + "." + suffix[t],
                            shapes[size_t(t)], v));
      }
    }
  out.set_metadata("image_group", std::to_string(image_group));
  out.set_metadata("text_group", std::to_string(text_group));
  EXPECT_TRUE(out.write(path));
  return f;
}

/// The MLP on the host: fc2 · gelu(fc1 · x + b1) + b2.
std::vector<float> mlp_reference(const std::array<std::vector<float>, 4>& w,
                                 const std::vector<float>& x, int hidden, int kv) {
  const int in = static_cast<int>(x.size());
  std::vector<float> h(static_cast<size_t>(hidden)), y(static_cast<size_t>(kv));
  for (int i = 0; i < hidden; ++i) {
    double s = w[1][size_t(i)];
    for (int j = 0; j < in; ++j)
      s += double(w[0][size_t(i) * in + j]) * x[size_t(j)];
    h[size_t(i)] = float(0.5 * s * (1.0 + std::erf(s / std::sqrt(2.0))));
  }
  for (int i = 0; i < kv; ++i) {
    double s = w[3][size_t(i)];
    for (int j = 0; j < hidden; ++j)
      s += double(w[2][size_t(i) * hidden + j]) * h[size_t(j)];
    y[size_t(i)] = float(s);
  }
  return y;
}

class kv_learned_compressor_test : public testing::decoder_fixture {
protected:
  kv_learned_compressor_test() : decoder_fixture(2) {}

  void SetUp() override {
    decoder_fixture::SetUp();
    pool_ = make_pool(128, 4);
    ASSERT_NE(pool_, nullptr);
  }

  /// text(a) image(n_img) text(b), prefilled with the full policy.
  std::pair<link_plan, kv_sequence> prefill(int a, int n_img, int b) {
    ids_ = model_->random_ids(a + b);
    image_ = model_->random_embeddings(n_img);
    prompt p;
    p.images.push_back({"img", n_img, nullptr, image_.data()});
    p.parts.push_back({segment_kind::text, {ids_.begin(), ids_.begin() + a}, -1});
    p.parts.push_back({segment_kind::image, {}, 0});
    p.parts.push_back({segment_kind::text, {ids_.begin() + a, ids_.end()}, -1});
    auto plan = build_link_plan(p, *parse_policy("full"), cfg_);
    EXPECT_TRUE(plan) << plan.err().to_string();
    auto r = run_prefill(*be_, weights_, *pool_, *plan);
    EXPECT_TRUE(r) << r.err().to_string();
    return {std::move(*plan), std::move(r->sequence)};
  }

  std::vector<float> row(const kv_sequence& seq, int l, bool value, int token) {
    const int kv = cfg_.kv_dim();
    std::vector<float> out(static_cast<size_t>(kv));
    const float* layer = value ? pool_->v_layer(l) : pool_->k_layer(l);
    EXPECT_TRUE(be_->download(out.data(), layer + size_t(seq.slot(token)) * kv,
                              sizeof(float) * size_t(kv)));
    return out;
  }

  std::vector<int32_t> ids_;
  std::vector<float> image_;
  std::unique_ptr<kv_pool> pool_;
  temp_dir dir_{"mosaic_learned"};
};

TEST_F(kv_learned_compressor_test, merged_rows_are_the_mlp_of_their_group_and_decode) {
  SCOPED_TRACE(trace());
  const int kv = cfg_.kv_dim(), hidden = 24, a = 3, n_img = 10, b = 6; // image: 2 groups of 4 + 2
  const auto f =
      write_compressor(dir_.path() / "c.safetensors", cfg_.num_layers, kv, hidden, 4, 2, seed_);
  auto c = learned_compressor::load(*be_, f.path, cfg_.num_layers, kv);
  ASSERT_TRUE(c) << c.err().to_string();
  EXPECT_EQ(c->hidden(), hidden);
  EXPECT_EQ(c->image_group(), 4);
  EXPECT_EQ(c->text_group(), 2);

  auto [plan, seq] = prefill(a, n_img, b);
  const int n = a + n_img + b;
  // Expected layout: text [0,3): 1 pair + 1 as is; image [3,13): 2 groups
  // + 2 as is; text [13,19) minus the last token: [13,18) = 2 pairs + 1,
  // then the last token as is.
  const std::vector<std::pair<int, int>> rows = {{0, 2},  {2, 1},  {3, 4},  {7, 4},  {11, 1},
                                                 {12, 1}, {13, 2}, {15, 2}, {17, 1}, {18, 1}};
  std::vector<std::vector<std::vector<float>>> expect(size_t(cfg_.num_layers) * 2);
  for (int l = 0; l < cfg_.num_layers; ++l)
    for (int value = 0; value < 2; ++value) {
      auto& e = expect[size_t(l) * 2 + size_t(value)];
      for (auto [first, len] : rows) {
        std::vector<float> x;
        for (int t = first; t < first + len; ++t) {
          auto r = row(seq, l, value == 1, t);
          x.insert(x.end(), r.begin(), r.end());
        }
        if (len == 1) {
          e.push_back(x);
          continue;
        }
        const bool image = first >= a && first < a + n_img;
        const int part = (image ? 0 : 2) + value;
        e.push_back(mlp_reference(f.w[size_t(l)][size_t(part)], x, hidden, kv));
      }
    }
  const size_t used_before = pool_->stats().bytes_used;
  auto out = compress_kv_learned(*be_, *pool_, seq, plan, *c);
  ASSERT_TRUE(out) << out.err().to_string();
  EXPECT_FALSE(seq.valid()); // the uncompressed blocks went back to the pool
  EXPECT_LT(pool_->stats().bytes_used, used_before);
  ASSERT_EQ(out->stats.tokens_after, int(rows.size()));
  EXPECT_EQ(out->stats.image_after, 4);
  EXPECT_EQ(out->stats.text_after, 6);
  EXPECT_EQ(out->next_position, n);
  for (size_t r = 0; r < rows.size(); ++r)
    EXPECT_EQ(out->kept[0][r], rows[r].first);
  for (int l = 0; l < cfg_.num_layers; ++l)
    for (int value = 0; value < 2; ++value)
      for (size_t r = 0; r < rows.size(); ++r) {
        const auto got = row(out->sequence, l, value == 1, int(r));
        const auto& want = expect[size_t(l) * 2 + size_t(value)][r];
        for (int d = 0; d < kv; ++d)
          ASSERT_NEAR(got[size_t(d)], want[size_t(d)], 1e-4f * (1 + std::abs(want[size_t(d)])))
              << "layer " << l << (value ? " V" : " K") << " row " << r << " dim " << d;
      }
  // The compressed sequence decodes from the pool like any other.
  for (int step = 0; step < 3; ++step) {
    decode_input in{&out->sequence, model_->random_ids(1)[0], out->next_position + step};
    auto logits = decode_step(*be_, weights_, *pool_, {&in, 1});
    ASSERT_TRUE(logits) << logits.err().to_string();
    for (float v : *logits)
      ASSERT_TRUE(std::isfinite(v));
  }
  out->sequence.release();
  EXPECT_EQ(pool_->stats().blocks_used, 0);
}

TEST_F(kv_learned_compressor_test, bad_files_are_clear_errors) {
  const int kv = cfg_.kv_dim();
  // Trained for a wider model: fc1 has the wrong input width.
  write_compressor(dir_.path() / "wide.safetensors", cfg_.num_layers, kv + 2, 8, 2, 1, seed_);
  auto wide = learned_compressor::load(*be_, dir_.path() / "wide.safetensors", cfg_.num_layers, kv);
  ASSERT_FALSE(wide);
  EXPECT_NE(wide.err().message.find("layers.0.image_k.fc1.weight"), std::string::npos)
      << wide.err().message;
  // Fewer layers than the model.
  write_compressor(dir_.path() / "short.safetensors", 1, kv, 8, 2, 1, seed_);
  auto shorter =
      learned_compressor::load(*be_, dir_.path() / "short.safetensors", cfg_.num_layers, kv);
  ASSERT_FALSE(shorter);
  EXPECT_NE(shorter.err().message.find("missing tensor layers.1.image_k"), std::string::npos)
      << shorter.err().message;
  // Nothing to merge.
  safetensors_writer none;
  none.set_metadata("image_group", "1");
  ASSERT_TRUE(none.write(dir_.path() / "none.safetensors"));
  EXPECT_FALSE(learned_compressor::load(*be_, dir_.path() / "none.safetensors", 2, kv));
  EXPECT_FALSE(read_learned_groups(dir_.path() / "none.safetensors"));
  // A bad group size.
  safetensors_writer bad;
  bad.set_metadata("image_group", "zero");
  ASSERT_TRUE(bad.write(dir_.path() / "bad.safetensors"));
  auto g = learned_compressor::load(*be_, dir_.path() / "bad.safetensors", 2, kv);
  ASSERT_FALSE(g);
  EXPECT_NE(g.err().message.find("image_group"), std::string::npos);
  auto gg = read_learned_groups(dir_.path() / "bad.safetensors");
  ASSERT_FALSE(gg);
  EXPECT_NE(gg.err().message.find("image_group"), std::string::npos);
  // Read without the tensors: what a scheduler sizes requests with.
  auto groups = read_learned_groups(dir_.path() / "wide.safetensors");
  ASSERT_TRUE(groups) << groups.err().to_string();
  EXPECT_EQ(groups->image, 2);
  EXPECT_EQ(groups->text, 1);
  EXPECT_FALSE(read_learned_groups(dir_.path() / "missing.safetensors"));
  // The training-free entry point refuses "learned" with the way out.
  auto [plan, seq] = prefill(2, 4, 2);
  auto r = compress_kv(*be_, weights_, *pool_, seq, plan, *parse_compression("learned"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message.find("compress_kv_learned"), std::string::npos);
  EXPECT_TRUE(seq.valid());
}

} // namespace
} // namespace mosaic
