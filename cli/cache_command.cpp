// `mosaic cache ls|verify|rm|stats|build`: inspect and curate KV libraries
// on disk (docs/kv-libraries.md). These are operator commands: they act
// with an admin capability on the library directory given.

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/cache_build.hpp"
#include "cli/commands.hpp"
#include "kv/library.hpp"

namespace mosaic::cli {

namespace {

struct cache_options {
  std::string library;
  std::string tenant;
  std::string shared;
  std::vector<std::string> keys;
  bool all = false;
};

std::optional<kv::owner> owner_filter(const cache_options& o) {
  if (!o.tenant.empty())
    return kv::owner::tenant(o.tenant);
  if (!o.shared.empty())
    return kv::owner::shared(o.shared);
  return std::nullopt;
}

result<std::unique_ptr<kv::kv_library>> open_library(const cache_options& o) {
  if (auto f = owner_filter(o)) {
    MOSAIC_TRY(kv::validate_owner_name(f->name, f->type == kv::owner::kind::tenant ? "--tenant"
                                                                                   : "--shared"));
  }
  if (!std::filesystem::is_directory(o.library))
    return make_error(errc::not_found, "no KV library directory ", o.library, "; check --library");
  kv::library_options lo;
  lo.dir = o.library;
  auto lib = kv::kv_library::open(lo);
  if (!lib)
    return std::move(lib).err();
  for (const auto& p : (*lib)->startup_report().problems)
    std::fprintf(stderr, "warning: quarantined at open: %s\n", p.c_str());
  return lib;
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string utc(int64_t unix_seconds) {
  if (unix_seconds == 0)
    return "never";
  const std::time_t t = unix_seconds;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

int run_ls(const cache_options& o) {
  auto lib = open_library(o);
  if (!lib)
    return fail(lib.err());
  const auto admin = kv::admin_capability::grant("cli");
  auto entries = (*lib)->list_all(admin, owner_filter(o));
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.owner_ns < b.owner_ns || (a.owner_ns == b.owner_ns && a.created_unix < b.created_unix);
  });
  std::printf("%-16s  %-24s  %-16s  %-5s  %6s  %6s  %6s  %6s  %10s  %-20s  %-20s  %s\n", "KEY",
              "OWNER", "IMAGE", "DTYPE", "TOKENS", "LAYERS", "HIDDEN", "KV_DIM", "SIZE", "CREATED",
              "EXPIRES", "PINNED");
  const int64_t now = now_unix();
  for (const auto& e : entries) {
    std::string expires = utc(e.expires_unix);
    if (e.expires_unix != 0 && e.expires_unix <= now)
      expires += " (expired)";
    std::printf("%-16s  %-24s  %-16s  %-5s  %6d  %6d  %6d  %6d  %10s  %-20s  %-20s  %s\n",
                to_hex(e.key).substr(0, 16).c_str(), e.owner_ns.c_str(),
                to_hex(e.image_key).substr(0, 16).c_str(), kv::to_string(e.dtype), e.n_tokens,
                e.n_layers, e.hidden, e.kv_dim, human_bytes(e.file_bytes).c_str(),
                utc(e.created_unix).c_str(), expires.c_str(), e.pinned ? "yes" : "no");
  }
  std::printf("%zu entr%s\n", entries.size(), entries.size() == 1 ? "y" : "ies");
  return 0;
}

int run_verify(const cache_options& o) {
  auto lib = open_library(o);
  if (!lib)
    return fail(lib.err());
  const auto admin = kv::admin_capability::grant("cli");
  const size_t total = (*lib)->list_all(admin, owner_filter(o)).size();
  const auto problems = (*lib)->verify_all(admin, owner_filter(o));
  for (const auto& p : problems)
    std::printf("BAD  %s\n", p.c_str());
  const size_t at_open = (*lib)->startup_report().quarantined;
  std::printf("%zu entr%s verified, %zu bad (quarantined in %s/quarantine)\n",
              total - problems.size(), total - problems.size() == 1 ? "y" : "ies",
              problems.size() + at_open, o.library.c_str());
  return problems.empty() && at_open == 0 ? 0 : 1;
}

int run_rm(const cache_options& o) {
  if (o.keys.empty() && !o.all)
    return fail(make_error(errc::invalid_argument,
                           "name the entries to delete (KEY prefixes from `mosaic cache ls`) "
                           "or pass --all"));
  auto lib = open_library(o);
  if (!lib)
    return fail(lib.err());
  const auto admin = kv::admin_capability::grant("cli");
  const auto entries = (*lib)->list_all(admin, owner_filter(o));
  std::vector<digest> doomed;
  if (o.all) {
    for (const auto& e : entries)
      doomed.push_back(e.key);
  }
  for (const auto& prefix : o.keys) {
    if (prefix.size() < 8)
      return fail(make_error(errc::invalid_argument, "key prefix '", prefix,
                             "' is too short; give at least 8 hex characters"));
    std::vector<digest> match;
    for (const auto& e : entries)
      if (to_hex(e.key).starts_with(prefix))
        match.push_back(e.key);
    if (match.empty())
      return fail(make_error(errc::not_found, "no entry with key ", prefix,
                             owner_filter(o) ? " in " + owner_filter(o)->ns() : std::string{},
                             "; see `mosaic cache ls`"));
    if (match.size() > 1)
      return fail(make_error(errc::invalid_argument, "key prefix ", prefix, " matches ",
                             std::to_string(match.size()), " entries; give more characters"));
    doomed.push_back(match[0]);
  }
  int rc = 0;
  for (const auto& key : doomed) {
    if (auto st = (*lib)->remove_key(admin, key); !st)
      rc = fail(st.err());
    else
      std::printf("removed %s\n", to_hex(key).c_str());
  }
  return rc;
}

int run_stats(const cache_options& o) {
  auto lib = open_library(o);
  if (!lib)
    return fail(lib.err());
  const auto admin = kv::admin_capability::grant("cli");
  struct row {
    size_t entries = 0, pinned = 0, expired = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, row> by_owner;
  row total;
  const int64_t now = now_unix();
  for (const auto& e : (*lib)->list_all(admin, owner_filter(o))) {
    for (row* r : {&by_owner[e.owner_ns], &total}) {
      ++r->entries;
      r->bytes += e.file_bytes;
      r->pinned += e.pinned ? 1 : 0;
      r->expired += e.expires_unix != 0 && e.expires_unix <= now ? 1 : 0;
    }
  }
  size_t quarantined = 0;
  std::error_code ec;
  for (const auto& de :
       std::filesystem::directory_iterator{std::filesystem::path{o.library} / "quarantine", ec})
    quarantined += de.path().extension() == ".reason" ? 0 : 1;
  std::printf("%-32s  %8s  %12s  %7s  %8s\n", "OWNER", "ENTRIES", "SIZE", "PINNED", "EXPIRED");
  for (const auto& [ns, r] : by_owner)
    std::printf("%-32s  %8zu  %12s  %7zu  %8zu\n", ns.c_str(), r.entries,
                human_bytes(r.bytes).c_str(), r.pinned, r.expired);
  std::printf("%-32s  %8zu  %12s  %7zu  %8zu\n", "total", total.entries,
              human_bytes(total.bytes).c_str(), total.pinned, total.expired);
  std::printf("quarantined files: %zu (in %s/quarantine)\n", quarantined, o.library.c_str());
  return 0;
}

void add_scope_options(CLI::App* cmd, cache_options& o) {
  cmd->add_option("--library", o.library, "KV library directory")->required();
  auto* t = cmd->add_option("--tenant", o.tenant, "only this tenant's static library");
  auto* s = cmd->add_option("--shared", o.shared, "only this shared (dynamic) library");
  t->excludes(s);
}

} // namespace

void add_cache_command(CLI::App& app, int* exit_code) {
  auto* cache = app.add_subcommand("cache", "Inspect and curate KV libraries on disk");
  cache->require_subcommand(1);
  auto o = std::make_shared<cache_options>();

  auto* ls = cache->add_subcommand("ls", "List entries: key, owner, geometry, size, expiry");
  add_scope_options(ls, *o);
  ls->callback([o, exit_code] { *exit_code = run_ls(*o); });

  auto* verify = cache->add_subcommand(
      "verify", "Read and check every entry in full; quarantine bad files (exit 1 if any)");
  add_scope_options(verify, *o);
  verify->callback([o, exit_code] { *exit_code = run_verify(*o); });

  auto* rm = cache->add_subcommand("rm", "Delete entries by key prefix (or --all in the scope)");
  add_scope_options(rm, *o);
  rm->add_option("KEY", o->keys, "key prefixes (at least 8 hex characters) from `cache ls`");
  rm->add_flag("--all", o->all, "delete every entry in the scope");
  rm->callback([o, exit_code] { *exit_code = run_rm(*o); });

  auto* stats = cache->add_subcommand("stats", "Entries and bytes per owner, pins, expiry");
  add_scope_options(stats, *o);
  stats->callback([o, exit_code] { *exit_code = run_stats(*o); });

  add_cache_build_command(*cache, exit_code);
}

} // namespace mosaic::cli
