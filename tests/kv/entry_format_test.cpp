#include "kv/entry_format.hpp"

#include <gtest/gtest.h>
#include <random>

#include "kv/entry_file.hpp"
#include "kv/library_key.hpp"
#include "tests/kv/kv_test_util.hpp"

namespace mosaic::kv {
namespace {

using test::geometry;

entry_header header_for(const std::string& image, const std::string& model, storage_dtype dt) {
  entry_header h;
  h.image_key = test::key_of(image);
  h.model_fingerprint = test::key_of(model);
  h.owner_ns = "tenant:acme";
  h.key = library_key(h.image_key, h.model_fingerprint, h.owner_ns);
  h.dtype = dt;
  h.created_unix = 1000;
  return h;
}

struct round_trip_case {
  geometry g;
  storage_dtype dtype;
  float tolerance; // relative, half an ulp of the storage type
};

class entry_round_trip : public ::testing::TestWithParam<round_trip_case> {};

TEST_P(entry_round_trip, decodes_what_was_written_within_conversion_tolerance) {
  const auto& c = GetParam();
  test::scratch_dir dir;
  const auto img = test::random_image(c.g, std::random_device{}());
  auto h = write_entry(dir.path(), header_for("img", "model", c.dtype), img);
  ASSERT_TRUE(h) << h.err().to_string();
  const auto path = entry_path(dir.path(), h->key);
  EXPECT_EQ(std::filesystem::file_size(path), h->file_bytes());
  EXPECT_EQ(std::filesystem::file_size(path) % page_bytes, 0u);
  entry_header got;
  auto back = read_entry(path, &got, &h->key);
  ASSERT_TRUE(back) << back.err().to_string();
  EXPECT_EQ(back->n_tokens, c.g.tokens);
  EXPECT_EQ(back->n_layers, c.g.layers);
  EXPECT_EQ(back->hidden, c.g.hidden);
  EXPECT_EQ(back->kv_dim, c.g.kv_dim);
  EXPECT_LE(test::max_rel_diff(back->embeddings, img.embeddings), c.tolerance);
  EXPECT_LE(test::max_rel_diff(back->k, img.k), c.tolerance);
  EXPECT_LE(test::max_rel_diff(back->v, img.v), c.tolerance);
  EXPECT_EQ(got.dtype, c.dtype);
  EXPECT_TRUE(got.k_pre_rope);
  EXPECT_EQ(got.owner_ns, "tenant:acme");
  // Every section starts on a 4 KiB boundary; K_l and V_l are adjacent.
  for (int s = 0; s <= got.n_sections(); ++s)
    EXPECT_EQ(got.section_offset(s) % page_bytes, 0u);
  for (int l = 0; l < got.n_layers; ++l)
    EXPECT_EQ(got.section_offset(2 + 2 * l),
              got.section_offset(1 + 2 * l) + got.section_padded(1 + 2 * l));
}

INSTANTIATE_TEST_SUITE_P(
    geometries, entry_round_trip,
    ::testing::Values(round_trip_case{test::tiny_geometry, storage_dtype::f16, 0x1.0p-11f},
                      round_trip_case{test::tiny_geometry, storage_dtype::bf16, 0x1.0p-8f},
                      round_trip_case{test::small_geometry, storage_dtype::f16, 0x1.0p-11f},
                      round_trip_case{test::small_geometry, storage_dtype::bf16, 0x1.0p-8f},
                      round_trip_case{geometry{1, 1, 1, 1}, storage_dtype::f16, 0x1.0p-11f},
                      round_trip_case{geometry{33, 3, 100, 24}, storage_dtype::bf16, 0x1.0p-8f}));

TEST(entry_format, header_rejects_a_key_that_does_not_match_its_identity) {
  auto h = header_for("img", "model", storage_dtype::f16);
  h.n_tokens = h.n_layers = h.hidden = h.kv_dim = 4;
  EXPECT_TRUE(validate_header_fields(h));
  h.owner_ns = "tenant:other";
  EXPECT_FALSE(validate_header_fields(h));
}

TEST(entry_format, write_rejects_images_whose_arrays_disagree_with_geometry) {
  test::scratch_dir dir;
  auto img = test::random_image(test::tiny_geometry, 1);
  img.k.pop_back();
  auto h = write_entry(dir.path(), header_for("img", "model", storage_dtype::f16), img);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.err().code, errc::invalid_argument);
  // Nothing is left behind, not even a temp file.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(entry_format, an_m_rope_token_grid_is_stored_and_must_count_the_tokens) {
  // Qwen2-VL's entries keep the grid they were compiled with; an entry
  // without one (LLaVA, or written before) reads back all 0.
  test::scratch_dir dir;
  auto img = test::random_image(test::tiny_geometry, 3); // 16 tokens
  img.grid = {1, 2, 8};
  auto h = write_entry(dir.path(), header_for("grid", "model", storage_dtype::f16), img);
  ASSERT_TRUE(h) << h.err().to_string();
  entry_header back;
  auto read = read_entry(entry_path(dir.path(), h->key), &back);
  ASSERT_TRUE(read) << read.err().to_string();
  EXPECT_EQ(read->grid, (token_grid{1, 2, 8}));
  EXPECT_EQ(back.grid, (token_grid{1, 2, 8}));
  auto plain = write_entry(dir.path(), header_for("plain", "model", storage_dtype::f16),
                           test::random_image(test::tiny_geometry, 4));
  ASSERT_TRUE(plain) << plain.err().to_string();
  EXPECT_EQ(read_header(entry_path(dir.path(), plain->key))->grid, token_grid{});
  // A grid of another count is refused before anything is written.
  img.grid = {1, 3, 3};
  auto bad = header_for("bad", "model", storage_dtype::f16);
  EXPECT_FALSE(write_entry(dir.path(), bad, img));
  auto hdr = header_for("bad", "model", storage_dtype::f16);
  hdr.n_tokens = hdr.n_layers = hdr.hidden = hdr.kv_dim = 4;
  hdr.grid = {1, 2, 3};
  EXPECT_FALSE(validate_header_fields(hdr));
  hdr.grid = {1, 2, 2};
  EXPECT_TRUE(validate_header_fields(hdr));
  // Sides whose product overflows (fuzz_kv_entry found it): refused, no UB.
  hdr.grid = {1 << 30, 1 << 30, 1 << 30};
  EXPECT_FALSE(validate_header_fields(hdr));
  hdr.grid = {-1, -2, 2};
  EXPECT_FALSE(validate_header_fields(hdr));
}

TEST(entry_format, kv_dim_must_equal_heads_times_head_dim_when_given) {
  test::scratch_dir dir;
  auto h = header_for("img", "model", storage_dtype::f16);
  h.n_kv_heads = 3;
  h.head_dim = 16; // 48 != 32
  EXPECT_FALSE(write_entry(dir.path(), h, test::random_image(test::tiny_geometry, 2)));
  h.n_kv_heads = 2; // 32
  EXPECT_TRUE(write_entry(dir.path(), h, test::random_image(test::tiny_geometry, 2)));
}

TEST(library_key, depends_on_every_part) {
  const auto img = test::key_of("img");
  const auto model = test::key_of("model");
  const auto base = library_key(img, model, "tenant:a");
  EXPECT_NE(base, library_key(test::key_of("img2"), model, "tenant:a"));
  EXPECT_NE(base, library_key(img, test::key_of("model2"), "tenant:a"));
  EXPECT_NE(base, library_key(img, model, "tenant:b"));
  EXPECT_NE(base, library_key(img, model, "shared:a"));
  EXPECT_EQ(base, library_key(img, model, "tenant:a"));
}

TEST(library_key, owner_names_are_validated) {
  EXPECT_TRUE(validate_owner_name("acme-corp_1.eu@x", "tenant id"));
  EXPECT_FALSE(validate_owner_name("", "tenant id"));
  EXPECT_FALSE(validate_owner_name("a/b", "tenant id"));
  EXPECT_FALSE(validate_owner_name("a:b", "tenant id"));
  EXPECT_FALSE(parse_owner_ns("user:x"));
  EXPECT_EQ(parse_owner_ns("shared:rag")->type, owner::kind::shared);
}

} // namespace
} // namespace mosaic::kv
