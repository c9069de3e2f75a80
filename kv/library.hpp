#pragma once

// A KV library: image KV entries of one directory, behind a host-RAM tier
// (LRU, byte budget) above the local-disk tier (byte budget).
//
// - Static library (per tenant): written on upload, private to the tenant,
//   expires after a TTL.
// - Dynamic library ("shared:<name>"): operator-curated, readable by every
//   tenant, written only through calls that take an `admin_capability`.
//
// Isolation is by construction: the owner namespace is part of the entry
// key, so a tenant's call can only ever compute keys in its own namespace
// (or a shared one, read-only); listings filter by namespace, and a call
// about another tenant's entry fails exactly like one about an absent
// entry (not_found, same message).
//
// Thread-safe. The library must outlive every `entry_lease` it hands out.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/compiled_image.hpp"
#include "engine/error.hpp"
#include "kv/disk_tier.hpp"
#include "kv/library_key.hpp"
#include "kv/ram_tier.hpp"

namespace mosaic::kv {

class kv_library;

/// Proof that the caller may write or administer dynamic libraries. Only
/// the server's auth layer (admin API keys) and operator tools (the CLI)
/// mint one; tenant-facing code paths never do.
class admin_capability {
public:
  /// `operator_id` is recorded for audit messages.
  static admin_capability grant(std::string operator_id) {
    return admin_capability{std::move(operator_id)};
  }
  const std::string& operator_id() const { return operator_id_; }

private:
  explicit admin_capability(std::string id) : operator_id_(std::move(id)) {}
  std::string operator_id_;
};

/// Options of `kv_library::open`.
struct library_options {
  std::filesystem::path dir;
  /// The model whose entries this library serves; required for writes and
  /// lookups, optional for inspection (CLI ls/verify/stats/rm).
  std::optional<digest> model_fingerprint;
  storage_dtype dtype = storage_dtype::f16;
  /// Attention geometry recorded in headers (0 = unknown); kv_dim must be
  /// n_kv_heads * head_dim when given.
  int n_kv_heads = 0;
  int head_dim = 0;
  uint64_t ram_budget_bytes = uint64_t(1) << 30;
  uint64_t disk_budget_bytes = uint64_t(64) << 30;
  /// Lifetime of static (tenant) entries unless a put says otherwise.
  std::chrono::seconds static_ttl{std::chrono::hours{24}};
  /// Wall clock in unix seconds (tests inject one); empty = system clock.
  std::function<int64_t()> clock;
};

/// What a listing or stat shows about an entry.
struct entry_info {
  digest key{};
  digest image_key{};
  std::string owner_ns;
  storage_dtype dtype = storage_dtype::f16;
  int n_tokens = 0;
  int n_layers = 0;
  int hidden = 0;
  int kv_dim = 0;
  uint64_t file_bytes = 0;
  int64_t created_unix = 0;
  int64_t expires_unix = 0; ///< 0 = never
  bool pinned = false;
  bool in_ram = false;
};

/// Hit/miss counters of one tier.
struct tier_counters {
  uint64_t hits = 0;
  uint64_t misses = 0;
};

struct library_stats {
  tier_counters ram;
  tier_counters disk;
  uint64_t ram_bytes = 0;
  uint64_t ram_budget = 0;
  size_t ram_entries = 0;
  uint64_t disk_bytes = 0;
  uint64_t disk_budget = 0;
  size_t disk_entries = 0;
  uint64_t evicted_expired = 0;
  uint64_t evicted_lru = 0;
  uint64_t ram_evictions = 0;
  uint64_t quarantined = 0;
  uint64_t writes = 0;
};

/// Keeps a disk entry from being evicted while it is read (RAII). Report
/// a failed check with `report_corrupt` (the file is quarantined) and a
/// successful load with `promote` (the entry enters the RAM tier).
class entry_lease {
public:
  entry_lease() = default;
  entry_lease(entry_lease&& other) noexcept;
  entry_lease& operator=(entry_lease&& other) noexcept;
  entry_lease(const entry_lease&) = delete;
  entry_lease& operator=(const entry_lease&) = delete;
  ~entry_lease();

  const entry_header& header() const { return header_; }
  const std::filesystem::path& path() const { return path_; }
  bool valid() const { return lib_ != nullptr; }

  /// Quarantines the file and returns the corrupt_data error to report.
  error report_corrupt(const error& why);
  /// Inserts a verified, decoded copy into the RAM tier.
  void promote(const compiled_image& img);
  /// Ends the lease early.
  void release();

private:
  friend class kv_library;
  entry_lease(kv_library* lib, entry_header h, std::filesystem::path p)
    : lib_(lib), header_(std::move(h)), path_(std::move(p)) {}
  kv_library* lib_ = nullptr;
  entry_header header_;
  std::filesystem::path path_;
};

/// Result of a lookup: a RAM hit (copy it) or a disk hit (load it).
struct lookup_hit {
  std::shared_ptr<const compiled_image> ram; ///< set on a RAM hit
  entry_lease disk;                          ///< valid on a disk hit
  bool in_ram() const { return ram != nullptr; }
};

class kv_library {
public:
  struct private_tag {};
  /// Opens (creating) the directory and rebuilds the index from disk.
  static result<std::unique_ptr<kv_library>> open(library_options options);

  kv_library(private_tag, library_options options);
  kv_library(const kv_library&) = delete;
  kv_library& operator=(const kv_library&) = delete;

  // -- tenant API -------------------------------------------------------------

  /// Stores `img` in the tenant's static library; expires after `ttl`
  /// (default: options.static_ttl).
  result<entry_info> put_static(std::string_view tenant, const digest& image_key,
                                const compiled_image& img,
                                std::optional<std::chrono::seconds> ttl = std::nullopt);
  /// Finds the image in the tenant's static library, then in the dynamic
  /// ones. not_found on a miss.
  result<lookup_hit> lookup(std::string_view tenant, const digest& image_key);
  /// lookup + read: a copy of the entry (disk hits are read, verified and
  /// promoted to RAM; a corrupt file is quarantined and reported).
  result<compiled_image> get(std::string_view tenant, const digest& image_key);
  /// The tenant's static entries and every dynamic entry.
  result<std::vector<entry_info>> list(std::string_view tenant);
  /// One of the tenant's (or a dynamic) entries.
  result<entry_info> stat(std::string_view tenant, const digest& image_key);
  /// Deletes one of the tenant's own static entries.
  status remove(std::string_view tenant, const digest& image_key);

  // -- admin API --------------------------------------------------------------

  /// Stores `img` in the dynamic library `library` (never expires).
  result<entry_info> put_shared(const admin_capability& admin, std::string_view library,
                                const digest& image_key, const compiled_image& img,
                                bool pinned = false);
  /// Deletes a dynamic entry.
  status remove_shared(const admin_capability& admin, std::string_view library,
                       const digest& image_key);
  /// Pins or unpins any entry by key (persisted across restarts).
  status set_pinned(const admin_capability& admin, const digest& key, bool pinned);
  /// Every indexed entry, optionally of one owner.
  std::vector<entry_info> list_all(const admin_capability& admin,
                                   const std::optional<owner>& only = std::nullopt);
  /// Deletes any entry by key.
  status remove_key(const admin_capability& admin, const digest& key);
  /// Reads and verifies every entry (optionally of one owner) in full;
  /// bad files are quarantined. Returns one line per problem.
  std::vector<std::string> verify_all(const admin_capability& admin,
                                      const std::optional<owner>& only = std::nullopt);
  /// Deletes expired entries now.
  size_t purge_expired();

  // -- introspection ----------------------------------------------------------

  library_stats stats() const;
  /// What the start-up scan found.
  const scan_report& startup_report() const { return startup_; }
  const library_options& options() const { return options_; }

private:
  friend class entry_lease;

  int64_t now() const;
  status require_model() const;
  result<entry_info> put(const owner& who, const digest& image_key, const compiled_image& img,
                         int64_t expires_unix, bool pinned);
  /// Index entry of `key`, picking up files written by other processes;
  /// expired entries are purged and count as absent. Caller holds mutex_.
  disk_entry* find_locked(const digest& key);
  entry_info info_locked(const disk_entry& e) const;
  std::vector<digest> candidate_keys(std::string_view tenant, const digest& image_key) const;
  void release_lease(const digest& key);
  error quarantine(const digest& key, const error& why);
  void forget_ram(const std::vector<digest>& keys);

  library_options options_;
  mutable std::mutex mutex_;
  disk_tier disk_;
  ram_tier ram_;
  std::set<std::string> shared_ns_; ///< namespaces of dynamic libraries seen
  scan_report startup_;
  library_stats counters_;      ///< hit/miss/quarantine/write counters
  uint64_t reserved_bytes_ = 0; ///< disk bytes of writes in progress
};

} // namespace mosaic::kv
