#include "cli/sim_live_backend.hpp"

#include <cstdio>
#include <cstdlib>

#include "sim/cluster_target.hpp"
#include "sim/driver.hpp"
#include "sim/http_target.hpp"
#include "sim/zmq_target.hpp"

namespace mosaic::cli {

namespace {

sim::drive_options drive_options_of(const sim_options& o, const std::string& policy, double rate) {
  sim::drive_options d;
  d.label = policy;
  d.rate = rate;
  d.objectives = o.objectives;
  d.drain_timeout = std::chrono::milliseconds{int64_t(o.drain_timeout_s * 1000)};
  d.progress = o.verbose;
  d.progress_bar = !o.no_progress;
  return d;
}

void announce(const sim::workload& w, const std::string& policy, double rate, double duration) {
  std::fprintf(stderr, "%s: %zu requests at %.3g req/s over %.3g s...\n", policy.c_str(),
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
                              double rate) override {
    // A fresh cluster: every policy starts with the library on disk and
    // the RAM tier and encoder cache empty.
    auto cluster = start_cluster();
    if (!cluster)
      return std::move(cluster).err();
    sim::cluster_target t{**cluster, w, {.policy = policy, .images_by_key = !o_.inline_images}};
    announce(w, policy, rate, o_.duration_s);
    return sim::drive(t, w, drive_options_of(o_, policy, rate));
  }

  std::string describe() const override { return "in-process cluster (" + o_.device + ")"; }
  std::string model() const override { return o_.model; }

private:
  result<std::unique_ptr<actors::local_cluster>> start_cluster() const {
    return start_live_cluster(o_);
  }

  sim_options& o_;
};

/// A running `mosaic serve` front door over HTTP; images uploaded once,
/// warmed before every run.
class http_backend final : public live_backend {
public:
  http_backend(sim_options& o, sim::front_door_session s) : o_(o), session_(std::move(s)) {}

  status prepare(const sim::workload& w) override {
    std::fprintf(stderr, "uploading %zu images to %s...\n", w.used_images().size(),
                 session_.endpoint.url().c_str());
    auto n = sim::upload_images(session_, w);
    if (!n)
      return std::move(n).err();
    return {};
  }

  result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                              double rate) override {
    // Same cache state for every policy: each image loaded once, in pool
    // order, right before the run.
    if (auto st = sim::warm_images(session_, w); !st)
      return std::move(st).err();
    sim::http_target t{session_,
                       {.policy = policy,
                        .request_timeout = std::chrono::seconds{int64_t(o_.drain_timeout_s) + 1}}};
    announce(w, policy, rate, o_.duration_s);
    return sim::drive(t, w, drive_options_of(o_, policy, rate));
  }

  std::string describe() const override {
    return "front door " + session_.endpoint.url() + " (HTTP)";
  }
  std::string model() const override { return session_.model; }

private:
  sim_options& o_;
  sim::front_door_session session_;
};

/// A running front door's ZeroMQ API (messages/api_client.hpp). Images go
/// inline as PNG bytes; the server's library turns repeats into hits, so
/// unlike the HTTP backend the first policy of a compare pays the encodes.
class zmq_backend final : public live_backend {
public:
  explicit zmq_backend(sim_options& o) : o_(o) {}

  status prepare(const sim::workload&) override { return {}; }

  result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                              double rate) override {
    std::string key = o_.api_key;
    if (key.empty())
      if (const char* env = std::getenv("MOSAIC_API_KEY"))
        key = env;
    auto t = sim::zmq_target::connect(o_.target, w, {.policy = policy, .api_key = key});
    if (!t)
      return make_error(t.err().code, "--target: ", t.err().message);
    announce(w, policy, rate, o_.duration_s);
    return sim::drive(**t, w, drive_options_of(o_, policy, rate));
  }

  std::string describe() const override { return "front door " + o_.target + " (ZeroMQ API)"; }
  std::string model() const override { return "served by " + o_.target; }

private:
  sim_options& o_;
};

} // namespace

result<std::unique_ptr<live_backend>> make_live_backend(sim_options& o) {
  auto kind = o.target_scheme();
  if (!kind)
    return std::move(kind).err();
  switch (*kind) {
  case target_kind::in_process:
    return std::unique_ptr<live_backend>{std::make_unique<in_process_backend>(o)};
  case target_kind::http: {
    auto endpoint = sim::parse_http_url(o.target);
    if (!endpoint)
      return make_error(endpoint.err().code, "--target: ", endpoint.err().message);
    auto s = sim::connect_front_door(*endpoint, o.api_key,
                                     std::chrono::seconds{int64_t(o.connect_timeout_s)});
    if (!s)
      return make_error(s.err().code, "--target: ", s.err().message);
    return std::unique_ptr<live_backend>{std::make_unique<http_backend>(o, std::move(*s))};
  }
  case target_kind::zmq:
    return std::unique_ptr<live_backend>{std::make_unique<zmq_backend>(o)};
  }
  return make_error(errc::internal, "unknown target kind");
}

} // namespace mosaic::cli
