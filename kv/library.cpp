#include "kv/library.hpp"

#include <algorithm>

#include "kv/entry_file.hpp"

namespace mosaic::kv {

namespace fs = std::filesystem;

namespace {

/// The one error for "absent or not yours": identical for both, so a
/// tenant cannot infer another tenant's entries.
error not_visible(const digest& image_key) {
  return make_error(errc::not_found, "no KV entry for image ", to_hex(image_key),
                    " in this tenant's or a shared library");
}

} // namespace

// -- entry_lease ----------------------------------------------------------------

entry_lease::entry_lease(entry_lease&& other) noexcept
  : lib_(std::exchange(other.lib_, nullptr)), header_(std::move(other.header_)),
    path_(std::move(other.path_)) {}

entry_lease& entry_lease::operator=(entry_lease&& other) noexcept {
  if (this != &other) {
    release();
    lib_ = std::exchange(other.lib_, nullptr);
    header_ = std::move(other.header_);
    path_ = std::move(other.path_);
  }
  return *this;
}

entry_lease::~entry_lease() {
  release();
}

void entry_lease::release() {
  if (lib_ != nullptr)
    std::exchange(lib_, nullptr)->release_lease(header_.key);
}

error entry_lease::report_corrupt(const error& why) {
  if (lib_ == nullptr)
    return why;
  return lib_->quarantine(header_.key, why);
}

void entry_lease::promote(const compiled_image& img) {
  if (lib_ == nullptr)
    return;
  std::lock_guard lock{lib_->mutex_};
  const auto* e = lib_->disk_.find(header_.key);
  lib_->ram_.insert(header_.key, std::make_shared<const compiled_image>(img),
                    e != nullptr && e->pinned);
}

// -- kv_library -----------------------------------------------------------------

kv_library::kv_library(private_tag, library_options options)
  : options_(std::move(options)), disk_(options_.dir, options_.disk_budget_bytes),
    ram_(options_.ram_budget_bytes) {}

result<std::unique_ptr<kv_library>> kv_library::open(library_options options) {
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec || !fs::is_directory(options.dir))
    return make_error(errc::io_error, "cannot create KV library directory ", options.dir.string(),
                      ": ", ec ? ec.message() : "not a directory");
  auto lib = std::make_unique<kv_library>(private_tag{}, std::move(options));
  lib->startup_ = lib->disk_.scan(lib->options_.model_fingerprint);
  lib->counters_.quarantined = lib->startup_.quarantined;
  for (const auto& [key, e] : lib->disk_.entries())
    if (e.header.owner_ns.starts_with("shared:"))
      lib->shared_ns_.insert(e.header.owner_ns);
  return lib;
}

int64_t kv_library::now() const {
  if (options_.clock)
    return options_.clock();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

status kv_library::require_model() const {
  if (!options_.model_fingerprint)
    return make_error(errc::invalid_argument,
                      "this KV library was opened without a model fingerprint; open it for a "
                      "model to read or write entries");
  return {};
}

void kv_library::forget_ram(const std::vector<digest>& keys) {
  for (const auto& k : keys)
    ram_.erase(k);
}

disk_entry* kv_library::find_locked(const digest& key) {
  disk_entry* e = disk_.find(key);
  if (e == nullptr) {
    // Another process (e.g. `mosaic cache build`) may have written it.
    const fs::path path = entry_path(disk_.dir(), key);
    auto h = read_header(path);
    if (!h) {
      if (h.err().code == errc::corrupt_data) {
        (void)quarantine_file(disk_.dir(), path, h.err().to_string());
        ++counters_.quarantined;
      }
      return nullptr;
    }
    if (h->model_fingerprint != *options_.model_fingerprint)
      return nullptr;
    e = &disk_.insert(*h);
    if (h->owner_ns.starts_with("shared:"))
      shared_ns_.insert(h->owner_ns);
  }
  if (e->header.expired_at(now())) {
    if (e->leases == 0 && !e->pinned) {
      (void)disk_.remove(key);
      ram_.erase(key);
      ++counters_.evicted_expired;
    }
    return nullptr;
  }
  return e;
}

entry_info kv_library::info_locked(const disk_entry& e) const {
  const auto& h = e.header;
  return entry_info{h.key,
                    h.image_key,
                    h.owner_ns,
                    h.dtype,
                    h.n_tokens,
                    h.n_layers,
                    h.hidden,
                    h.kv_dim,
                    h.file_bytes(),
                    h.created_unix,
                    h.expires_unix,
                    e.pinned,
                    ram_.contains(h.key)};
}

std::vector<digest> kv_library::candidate_keys(std::string_view tenant,
                                               const digest& image_key) const {
  std::vector<digest> keys;
  const digest& model = *options_.model_fingerprint;
  keys.push_back(library_key(image_key, model, owner::tenant(std::string{tenant}).ns()));
  for (const auto& ns : shared_ns_)
    keys.push_back(library_key(image_key, model, ns));
  return keys;
}

result<entry_info> kv_library::put(const owner& who, const digest& image_key,
                                   const compiled_image& img, int64_t expires_unix, bool pinned) {
  MOSAIC_TRY(require_model());
  entry_header h;
  h.owner_ns = who.ns();
  h.image_key = image_key;
  h.model_fingerprint = *options_.model_fingerprint;
  h.key = library_key(image_key, h.model_fingerprint, h.owner_ns);
  h.dtype = options_.dtype;
  h.n_kv_heads = options_.n_kv_heads;
  h.head_dim = options_.head_dim;
  h.created_unix = now();
  h.expires_unix = expires_unix;
  set_geometry(h, img);
  MOSAIC_TRY(validate_header_fields(h));
  const uint64_t need = h.file_bytes();
  {
    std::lock_guard lock{mutex_};
    auto evicted = disk_.make_room(need + reserved_bytes_, h.created_unix);
    if (!evicted)
      return std::move(evicted).err();
    forget_ram(*evicted);
    reserved_bytes_ += need;
  }
  auto written = write_entry(disk_.dir(), h, img);
  std::lock_guard lock{mutex_};
  reserved_bytes_ -= need;
  if (!written)
    return std::move(written).err();
  auto& e = disk_.insert(*written);
  if (pinned)
    MOSAIC_TRY(disk_.set_pinned(h.key, true));
  if (who.type == owner::kind::shared)
    shared_ns_.insert(h.owner_ns);
  ++counters_.writes;
  ram_.insert(h.key, std::make_shared<const compiled_image>(img), e.pinned);
  return info_locked(e);
}

result<entry_info> kv_library::put_static(std::string_view tenant, const digest& image_key,
                                          const compiled_image& img,
                                          std::optional<std::chrono::seconds> ttl) {
  MOSAIC_TRY(validate_owner_name(tenant, "tenant id"));
  const auto life = ttl.value_or(options_.static_ttl);
  if (life.count() <= 0)
    return make_error(errc::invalid_argument, "static library TTL must be positive");
  return put(owner::tenant(std::string{tenant}), image_key, img, now() + life.count(), false);
}

result<entry_info> kv_library::put_shared(const admin_capability&, std::string_view library,
                                          const digest& image_key, const compiled_image& img,
                                          bool pinned) {
  MOSAIC_TRY(validate_owner_name(library, "shared library name"));
  return put(owner::shared(std::string{library}), image_key, img, 0, pinned);
}

result<lookup_hit> kv_library::lookup(std::string_view tenant, const digest& image_key) {
  MOSAIC_TRY(require_model());
  MOSAIC_TRY(validate_owner_name(tenant, "tenant id"));
  std::lock_guard lock{mutex_};
  for (const auto& key : candidate_keys(tenant, image_key)) {
    disk_entry* e = find_locked(key);
    if (e == nullptr)
      continue;
    disk_.touch(*e);
    lookup_hit hit;
    if ((hit.ram = ram_.find(key))) {
      ++counters_.ram.hits;
      return hit;
    }
    ++counters_.ram.misses;
    ++counters_.disk.hits;
    ++e->leases;
    hit.disk = entry_lease{this, e->header, entry_path(disk_.dir(), key)};
    return hit;
  }
  ++counters_.ram.misses;
  ++counters_.disk.misses;
  return not_visible(image_key);
}

result<compiled_image> kv_library::get(std::string_view tenant, const digest& image_key) {
  auto hit = lookup(tenant, image_key);
  if (!hit)
    return std::move(hit).err();
  if (hit->in_ram())
    return compiled_image{*hit->ram};
  entry_header h;
  auto img = read_entry(hit->disk.path(), &h, &hit->disk.header().key);
  if (!img) {
    if (img.err().code == errc::not_found) {
      std::lock_guard lock{mutex_};
      (void)disk_.remove(hit->disk.header().key);
      return not_visible(image_key);
    }
    if (img.err().code == errc::corrupt_data)
      return hit->disk.report_corrupt(img.err());
    return std::move(img).err();
  }
  hit->disk.promote(*img);
  return img;
}

result<std::vector<entry_info>> kv_library::list(std::string_view tenant) {
  MOSAIC_TRY(validate_owner_name(tenant, "tenant id"));
  const std::string own = owner::tenant(std::string{tenant}).ns();
  const int64_t t = now();
  std::lock_guard lock{mutex_};
  std::vector<entry_info> out;
  for (const auto& [key, e] : disk_.entries())
    if ((e.header.owner_ns == own || e.header.owner_ns.starts_with("shared:")) &&
        !e.header.expired_at(t))
      out.push_back(info_locked(e));
  return out;
}

result<entry_info> kv_library::stat(std::string_view tenant, const digest& image_key) {
  MOSAIC_TRY(require_model());
  MOSAIC_TRY(validate_owner_name(tenant, "tenant id"));
  std::lock_guard lock{mutex_};
  for (const auto& key : candidate_keys(tenant, image_key))
    if (const disk_entry* e = find_locked(key))
      return info_locked(*e);
  return not_visible(image_key);
}

status kv_library::remove(std::string_view tenant, const digest& image_key) {
  MOSAIC_TRY(require_model());
  MOSAIC_TRY(validate_owner_name(tenant, "tenant id"));
  const digest key =
      library_key(image_key, *options_.model_fingerprint, owner::tenant(std::string{tenant}).ns());
  std::lock_guard lock{mutex_};
  if (find_locked(key) == nullptr)
    return not_visible(image_key);
  ram_.erase(key);
  return disk_.remove(key);
}

status kv_library::remove_shared(const admin_capability&, std::string_view library,
                                 const digest& image_key) {
  MOSAIC_TRY(require_model());
  MOSAIC_TRY(validate_owner_name(library, "shared library name"));
  const digest key =
      library_key(image_key, *options_.model_fingerprint, owner::shared(std::string{library}).ns());
  std::lock_guard lock{mutex_};
  if (find_locked(key) == nullptr)
    return make_error(errc::not_found, "no KV entry for image ", to_hex(image_key),
                      " in shared library ", std::string{library});
  ram_.erase(key);
  return disk_.remove(key);
}

status kv_library::set_pinned(const admin_capability&, const digest& key, bool pinned) {
  std::lock_guard lock{mutex_};
  if (disk_.find(key) == nullptr)
    return make_error(errc::not_found, "no KV entry with key ", to_hex(key));
  MOSAIC_TRY(disk_.set_pinned(key, pinned));
  ram_.set_pinned(key, pinned);
  return {};
}

std::vector<entry_info> kv_library::list_all(const admin_capability&,
                                             const std::optional<owner>& only) {
  std::lock_guard lock{mutex_};
  std::vector<entry_info> out;
  for (const auto& [key, e] : disk_.entries())
    if (!only || e.header.owner_ns == only->ns())
      out.push_back(info_locked(e));
  return out;
}

status kv_library::remove_key(const admin_capability&, const digest& key) {
  std::lock_guard lock{mutex_};
  if (disk_.find(key) == nullptr)
    return make_error(errc::not_found, "no KV entry with key ", to_hex(key));
  ram_.erase(key);
  return disk_.remove(key);
}

std::vector<std::string> kv_library::verify_all(const admin_capability& admin,
                                                const std::optional<owner>& only) {
  std::vector<std::string> problems;
  for (const auto& info : list_all(admin, only)) {
    auto img = read_entry(entry_path(disk_.dir(), info.key), nullptr, &info.key);
    if (!img) {
      if (img.err().code == errc::corrupt_data)
        problems.push_back(quarantine(info.key, img.err()).message);
      else
        problems.push_back(to_hex(info.key) + ": " + img.err().to_string());
    }
  }
  return problems;
}

size_t kv_library::purge_expired() {
  std::lock_guard lock{mutex_};
  const auto keys = disk_.purge_expired(now());
  forget_ram(keys);
  return keys.size();
}

library_stats kv_library::stats() const {
  std::lock_guard lock{mutex_};
  library_stats s = counters_;
  s.ram_bytes = ram_.bytes();
  s.ram_budget = ram_.budget();
  s.ram_entries = ram_.size();
  s.ram_evictions = ram_.evictions();
  s.disk_bytes = disk_.bytes();
  s.disk_budget = disk_.budget();
  s.disk_entries = disk_.entries().size();
  s.evicted_expired += disk_.evicted_expired();
  s.evicted_lru = disk_.evicted_lru();
  return s;
}

void kv_library::release_lease(const digest& key) {
  std::lock_guard lock{mutex_};
  if (auto* e = disk_.find(key); e != nullptr && e->leases > 0)
    --e->leases;
}

error kv_library::quarantine(const digest& key, const error& why) {
  std::lock_guard lock{mutex_};
  ram_.erase(key);
  ++counters_.quarantined;
  auto moved = disk_.quarantine(key, why.to_string());
  return make_error(errc::corrupt_data, "KV entry ", to_hex(key), " failed verification (",
                    why.message, ")",
                    moved ? "; moved to " + moved->string() : std::string{"; already removed"},
                    "; the image will be recomputed");
}

} // namespace mosaic::kv
