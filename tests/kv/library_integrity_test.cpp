// Nothing stored is lost or served corrupt: bit flips, truncation, forged
// identity, unknown versions, crashes mid-write, concurrent writers.

#include <cstring>
#include <gtest/gtest.h>
#include <random>
#include <sys/mount.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "kv/entry_file.hpp"
#include "kv/library.hpp"
#include "tests/kv/library_test_util.hpp"

namespace mosaic::kv {
namespace {

using test::key_of;
using test::library_fixture;
using test::random_image;
using test::tiny_geometry;

struct stored_entry {
  std::filesystem::path path;
  std::vector<uint8_t> bytes;
};

stored_entry store_one(library_fixture& f, kv_library& lib, const std::string& image) {
  auto info = lib.put_static("acme", key_of(image), random_image(tiny_geometry, 11));
  EXPECT_TRUE(info);
  const auto path = entry_path(f.dir.path(), info->key);
  return {path, test::read_bytes(path)};
}

/// Rewrites the header page after editing it, so that only the edit (not
/// the header checksum) can catch the forgery.
void reseal_header(std::vector<uint8_t>& bytes) {
  const uint64_t sum = checksum(std::span<const uint8_t>{bytes.data(), page_bytes - 8});
  std::memcpy(bytes.data() + page_bytes - 8, &sum, 8);
}

/// `get` must fail, the file must leave the library for quarantine/, and
/// the quarantine counter must count it.
void expect_rejected_and_quarantined(kv_library& lib, const stored_entry& e,
                                     const std::string& image, const std::string& what) {
  const auto before = lib.stats().quarantined;
  auto got = lib.get("acme", key_of(image));
  ASSERT_FALSE(got) << what << " was served";
  EXPECT_TRUE(got.err().code == errc::corrupt_data || got.err().code == errc::not_found)
      << got.err().to_string();
  EXPECT_FALSE(std::filesystem::exists(e.path)) << what;
  EXPECT_EQ(lib.stats().quarantined, before + 1) << what;
}

TEST(kv_integrity, any_single_bit_flip_is_detected_and_quarantined) {
  library_fixture f;
  auto lib = f.open(uint64_t(1) << 30, 0); // no RAM tier: every get reads the file
  ASSERT_TRUE(lib);
  const auto good = store_one(f, *lib, "img");
  std::mt19937_64 rng{std::random_device{}()};
  for (int trial = 0; trial < 100; ++trial) {
    auto bytes = good.bytes;
    const size_t pos = rng() % bytes.size();
    const int bit = int(rng() % 8);
    bytes[pos] ^= uint8_t(1u << bit);
    test::write_bytes(good.path, bytes);
    expect_rejected_and_quarantined(*lib, good, "img",
                                    "flip of bit " + std::to_string(bit) + " at byte " +
                                        std::to_string(pos));
  }
  EXPECT_EQ(test::quarantined_files(f.dir.path()), 100u);
  // The good file is served again once restored.
  test::write_bytes(good.path, good.bytes);
  EXPECT_TRUE(lib->get("acme", key_of("img")));
}

TEST(kv_integrity, truncated_files_are_detected_at_read_and_at_startup) {
  library_fixture f;
  auto lib = f.open(uint64_t(1) << 30, 0);
  ASSERT_TRUE(lib);
  const auto good = store_one(f, *lib, "img");
  std::mt19937_64 rng{std::random_device{}()};
  for (int trial = 0; trial < 20; ++trial) {
    auto bytes = good.bytes;
    bytes.resize(rng() % bytes.size());
    test::write_bytes(good.path, bytes);
    expect_rejected_and_quarantined(*lib, good, "img", "truncation");
  }
  auto bytes = good.bytes;
  bytes.resize(bytes.size() - page_bytes);
  test::write_bytes(good.path, bytes);
  lib.reset();
  lib = f.open();
  ASSERT_TRUE(lib);
  EXPECT_EQ(lib->startup_report().quarantined, 1u);
  EXPECT_EQ(lib->stats().disk_entries, 0u);
  EXPECT_FALSE(std::filesystem::exists(good.path));
}

TEST(kv_integrity, forged_model_fingerprint_and_unknown_version_are_quarantined) {
  library_fixture f;
  auto lib = f.open(uint64_t(1) << 30, 0);
  ASSERT_TRUE(lib);
  const auto good = store_one(f, *lib, "img");
  // Another model's fingerprint, header checksum recomputed: the key no
  // longer derives from the identity fields.
  auto forged = good.bytes;
  forged[80] ^= 0x01;
  reseal_header(forged);
  test::write_bytes(good.path, forged);
  expect_rejected_and_quarantined(*lib, good, "img", "wrong model fingerprint");
  // A future format version.
  auto future = good.bytes;
  future[8] = 2;
  reseal_header(future);
  test::write_bytes(good.path, future);
  expect_rejected_and_quarantined(*lib, good, "img", "format version 2");
  // The reason is kept next to the quarantined file.
  bool found_reason = false;
  for (const auto& de : std::filesystem::directory_iterator{f.dir.path() / "quarantine"}) {
    const auto note = test::read_bytes(de.path());
    if (de.path().extension() == ".reason" &&
        std::string{note.begin(), note.end()}.find("format version 2") != std::string::npos)
      found_reason = true;
  }
  EXPECT_TRUE(found_reason);
}

TEST(kv_integrity, a_crash_before_rename_leaves_nothing_served_and_is_cleaned_at_restart) {
  library_fixture f;
  const auto key = library_key(key_of("img"), f.model, "tenant:acme");
  auto img = random_image(tiny_geometry, 12);
  // A writer process that dies after writing half its temp file.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const auto tmp =
        f.dir.path() / (".tmp." + to_hex(key) + "." + std::to_string(::getpid()) + ".0.0");
    std::vector<uint8_t> half(3 * page_bytes, 0x5a);
    test::write_bytes(tmp, half);
    ::_exit(0); // crash: no rename
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  // And a partial file under the final name (a copy interrupted by hand).
  const auto other = library_key(key_of("other"), f.model, "tenant:acme");
  test::write_bytes(entry_path(f.dir.path(), other), std::vector<uint8_t>(page_bytes / 2, 1));

  auto lib = f.open();
  ASSERT_TRUE(lib);
  EXPECT_EQ(lib->startup_report().temp_removed, 1u);
  EXPECT_EQ(lib->startup_report().quarantined, 1u);
  EXPECT_FALSE(lib->get("acme", key_of("img")));
  EXPECT_FALSE(lib->get("acme", key_of("other")));
  size_t left = 0;
  for (const auto& de : std::filesystem::directory_iterator{f.dir.path()})
    left += de.is_regular_file() ? 1 : 0;
  EXPECT_EQ(left, 0u);
  // A temp file of a live writer is left alone.
  const auto live =
      f.dir.path() / (".tmp." + to_hex(key) + "." + std::to_string(::getpid()) + ".1.1");
  test::write_bytes(live, std::vector<uint8_t>(100, 0));
  lib.reset();
  lib = f.open();
  EXPECT_EQ(lib->startup_report().temp_removed, 0u);
  EXPECT_TRUE(std::filesystem::exists(live));
}

TEST(kv_integrity, a_full_disk_fails_the_write_with_no_space_and_keeps_what_was_stored) {
  // A 64 KiB tmpfs as the library's disk (needs CAP_SYS_ADMIN: root in CI).
  library_fixture f;
  const auto mnt = f.dir.path() / "small";
  std::filesystem::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k") != 0)
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << std::strerror(errno)
                 << "); the status mapping is tested in server_openai_response_test";
  struct unmount {
    std::filesystem::path p;
    ~unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } guard{mnt};
  auto o = f.options();
  o.dir = mnt;
  auto lib = kv_library::open(o);
  ASSERT_TRUE(lib) << lib.err().to_string();
  std::vector<std::string> stored;
  error full;
  for (int i = 0; i < 64 && full.code == errc::none; ++i) {
    const std::string name = "img" + std::to_string(i);
    auto info = (*lib)->put_static("acme", key_of(name), random_image(tiny_geometry, 40 + i));
    if (info)
      stored.push_back(name);
    else
      full = info.err();
  }
  ASSERT_EQ(full.code, errc::no_space) << full.to_string();
  ASSERT_FALSE(stored.empty());
  // Nothing half-written is left, and what was stored before still reads.
  for (const auto& de : std::filesystem::directory_iterator{mnt})
    EXPECT_FALSE(is_temp_name(de.path().filename().string())) << de.path();
  for (const auto& name : stored)
    EXPECT_TRUE((*lib)->get("acme", key_of(name))) << name;
}

/// After racing writers: exactly one entry file, no temp files, and it
/// verifies and decodes to one of the written images.
void expect_one_good_file(library_fixture& f, const std::vector<compiled_image>& candidates) {
  size_t entries = 0;
  size_t temps = 0;
  for (const auto& de : std::filesystem::directory_iterator{f.dir.path()}) {
    const auto name = de.path().filename().string();
    entries += name.ends_with(".mkv") ? 1 : 0;
    temps += is_temp_name(name) ? 1 : 0;
  }
  EXPECT_EQ(entries, 1u);
  EXPECT_EQ(temps, 0u);
  auto lib = f.open();
  ASSERT_TRUE(lib);
  auto got = lib->get("acme", key_of("img"));
  ASSERT_TRUE(got) << got.err().to_string();
  bool matches = false;
  for (const auto& c : candidates)
    matches = matches || test::max_rel_diff(got->k, c.k) <= 0x1.0p-11f;
  EXPECT_TRUE(matches);
}

TEST(kv_integrity, concurrent_writer_threads_of_one_key_leave_one_good_file) {
  library_fixture f;
  std::vector<compiled_image> images;
  for (int i = 0; i < 6; ++i)
    images.push_back(random_image(tiny_geometry, 100 + i));
  {
    auto lib = f.open();
    ASSERT_TRUE(lib);
    std::vector<std::thread> writers;
    for (const auto& img : images)
      writers.emplace_back([&] { EXPECT_TRUE(lib->put_static("acme", key_of("img"), img)); });
    for (auto& t : writers)
      t.join();
    EXPECT_EQ(lib->stats().disk_entries, 1u);
    EXPECT_EQ(lib->stats().disk_bytes, test::tiny_file_bytes());
  }
  expect_one_good_file(f, images);
}

TEST(kv_integrity, concurrent_writer_processes_of_one_key_leave_one_good_file) {
  library_fixture f;
  std::vector<compiled_image> images;
  for (int i = 0; i < 4; ++i)
    images.push_back(random_image(tiny_geometry, 200 + i));
  std::vector<pid_t> children;
  for (const auto& img : images) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto lib = f.open();
      const bool ok = lib && lib->put_static("acme", key_of("img"), img);
      ::_exit(ok ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  expect_one_good_file(f, images);
}

TEST(kv_integrity, verify_all_quarantines_bad_files_and_reports_them) {
  library_fixture f;
  auto lib = f.open();
  ASSERT_TRUE(lib);
  const auto good = store_one(f, *lib, "img");
  store_one(f, *lib, "img2");
  auto bytes = good.bytes;
  bytes[bytes.size() / 2] ^= 0x80;
  test::write_bytes(good.path, bytes);
  const auto admin = admin_capability::grant("ops");
  const auto problems = lib->verify_all(admin);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("checksum mismatch"), std::string::npos) << problems[0];
  EXPECT_EQ(lib->list_all(admin).size(), 1u);
  EXPECT_TRUE(lib->verify_all(admin).empty());
}

} // namespace
} // namespace mosaic::kv
