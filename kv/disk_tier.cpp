#include "kv/disk_tier.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <fstream>

#include "kv/entry_file.hpp"

namespace mosaic::kv {

namespace fs = std::filesystem;

namespace {

fs::path pin_path(const fs::path& dir, const digest& key) {
  return fs::path{entry_path(dir, key).string() + ".pin"};
}

/// A temp file ".tmp.<key>.<pid>.<n>.<r>" is stale when its writer process
/// is gone, or when it is older than an hour (a pid may be reused).
bool stale_temp(const fs::directory_entry& de) {
  const std::string name = de.path().filename().string();
  const auto first = name.find('.', 5);
  const auto second = first == std::string::npos ? first : name.find('.', first + 1);
  if (second != std::string::npos) {
    const std::string pid_text = name.substr(first + 1, second - first - 1);
    char* end = nullptr;
    const long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (end != pid_text.c_str() && *end == '\0' && pid > 0 && ::kill(pid_t(pid), 0) != 0 &&
        errno == ESRCH)
      return true;
  }
  std::error_code ec;
  const auto age = fs::file_time_type::clock::now() - fs::last_write_time(de.path(), ec);
  return !ec && age > std::chrono::hours{1};
}

} // namespace

scan_report disk_tier::scan(const std::optional<digest>& model) {
  scan_report report;
  entries_.clear();
  bytes_ = 0;
  std::vector<std::pair<int64_t, digest>> by_age;
  std::error_code ec;
  for (const auto& de : fs::directory_iterator{dir_, ec}) {
    const std::string name = de.path().filename().string();
    if (!de.is_regular_file())
      continue;
    if (is_temp_name(name)) {
      if (stale_temp(de) && fs::remove(de.path(), ec))
        ++report.temp_removed;
      continue;
    }
    if (!name.ends_with(".mkv"))
      continue;
    auto h = read_header(de.path());
    if (!h) {
      ++report.quarantined;
      report.problems.push_back(name + ": " + h.err().to_string());
      (void)quarantine_file(dir_, de.path(), h.err().to_string());
      continue;
    }
    if (model && h->model_fingerprint != *model) {
      ++report.foreign;
      continue;
    }
    disk_entry e;
    e.header = *h;
    e.pinned = fs::exists(pin_path(dir_, h->key), ec);
    bytes_ += h->file_bytes();
    by_age.emplace_back(h->created_unix, h->key);
    entries_.emplace(h->key, std::move(e));
    ++report.indexed;
  }
  if (ec)
    report.problems.push_back("cannot list " + dir_.string() + ": " + ec.message());
  // Oldest first, so the LRU order after a restart follows creation time.
  std::sort(by_age.begin(), by_age.end());
  for (const auto& [created, key] : by_age)
    touch(entries_.at(key));
  return report;
}

disk_entry* disk_tier::find(const digest& key) {
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

disk_entry& disk_tier::insert(const entry_header& h) {
  auto& e = entries_[h.key];
  if (e.header.n_layers != 0)
    bytes_ -= e.header.file_bytes();
  e.header = h;
  bytes_ += h.file_bytes();
  touch(e);
  return e;
}

status disk_tier::remove(const digest& key) {
  auto it = entries_.find(key);
  if (it == entries_.end())
    return make_error(errc::not_found, "no such entry");
  std::error_code ec;
  fs::remove(pin_path(dir_, key), ec);
  fs::remove(entry_path(dir_, key), ec);
  bytes_ -= it->second.header.file_bytes();
  entries_.erase(it);
  if (ec)
    return make_error(errc::io_error, "cannot delete ", entry_path(dir_, key).string(), ": ",
                      ec.message());
  return {};
}

result<fs::path> disk_tier::quarantine(const digest& key, const std::string& reason) {
  if (auto it = entries_.find(key); it != entries_.end()) {
    bytes_ -= it->second.header.file_bytes();
    entries_.erase(it);
  }
  std::error_code ec;
  fs::remove(pin_path(dir_, key), ec);
  return quarantine_file(dir_, entry_path(dir_, key), reason);
}

status disk_tier::set_pinned(const digest& key, bool pinned) {
  auto* e = find(key);
  if (e == nullptr)
    return make_error(errc::not_found, "no such entry");
  const fs::path p = pin_path(dir_, key);
  std::error_code ec;
  if (pinned) {
    std::ofstream out{p};
    if (!out)
      return make_error(errc::io_error, "cannot create ", p.string());
  } else {
    fs::remove(p, ec);
  }
  e->pinned = pinned;
  return {};
}

std::vector<digest> disk_tier::purge_expired(int64_t now_unix) {
  std::vector<digest> out;
  for (const auto& [key, e] : entries_)
    if (e.header.expired_at(now_unix) && e.leases == 0 && !e.pinned)
      out.push_back(key);
  for (const auto& key : out) {
    (void)remove(key);
    ++evicted_expired_;
  }
  return out;
}

result<std::vector<digest>> disk_tier::make_room(uint64_t need, int64_t now_unix) {
  auto evicted = purge_expired(now_unix);
  if (bytes_ + need <= budget_)
    return evicted;
  std::vector<std::pair<uint64_t, digest>> candidates;
  uint64_t freeable = 0;
  for (const auto& [key, e] : entries_)
    if (!e.pinned && e.leases == 0) {
      candidates.emplace_back(e.last_use, key);
      freeable += e.header.file_bytes();
    }
  if (bytes_ - freeable + need > budget_)
    return make_error(errc::out_of_memory, "KV library disk budget of ", std::to_string(budget_),
                      " bytes cannot fit ", std::to_string(need),
                      " more bytes: the rest is pinned or being loaded; raise the disk budget "
                      "or unpin entries");
  std::sort(candidates.begin(), candidates.end());
  for (const auto& [use, key] : candidates) {
    if (bytes_ + need <= budget_)
      break;
    (void)remove(key);
    ++evicted_lru_;
    evicted.push_back(key);
  }
  return evicted;
}

} // namespace mosaic::kv
