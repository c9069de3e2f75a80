#pragma once

// The real front door for integration tests: a builtin:tiny cluster in
// this process with HTTP and the ZeroMQ API on 127.0.0.1, ephemeral
// ports. Tests tweak the node and HTTP options; `two_tenants()` gives the
// keys of tenants alice and bob.
//
//   auto door = test::live_front_door::start("mosaic_x_lib", node_tweak, options);
//   test::loopback_client(door->http->port());  api::api_client::connect(door->zmq->endpoint());

#include <functional>
#include <memory>
#include <string>

#include "server/cluster_service.hpp"
#include "server/http_server.hpp"
#include "server/zmq_server.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace mosaic::server::test {

inline constexpr const char* alice_key = "sk-alice-0001";
inline constexpr const char* bob_key = "sk-bob-00002";

/// API keys of tenants "alice" (alice_key) and "bob" (bob_key).
inline api_keys two_tenants() {
  auto keys = api_keys::parse(std::string{alice_key} + " alice\n" + bob_key + " bob\n", "test");
  return keys ? *keys : api_keys{};
}

struct live_front_door {
  std::unique_ptr<actors::test::temp_dir> library;
  std::unique_ptr<actors::local_cluster> cluster;
  std::unique_ptr<cluster_service> service;
  std::unique_ptr<http_server> http;
  std::unique_ptr<zmq_server> zmq;

  /// Starts it, or returns the error of the piece that failed. `node`
  /// adjusts actors::test::tiny_options; `options.port` is set to 0.
  static result<std::unique_ptr<live_front_door>>
  start(const std::string& name, const std::function<void(actors::node_options&)>& node,
        http_options options) {
    auto d = std::make_unique<live_front_door>();
    d->library = std::make_unique<actors::test::temp_dir>(name);
    auto opts = actors::test::tiny_options(d->library->path());
    if (node)
      node(opts);
    auto c = actors::local_cluster::start(opts);
    if (!c)
      return std::move(c).err();
    d->cluster = std::move(*c);
    d->service = std::make_unique<cluster_service>(*d->cluster, "builtin:tiny");
    options.port = 0;
    auto h = http_server::start(std::move(options), *d->service);
    if (!h)
      return std::move(h).err();
    d->http = std::move(*h);
    auto z = zmq_server::start({"127.0.0.1", 0}, *d->http);
    if (!z)
      return std::move(z).err();
    d->zmq = std::move(*z);
    return d;
  }

  ~live_front_door() { // the servers stop before what they serve goes
    zmq.reset();
    http.reset();
    service.reset();
    cluster.reset();
  }
};

} // namespace mosaic::server::test
