// Library behaviour: tiers, counters, eviction, pins, leases, restart,
// tenant isolation and TTLs.

#include "kv/library.hpp"

#include <gtest/gtest.h>

#include "kv/entry_file.hpp"
#include "tests/kv/library_test_util.hpp"

namespace mosaic::kv {
namespace {

using test::key_of;
using test::library_fixture;
using test::random_image;
using test::tiny_geometry;

TEST(kv_library, upload_then_ask_hits_ram_then_disk_after_restart) {
  library_fixture f;
  const auto img = random_image(tiny_geometry, 7);
  {
    auto lib = f.open();
    ASSERT_TRUE(lib);
    ASSERT_TRUE(lib->put_static("acme", key_of("cat.png"), img));
    auto got = lib->get("acme", key_of("cat.png"));
    ASSERT_TRUE(got) << got.err().to_string();
    EXPECT_EQ(got->k, img.k); // RAM holds the exact f32 copy written
    EXPECT_EQ(lib->stats().ram.hits, 1u);
  }
  auto lib = f.open();
  ASSERT_TRUE(lib);
  EXPECT_EQ(lib->startup_report().indexed, 1u);
  auto got = lib->get("acme", key_of("cat.png"));
  ASSERT_TRUE(got) << got.err().to_string();
  EXPECT_LE(test::max_rel_diff(got->v, img.v), 0x1.0p-11f);
  auto s = lib->stats();
  EXPECT_EQ(s.disk.hits, 1u);
  EXPECT_EQ(s.ram.misses, 1u);
  ASSERT_TRUE(lib->get("acme", key_of("cat.png"))); // promoted
  EXPECT_EQ(lib->stats().ram.hits, 1u);
  EXPECT_FALSE(lib->get("acme", key_of("dog.png")));
  EXPECT_EQ(lib->stats().disk.misses, 1u);
}

TEST(kv_library, tenants_cannot_hit_list_stat_or_delete_each_others_entries) {
  library_fixture f;
  auto lib = f.open();
  ASSERT_TRUE(lib);
  const auto secret = key_of("secret.png");
  ASSERT_TRUE(lib->put_static("alice", secret, random_image(tiny_geometry, 1)));

  auto hit = lib->get("bob", secret);
  auto absent = lib->get("bob", key_of("never-stored.png"));
  ASSERT_FALSE(hit);
  ASSERT_FALSE(absent);
  EXPECT_EQ(hit.err().code, errc::not_found);
  // Indistinguishable from an absent image, apart from the key the caller gave.
  auto strip = [](std::string m, const digest& d) { return m.replace(m.find(to_hex(d)), 64, ""); };
  EXPECT_EQ(strip(hit.err().message, secret),
            strip(absent.err().message, key_of("never-stored.png")));
  EXPECT_FALSE(lib->lookup("bob", secret));
  EXPECT_EQ(lib->stat("bob", secret).err().code, errc::not_found);
  EXPECT_TRUE(lib->list("bob")->empty());
  EXPECT_EQ(lib->remove("bob", secret).err().code, errc::not_found);
  EXPECT_TRUE(lib->get("alice", secret)); // untouched
  EXPECT_EQ(lib->list("alice")->size(), 1u);
}

TEST(kv_library, shared_entries_are_readable_by_all_and_writable_only_by_admin) {
  library_fixture f;
  auto lib = f.open();
  ASSERT_TRUE(lib);
  const auto admin = admin_capability::grant("ops");
  const auto doc = key_of("manual-page-3.png");
  ASSERT_TRUE(lib->put_shared(admin, "rag", doc, random_image(tiny_geometry, 2)));
  for (const char* t : {"alice", "bob"}) {
    EXPECT_TRUE(lib->get(t, doc)) << t;
    EXPECT_EQ(lib->list(t)->size(), 1u);
  }
  // A tenant's remove only ever names its own namespace.
  EXPECT_EQ(lib->remove("alice", doc).err().code, errc::not_found);
  EXPECT_TRUE(lib->get("bob", doc));
  // Shared entries never expire.
  f.clock->fetch_add(100 * 24 * 3600);
  EXPECT_TRUE(lib->get("bob", doc));
  EXPECT_TRUE(lib->remove_shared(admin, "rag", doc));
  EXPECT_FALSE(lib->get("bob", doc));
}

TEST(kv_library, static_entries_expire_after_their_ttl) {
  library_fixture f;
  auto lib = f.open();
  ASSERT_TRUE(lib);
  ASSERT_TRUE(lib->put_static("acme", key_of("a"), random_image(tiny_geometry, 3),
                              std::chrono::seconds{60}));
  f.clock->fetch_add(59);
  EXPECT_TRUE(lib->get("acme", key_of("a")));
  f.clock->fetch_add(1);
  EXPECT_EQ(lib->get("acme", key_of("a")).err().code, errc::not_found);
  EXPECT_FALSE(std::filesystem::exists(
      entry_path(f.dir.path(), library_key(key_of("a"), f.model, "tenant:acme"))));
  EXPECT_FALSE(lib->put_static("acme", key_of("b"), random_image(tiny_geometry, 3),
                               std::chrono::seconds{0}));
}

TEST(kv_library, eviction_takes_expired_entries_first_then_least_recently_used) {
  library_fixture f;
  const uint64_t one = test::tiny_file_bytes();
  auto lib = f.open(3 * one, 0);
  ASSERT_TRUE(lib);
  const auto img = random_image(tiny_geometry, 4);
  ASSERT_TRUE(lib->put_static("t", key_of("old"), img, std::chrono::seconds{10}));
  ASSERT_TRUE(lib->put_static("t", key_of("b"), img));
  ASSERT_TRUE(lib->put_static("t", key_of("c"), img));
  f.clock->fetch_add(11);                               // "old" expires
  ASSERT_TRUE(lib->put_static("t", key_of("b2"), img)); // evicts "old" only
  EXPECT_TRUE(lib->stat("t", key_of("b")));
  EXPECT_TRUE(lib->stat("t", key_of("c")));
  ASSERT_TRUE(lib->get("t", key_of("b")));             // b is now more recent than c
  ASSERT_TRUE(lib->put_static("t", key_of("d"), img)); // evicts c (LRU)
  EXPECT_FALSE(lib->stat("t", key_of("c")));
  EXPECT_TRUE(lib->stat("t", key_of("b")));
  EXPECT_TRUE(lib->stat("t", key_of("b2")));
  EXPECT_LE(lib->stats().disk_bytes, 3 * one);
  EXPECT_EQ(lib->stats().evicted_lru, 1u);
  EXPECT_EQ(lib->stats().evicted_expired, 1u);
}

TEST(kv_library, expired_entries_go_before_any_unexpired_one) {
  library_fixture f;
  const uint64_t one = test::tiny_file_bytes();
  auto lib = f.open(3 * one, 0);
  ASSERT_TRUE(lib);
  const auto img = random_image(tiny_geometry, 5);
  ASSERT_TRUE(lib->put_static("t", key_of("lru"), img));
  ASSERT_TRUE(lib->put_static("t", key_of("short"), img, std::chrono::seconds{5}));
  ASSERT_TRUE(lib->put_static("t", key_of("mru"), img));
  f.clock->fetch_add(6);
  ASSERT_TRUE(lib->put_static("t", key_of("new"), img));
  EXPECT_TRUE(lib->stat("t", key_of("lru"))); // the LRU survives: the expired one went
  EXPECT_FALSE(lib->stat("t", key_of("short")));
}

TEST(kv_library, pinned_and_leased_entries_are_never_evicted) {
  library_fixture f;
  const uint64_t one = test::tiny_file_bytes();
  auto lib = f.open(2 * one, 0);
  ASSERT_TRUE(lib);
  const auto admin = admin_capability::grant("ops");
  const auto img = random_image(tiny_geometry, 6);
  auto pinned = lib->put_static("t", key_of("pinned"), img);
  ASSERT_TRUE(pinned);
  ASSERT_TRUE(lib->set_pinned(admin, pinned->key, true));
  ASSERT_TRUE(lib->put_static("t", key_of("loading"), img));
  auto lease = lib->lookup("t", key_of("loading")); // RAM budget 0: a disk lease
  ASSERT_TRUE(lease);
  ASSERT_FALSE(lease->in_ram());
  auto full = lib->put_static("t", key_of("third"), img);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.err().code, errc::out_of_memory);
  EXPECT_TRUE(lib->stat("t", key_of("pinned")));
  EXPECT_TRUE(lib->stat("t", key_of("loading")));
  lease->disk.release();
  ASSERT_TRUE(lib->put_static("t", key_of("third"), img));
  EXPECT_FALSE(lib->stat("t", key_of("loading")));
  EXPECT_TRUE(lib->stat("t", key_of("pinned")));
  // Pins persist across a restart.
  lib.reset();
  lib = f.open(2 * one, 0);
  ASSERT_TRUE(lib);
  EXPECT_TRUE(lib->stat("t", key_of("pinned"))->pinned);
  // Expired but pinned: kept on disk, never served.
  f.clock->fetch_add(7200);
  EXPECT_FALSE(lib->get("t", key_of("pinned")));
  EXPECT_EQ(lib->purge_expired(), 1u); // "third" goes, the pinned one stays
  EXPECT_EQ(lib->stats().disk_entries, 1u);
}

TEST(kv_library, ram_tier_respects_its_budget_in_lru_order) {
  library_fixture f;
  const auto img = random_image(tiny_geometry, 8);
  const uint64_t one = ram_bytes(img);
  auto lib = f.open(uint64_t(1) << 30, 2 * one);
  ASSERT_TRUE(lib);
  for (const char* name : {"a", "b", "c"})
    ASSERT_TRUE(lib->put_static("t", key_of(name), img));
  EXPECT_LE(lib->stats().ram_bytes, 2 * one);
  EXPECT_EQ(lib->stats().ram_entries, 2u);
  EXPECT_FALSE(lib->stat("t", key_of("a"))->in_ram);
  EXPECT_TRUE(lib->stat("t", key_of("c"))->in_ram);
  ASSERT_TRUE(lib->get("t", key_of("a"))); // disk hit, promoted, evicts b
  EXPECT_EQ(lib->stats().disk.hits, 1u);
  EXPECT_TRUE(lib->stat("t", key_of("a"))->in_ram);
  EXPECT_FALSE(lib->stat("t", key_of("b"))->in_ram);
}

TEST(kv_library, writes_and_lookups_need_a_model_fingerprint) {
  library_fixture f;
  auto o = f.options();
  o.model_fingerprint.reset();
  auto lib = kv_library::open(o);
  ASSERT_TRUE(lib);
  auto put = (*lib)->put_static("t", key_of("a"), random_image(tiny_geometry, 1));
  ASSERT_FALSE(put);
  EXPECT_NE(put.err().message.find("model fingerprint"), std::string::npos);
  EXPECT_FALSE((*lib)->put_static("bad/tenant", key_of("a"), random_image(tiny_geometry, 1)));
}

TEST(kv_library, entries_of_another_model_are_neither_served_nor_quarantined) {
  library_fixture f;
  {
    auto lib = f.open();
    ASSERT_TRUE(lib->put_static("t", key_of("a"), random_image(tiny_geometry, 1)));
  }
  f.model = key_of("model-b");
  auto lib = f.open();
  ASSERT_TRUE(lib);
  EXPECT_EQ(lib->startup_report().foreign, 1u);
  EXPECT_FALSE(lib->get("t", key_of("a")));
  EXPECT_EQ(test::quarantined_files(f.dir.path()), 0u);
}

} // namespace
} // namespace mosaic::kv
