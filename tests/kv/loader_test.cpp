#include "kv/loader.hpp"

#include <gtest/gtest.h>
#include <random>

#include "kv/entry_file.hpp"
#include "tests/kv/library_test_util.hpp"

namespace mosaic::kv {
namespace {

using test::key_of;
using test::library_fixture;
using test::random_image;

std::unique_ptr<kv_loader> make_loader(io_mode mode, loader_options o = {}) {
  o.mode = mode;
  auto l = kv_loader::create(o);
  return l ? std::move(*l) : nullptr;
}

/// Both paths, io_uring only where the kernel allows it (skipped otherwise).
std::vector<std::unique_ptr<kv_loader>> both_paths(loader_options o = {}) {
  std::vector<std::unique_ptr<kv_loader>> out;
  out.push_back(make_loader(io_mode::pread, o));
  if (auto u = make_loader(io_mode::io_uring, o))
    out.push_back(std::move(u));
  return out;
}

struct written {
  std::filesystem::path path;
  compiled_image expected; // what read_entry decodes
};

written write_file(const std::filesystem::path& dir, const std::string& image, test::geometry g,
                   storage_dtype dtype, uint64_t seed) {
  entry_header h;
  h.image_key = key_of(image);
  h.model_fingerprint = key_of("model");
  h.owner_ns = "shared:bench";
  h.key = library_key(h.image_key, h.model_fingerprint, h.owner_ns);
  h.dtype = dtype;
  auto w = write_entry(dir, h, random_image(g, seed));
  EXPECT_TRUE(w);
  written out{entry_path(dir, w->key), {}};
  auto back = read_entry(out.path, nullptr);
  EXPECT_TRUE(back);
  out.expected = std::move(*back);
  return out;
}

TEST(kv_loader, pread_and_io_uring_give_the_same_bits_as_a_synchronous_read) {
  test::scratch_dir dir;
  std::vector<written> files;
  files.push_back(write_file(dir.path(), "a", test::tiny_geometry, storage_dtype::f16, 1));
  files.push_back(write_file(dir.path(), "b", test::small_geometry, storage_dtype::bf16, 2));
  files.push_back(write_file(dir.path(), "c", test::small_geometry, storage_dtype::f16, 3));
  auto loaders = both_paths();
  if (loaders.size() < 2)
    std::cout << "io_uring refused by this kernel; testing pread only\n";
  for (auto& loader : loaders) {
    ASSERT_TRUE(loader);
    std::vector<compiled_image> dst(files.size());
    std::vector<load_handle> handles;
    for (size_t i = 0; i < files.size(); ++i)
      handles.push_back(loader->load(load_source{files[i].path, {}, {}, {}}, &dst[i]));
    for (size_t i = 0; i < files.size(); ++i) {
      ASSERT_TRUE(handles[i].wait_all()) << loader->io_name();
      EXPECT_EQ(dst[i].embeddings, files[i].expected.embeddings) << loader->io_name();
      EXPECT_EQ(dst[i].k, files[i].expected.k) << loader->io_name();
      EXPECT_EQ(dst[i].v, files[i].expected.v) << loader->io_name();
    }
    EXPECT_EQ(loader->stats().entries_ok, files.size());
  }
}

TEST(kv_loader, each_layer_is_complete_when_its_wait_returns) {
  test::scratch_dir dir;
  const auto f = write_file(dir.path(), "a", test::small_geometry, storage_dtype::f16, 4);
  loader_options o;
  o.queue_depth = 1; // one read at a time: layers really arrive one by one
  for (auto& loader : both_paths(o)) {
    compiled_image dst;
    auto h = loader->load(load_source{f.path, {}, {}, {}}, &dst);
    ASSERT_TRUE(h.wait_embeddings());
    EXPECT_EQ(dst.embeddings, f.expected.embeddings);
    for (int l = 0; l < f.expected.n_layers; ++l) {
      ASSERT_TRUE(h.wait_layer(l));
      const size_t n = f.expected.layer_elems();
      EXPECT_TRUE(std::equal(dst.k_layer(l), dst.k_layer(l) + n, f.expected.k_layer(l)));
      EXPECT_TRUE(std::equal(dst.v_layer(l), dst.v_layer(l) + n, f.expected.v_layer(l)));
    }
    EXPECT_EQ(h.wait_layer(f.expected.n_layers).err().code, errc::invalid_argument);
    EXPECT_TRUE(h.wait_all());
  }
}

TEST(kv_loader, many_entries_in_flight_through_a_small_buffer_pool) {
  test::scratch_dir dir;
  std::vector<written> files;
  for (int i = 0; i < 12; ++i)
    files.push_back(write_file(dir.path(), "img" + std::to_string(i), test::tiny_geometry,
                               i % 2 ? storage_dtype::bf16 : storage_dtype::f16, 10 + i));
  loader_options o;
  o.buffer_pool_bytes = 3 * page_bytes; // one layer read at a time
  o.queue_depth = 8;
  for (auto& loader : both_paths(o)) {
    std::vector<compiled_image> dst(files.size());
    std::vector<load_handle> handles;
    for (size_t i = 0; i < files.size(); ++i)
      handles.push_back(loader->load(load_source{files[i].path, {}, {}, {}}, &dst[i]));
    for (size_t i = 0; i < files.size(); ++i) {
      ASSERT_TRUE(handles[i].wait_all()) << loader->io_name();
      EXPECT_EQ(dst[i].k, files[i].expected.k);
    }
  }
  // A pool smaller than one read fails the entry with the fix, not a hang.
  o.buffer_pool_bytes = page_bytes;
  auto loader = make_loader(io_mode::automatic, o);
  compiled_image dst;
  auto h = loader->load(load_source{files[0].path, {}, {}, {}}, &dst);
  auto st = h.wait_all();
  ASSERT_FALSE(st);
  EXPECT_NE(st.err().message.find("buffer_pool_bytes"), std::string::npos);
}

TEST(kv_loader, a_corrupt_entry_fails_only_itself_and_is_quarantined) {
  for (io_mode mode : {io_mode::pread, io_mode::io_uring}) {
    auto loader = make_loader(mode);
    if (!loader)
      continue; // io_uring refused here
    library_fixture f;
    auto lib = f.open(uint64_t(1) << 30, 0); // RAM tier off: hits are disk leases
    ASSERT_TRUE(lib);
    std::vector<compiled_image> src;
    for (int i = 0; i < 4; ++i) {
      src.push_back(random_image(test::tiny_geometry, 30 + i));
      ASSERT_TRUE(lib->put_static("t", key_of("img" + std::to_string(i)), src.back()));
    }
    // Flip one bit in layer 1's V of entry 2; delete entry 3's file.
    auto info2 = lib->stat("t", key_of("img2"));
    auto p2 = entry_path(f.dir.path(), info2->key);
    auto bytes = test::read_bytes(p2);
    entry_header h;
    set_geometry(h, src[2]);
    bytes[h.section_offset(4) + 17] ^= 0x04;
    test::write_bytes(p2, bytes);
    std::vector<compiled_image> dst(4);
    std::vector<load_handle> handles;
    for (int i = 0; i < 4; ++i) {
      auto hit = lib->lookup("t", key_of("img" + std::to_string(i)));
      ASSERT_TRUE(hit);
      ASSERT_FALSE(hit->in_ram());
      if (i == 3)
        std::filesystem::remove(hit->disk.path());
      handles.push_back(loader->load(std::move(hit->disk), &dst[size_t(i)]));
    }
    for (int i : {0, 1}) {
      ASSERT_TRUE(handles[size_t(i)].wait_all());
      EXPECT_LE(test::max_rel_diff(dst[size_t(i)].v, src[size_t(i)].v), 0x1.0p-11f);
    }
    // Once an entry fails, every wait on it reports the failure (the caller
    // recomputes the whole image).
    auto bad = handles[2].wait_layer(1);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.err().code, errc::corrupt_data);
    EXPECT_NE(bad.err().message.find("V of layer 1"), std::string::npos) << bad.err().message;
    EXPECT_FALSE(handles[2].wait_all());
    EXPECT_FALSE(std::filesystem::exists(p2));
    EXPECT_EQ(test::quarantined_files(f.dir.path()), 1u);
    EXPECT_EQ(lib->stats().quarantined, 1u);
    EXPECT_EQ(handles[3].wait_all().err().code, errc::not_found);
    // Good loads were promoted to RAM... unless the RAM budget is 0, as here.
    EXPECT_EQ(loader->stats().entries_ok, 2u);
    EXPECT_EQ(loader->stats().entries_failed, 2u);
  }
}

TEST(kv_loader, a_loaded_entry_is_promoted_to_ram_and_its_lease_released) {
  library_fixture f;
  auto lib = f.open(test::tiny_file_bytes(), uint64_t(1) << 30);
  ASSERT_TRUE(lib);
  ASSERT_TRUE(lib->put_static("t", key_of("a"), random_image(test::tiny_geometry, 40)));
  lib.reset();
  lib = f.open(test::tiny_file_bytes(), uint64_t(1) << 30); // cold RAM
  auto loader = make_loader(io_mode::automatic);
  auto hit = lib->lookup("t", key_of("a"));
  ASSERT_TRUE(hit && !hit->in_ram());
  compiled_image dst;
  {
    auto h = loader->load(std::move(hit->disk), &dst);
    ASSERT_TRUE(h.wait_all());
  }
  EXPECT_TRUE(lib->lookup("t", key_of("a"))->in_ram());
  // The lease is gone: a new write may evict the entry.
  EXPECT_TRUE(lib->put_static("t", key_of("b"), random_image(test::tiny_geometry, 41)));
}

TEST(kv_loader, a_file_that_is_not_an_entry_fails_cleanly) {
  test::scratch_dir dir;
  const auto p = dir.path() / "junk.mkv";
  test::write_bytes(p, std::vector<uint8_t>(3 * page_bytes + 5, 0x42));
  for (auto& loader : both_paths()) {
    compiled_image dst;
    auto h = loader->load(load_source{p, {}, {}, {}}, &dst);
    auto st = h.wait_all();
    ASSERT_FALSE(st);
    EXPECT_EQ(st.err().code, errc::corrupt_data);
    EXPECT_NE(st.err().message.find("magic"), std::string::npos);
  }
  EXPECT_FALSE(kv_loader::create(loader_options{io_mode::pread, true, 0, 1 << 20, 1}));
}

} // namespace
} // namespace mosaic::kv
