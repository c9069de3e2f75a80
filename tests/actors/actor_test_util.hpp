#pragma once

// Shared set-up of the actor tests: builtin:tiny in a private MOSAIC_HOME,
// a fresh KV library per cluster, random images, greedy requests.

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <future>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "actors/local_cluster.hpp"
#include "topology/topology.hpp"
#include "engine/model/image.hpp"
#include "engine/model/random_image.hpp"
#include "tests/support/temp_dir.hpp"

namespace mosaic::actors::test {

using namespace std::chrono_literals;

using mosaic::testing::temp_dir;

/// Points MOSAIC_HOME at a directory shared by one test program, so that
/// builtin:tiny is generated once.
inline const std::filesystem::path& test_home() {
  static temp_dir home{"mosaic_actors_home"};
  static bool set = [] {
    ::setenv("MOSAIC_HOME", home.path().c_str(), 1);
    return true;
  }();
  (void)set;
  return home.path();
}

/// Options of a builtin:tiny node whose library lives in `library`.
inline node_options tiny_options(const std::filesystem::path& library) {
  test_home();
  node_options o;
  o.model = "builtin:tiny";
  o.threads = 1;
  o.pool_bytes = uint64_t(8) << 20;
  o.library_dir = library;
  o.io = kv::io_mode::pread;
  o.queue_depth = 4;
  o.default_deadline_ms = 20000;
  return o;
}

/// A random PNG of the tiny model's image size (56 x 56).
inline std::vector<uint8_t> random_png(std::mt19937_64& rng, int size = 56) {
  return mosaic::random_png(rng, size);
}

/// A greedy request: text, the images (as bytes), more text.
inline wire::generate_request greedy_request(const std::vector<std::vector<uint8_t>>& images,
                                             const std::string& policy, uint32_t max_tokens,
                                             const std::string& tenant = "alice") {
  wire::generate_request r;
  r.tenant = tenant;
  r.reuse_policy = policy;
  r.sampling.temperature = 0.0f;
  r.sampling.seed = 7;
  r.sampling.max_tokens = max_tokens;
  r.stream = true;
  r.segments.push_back(wire::text_segment{"Look at these: "});
  for (const auto& img : images) {
    r.segments.push_back(wire::image_data_segment{img, "image/png"});
    r.segments.push_back(wire::text_segment{" and "});
  }
  r.segments.push_back(wire::text_segment{"what do you see?"});
  return r;
}

inline uint64_t fresh_seed() {
  return std::random_device{}();
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
template <class F>
bool eventually(F&& cond, std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (cond())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

/// Ends a multi-node test's process without tearing its joined nodes
/// down: in one process a node's handles to its peers' actors can be the
/// actors themselves, and tearing down one of several joined systems
/// sometimes waits for the others (`mosaic node` runs one node per
/// process). Such tests run one case per process (CMake CASES).
inline void end_process_keeping_nodes() {
  std::fflush(stdout);
  std::_Exit(::testing::Test::HasFailure() ? 1 : 0);
}

/// Joins the nodes `names` of `topo` in this process, all at once (each
/// join returns once every peer answers), into `slots` (one per name).
/// Quiet, 30 s to connect. On an error the test fails and its process
/// ends (end_process_keeping_nodes): nothing runs on half a cluster.
inline void join_nodes(const topology& topo, const std::vector<std::string>& names,
                       const std::vector<std::unique_ptr<local_cluster>*>& slots) {
  join_options jo;
  jo.quiet = true;
  jo.connect_timeout = std::chrono::seconds{30};
  std::vector<std::future<result<std::unique_ptr<local_cluster>>>> joins;
  for (const auto& name : names)
    joins.push_back(std::async(std::launch::async,
                               [&topo, name, jo] { return local_cluster::join(topo, name, jo); }));
  bool failed = false;
  for (size_t i = 0; i < joins.size(); ++i) {
    auto c = joins[i].get();
    EXPECT_TRUE(c) << names[i] << ": " << c.err().to_string();
    if (c)
      *slots[i] = std::move(*c);
    failed = failed || !c;
  }
  if (failed)
    end_process_keeping_nodes();
}

} // namespace mosaic::actors::test
