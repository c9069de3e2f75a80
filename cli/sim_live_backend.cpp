#include "cli/sim_live_backend.hpp"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>

#include "sim/cluster_target.hpp"
#include "sim/driver.hpp"
#include "sim/http_target.hpp"
#include "sim/zmq_target.hpp"

namespace mosaic::cli {

namespace {

sim::drive_options drive_options_of(const sim_options& o, const std::string& label, double rate) {
  sim::drive_options d;
  d.label = label;
  d.rate = rate;
  d.objectives = o.objectives;
  d.drain_timeout = std::chrono::milliseconds{int64_t(o.drain_timeout_s * 1000)};
  d.progress = o.verbose;
  d.progress_bar = !o.no_progress;
  return d;
}

void announce(const sim::workload& w, const std::string& label, double rate, double duration) {
  std::fprintf(stderr, "%s: %zu requests at %.3g req/s over %.3g s...\n", label.c_str(),
               w.requests.size(), rate, duration);
}

/// A fresh single-node cluster in this process per run, over one library.
class in_process_backend final : public live_backend {
public:
  explicit in_process_backend(sim_options& o) : o_(o) {}

  status prepare(const sim::workload& w) override {
    return o_.inline_images ? status{} : prepare_live_library(o_, w);
  }

  result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                              const std::string& label, double rate) override {
    // A fresh cluster: every policy starts with the library on disk and
    // the RAM tier and encoder cache empty.
    auto cluster = start_cluster();
    if (!cluster)
      return std::move(cluster).err();
    sim::cluster_target t{**cluster, w, {.policy = policy, .images_by_key = !o_.inline_images}};
    announce(w, label, rate, o_.duration_s);
    return sim::drive(t, w, drive_options_of(o_, label, rate));
  }

  std::string describe() const override { return "in-process cluster (" + o_.device + ")"; }
  std::string model() const override { return o_.model; }
  std::string where() const override { return "in-process"; }

private:
  result<std::unique_ptr<actors::local_cluster>> start_cluster() const {
    return start_live_cluster(o_);
  }

  sim_options& o_;
};

/// A server over HTTP, a Mosaic front door or a peer: images uploaded
/// (Mosaic) or made into data URLs once, every image sent once right
/// before every run, and each run under its own cache salt.
class http_backend final : public live_backend {
public:
  http_backend(sim_options& o, sim::front_door_session s) : o_(o), session_(std::move(s)) {
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%016llx",
                  static_cast<unsigned long long>(std::random_device{}()) << 32 |
                      std::random_device{}());
    salt_prefix_ = std::string{"mosaic-sim-"} + nonce + "-";
  }

  status prepare(const sim::workload& w) override {
    std::fprintf(stderr, "%s %zu images for %s (%s)...\n",
                 session_.is_mosaic() ? "uploading" : "encoding", w.used_images().size(),
                 session_.endpoint.url().c_str(), session_.server.c_str());
    auto n = sim::upload_images(session_, w);
    if (!n)
      return std::move(n).err();
    return {};
  }

  result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                              const std::string& label, double rate) override {
    // Same cache state for every run: a prefix cache of its own (the
    // salt), each image seen once, in pool order, right before the run.
    const std::string salt = o_.no_cache_salt ? std::string{} : salt_prefix_ + label;
    if (auto st = sim::warm_images(session_, w, salt); !st)
      return std::move(st).err();
    sim::http_target t{session_,
                       {.policy = policy,
                        .request_timeout = std::chrono::seconds{int64_t(o_.drain_timeout_s) + 1},
                        .cache_salt = salt}};
    announce(w, label, rate, o_.duration_s);
    return sim::drive(t, w, drive_options_of(o_, label, rate));
  }

  std::string describe() const override {
    return session_.server + " at " + session_.endpoint.url() + " (HTTP" +
           (session_.data_urls ? ", images as data URLs)" : ", images from its library)");
  }
  std::string model() const override { return session_.model; }
  std::string server() const override { return session_.server; }
  std::string where() const override {
    return session_.endpoint.host + ":" + std::to_string(session_.endpoint.port);
  }

private:
  sim_options& o_;
  sim::front_door_session session_;
  std::string salt_prefix_; ///< unique to this command and server
};

/// A running front door's ZeroMQ API (messages/api_client.hpp). Images go
/// inline as PNG bytes; the server's library turns repeats into hits, so
/// unlike the HTTP backend the first policy of a compare pays the encodes.
class zmq_backend final : public live_backend {
public:
  zmq_backend(sim_options& o, std::string target) : o_(o), target_(std::move(target)) {}

  status prepare(const sim::workload&) override { return {}; }

  result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                              const std::string& label, double rate) override {
    std::string key = o_.api_key;
    if (key.empty())
      if (const char* env = std::getenv("MOSAIC_API_KEY"))
        key = env;
    auto t = sim::zmq_target::connect(target_, w, {.policy = policy, .api_key = key});
    if (!t)
      return make_error(t.err().code, "--target: ", t.err().message);
    announce(w, label, rate, o_.duration_s);
    return sim::drive(**t, w, drive_options_of(o_, label, rate));
  }

  std::string describe() const override { return "front door " + target_ + " (ZeroMQ API)"; }
  std::string model() const override { return "served by " + target_; }
  std::string where() const override { return target_.substr(target_.find("://") + 3); }

private:
  sim_options& o_;
  std::string target_;
};

} // namespace

result<std::vector<std::unique_ptr<live_backend>>> make_live_backends(sim_options& o) {
  std::vector<std::unique_ptr<live_backend>> out;
  if (o.targets.empty()) {
    out.push_back(std::make_unique<in_process_backend>(o));
    return out;
  }
  std::vector<sim::front_door_session> sessions;
  std::vector<std::string> others;
  for (const auto& target : o.targets) {
    auto kind = sim_options::target_scheme(target);
    if (!kind)
      return std::move(kind).err();
    if (*kind == target_kind::in_process) { // --target ""
      others.push_back(target);
      continue;
    }
    if (*kind == target_kind::zmq) {
      others.push_back(target);
      continue;
    }
    auto endpoint = sim::parse_http_url(target);
    if (!endpoint)
      return make_error(endpoint.err().code, "--target: ", endpoint.err().message);
    auto s = sim::connect_front_door(*endpoint, o.api_key,
                                     std::chrono::seconds{int64_t(o.connect_timeout_s)});
    if (!s)
      return make_error(s.err().code, "--target: ", s.err().message);
    sessions.push_back(std::move(*s));
  }
  // Every http target gets the same request bytes: data URLs as soon as
  // one of them cannot take Mosaic's library references.
  bool any_peer = false;
  for (const auto& s : sessions)
    any_peer = any_peer || !s.is_mosaic();
  if (o.images == "upload" && any_peer)
    return make_error(errc::invalid_argument, "--images upload: a --target is not Mosaic and "
                                              "takes images as data URLs only");
  const bool data_urls = o.images == "data-url" || (o.images == "auto" && any_peer);
  for (auto& s : sessions) {
    s.data_urls = data_urls;
    out.push_back(std::make_unique<http_backend>(o, std::move(s)));
  }
  for (auto& t : others) {
    if (t.empty())
      out.push_back(std::make_unique<in_process_backend>(o));
    else
      out.push_back(std::make_unique<zmq_backend>(o, std::move(t)));
  }
  return out;
}

std::vector<planned_run> plan_runs(const std::vector<std::unique_ptr<live_backend>>& backends,
                                   const std::vector<std::string>& policies) {
  int mosaic = 0;
  std::map<std::string, int> peers;
  for (const auto& b : backends)
    b->is_mosaic() ? ++mosaic : ++peers[b->server()];
  std::vector<planned_run> out;
  for (const auto& b : backends) {
    if (!b->is_mosaic()) {
      out.push_back(
          {b.get(), "", peers[b->server()] > 1 ? b->server() + "@" + b->where() : b->server()});
      continue;
    }
    for (const auto& p : policies)
      out.push_back({b.get(), p, mosaic > 1 ? p + "@" + b->where() : p});
  }
  return out;
}

} // namespace mosaic::cli
