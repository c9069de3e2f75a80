// `--target zmq://`: the simulator's driver against a real front door's
// ZeroMQ API (builtin:tiny on 127.0.0.1, ephemeral ports). Every request
// of a small workload comes back with its tokens and the server's token
// counts; a bad URL is a clear error.

// GCC 12 at -O3 reports a false maybe-uninitialized inside std::variant's
// copy of wire::segment (see tests/actors/pipeline_test.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <gtest/gtest.h>

#include "sim/driver.hpp"
#include "sim/zmq_target.hpp"
#include "tests/server/live_front_door.hpp"

namespace mosaic::sim {
namespace {

using namespace std::chrono_literals;

TEST(zmq_target, drives_a_real_front_door) {
  auto door = server::test::live_front_door::start("mosaic_sim_zmq_lib", {}, {});
  ASSERT_TRUE(door) << door.err().to_string();

  auto spec = load_workload_spec("mmdu", builtin_workload_dir());
  ASSERT_TRUE(spec) << spec.err().to_string();
  spec->image_size = 56;
  arrival_spec a = spec->arrivals;
  a.rate = 20;
  a.duration_s = 1;
  a.max_requests = 6;
  auto w = generate_workload(*spec, a, 3, {2, 2, 4});
  ASSERT_TRUE(w) << w.err().to_string();
  ASSERT_FALSE(w->requests.empty());

  auto t = zmq_target::connect("zmq://127.0.0.1:" + std::to_string((*door)->zmq->port()), *w, {});
  ASSERT_TRUE(t) << t.err().to_string();
  EXPECT_NE((*t)->describe().find("zmq://"), std::string::npos);
  drive_options d;
  d.drain_timeout = 60s;
  auto run = drive(**t, *w, d);
  ASSERT_EQ(run.records.size(), w->requests.size());
  for (const auto& r : run.records) {
    EXPECT_TRUE(r.ok) << r.id << ": " << r.error;
    EXPECT_GE(r.output_tokens, 1);
    EXPECT_EQ(size_t(r.output_tokens), r.token_times_s.size());
    EXPECT_GT(r.prompt_tokens, r.image_tokens);
    EXPECT_EQ(r.image_tokens, r.n_images * (*door)->service->info().image_tokens);
    EXPECT_GE(r.first_token_s, r.sent_s);
  }
  EXPECT_EQ(run.summary.completed, int64_t(w->requests.size()));

  auto bad = zmq_target::connect("http://127.0.0.1:1", *w, {});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("zmq://HOST:PORT"), std::string::npos);
}

} // namespace
} // namespace mosaic::sim
