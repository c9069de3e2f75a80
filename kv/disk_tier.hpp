#pragma once

// Local-disk tier of a KV library: the index of verified entry files in
// one directory, their byte budget and eviction (expired first, then least
// recently used; pinned entries and entries under a lease never). Not
// thread-safe on its own: kv_library serialises every call.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/error.hpp"
#include "kv/entry_format.hpp"
#include "kv/ram_tier.hpp"

namespace mosaic::kv {

/// One indexed entry file.
struct disk_entry {
  entry_header header;
  uint64_t last_use = 0; ///< LRU clock value of the last hit or write
  bool pinned = false;   ///< never evicted (a `<key>.mkv.pin` file persists it)
  int leases = 0;        ///< loads in progress; never evicted while > 0
};

/// What a start-up scan found.
struct scan_report {
  size_t indexed = 0;
  size_t foreign = 0;      ///< good entries of another model (left alone)
  size_t quarantined = 0;  ///< files that failed a check
  size_t temp_removed = 0; ///< leftovers of interrupted writes
  std::vector<std::string> problems;
};

class disk_tier {
public:
  disk_tier(std::filesystem::path dir, uint64_t budget_bytes)
    : dir_(std::move(dir)), budget_(budget_bytes) {}

  /// Rebuilds the index from the directory: verifies every header and file
  /// size, quarantines bad files, deletes stray temp files whose writer is
  /// gone. With `model`, entries of other models are not indexed.
  scan_report scan(const std::optional<digest>& model);

  disk_entry* find(const digest& key);
  /// Indexes a file just written (replacing an older version of the key).
  disk_entry& insert(const entry_header& h);
  /// Deletes the file (and pin file) and forgets the entry.
  status remove(const digest& key);
  /// Moves the file to quarantine/ and forgets the entry.
  result<std::filesystem::path> quarantine(const digest& key, const std::string& reason);
  /// Persists and applies a pin.
  status set_pinned(const digest& key, bool pinned);
  void touch(disk_entry& e) { e.last_use = ++clock_; }

  /// Evicts until `need` more bytes fit: every expired entry first, then
  /// the least recently used. Returns the evicted keys, or out_of_memory
  /// (evicting nothing beyond the expired entries) when pinned or leased
  /// entries leave too little room.
  result<std::vector<digest>> make_room(uint64_t need, int64_t now_unix);
  /// Deletes every expired entry that is not leased; returns their keys.
  std::vector<digest> purge_expired(int64_t now_unix);

  const std::unordered_map<digest, disk_entry, digest_hash>& entries() const { return entries_; }
  const std::filesystem::path& dir() const { return dir_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t budget() const { return budget_; }
  uint64_t evicted_expired() const { return evicted_expired_; }
  uint64_t evicted_lru() const { return evicted_lru_; }

private:
  const std::filesystem::path dir_;
  const uint64_t budget_;
  uint64_t bytes_ = 0;
  uint64_t clock_ = 0;
  uint64_t evicted_expired_ = 0;
  uint64_t evicted_lru_ = 0;
  std::unordered_map<digest, disk_entry, digest_hash> entries_;
};

} // namespace mosaic::kv
