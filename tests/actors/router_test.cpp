// The router's admission alone, against a linker stand-in that holds its
// requests until told to answer: no model, no threads beyond CAF's, so
// the order of events is controlled by the test.

#include <chrono>
#include <memory>
#include <vector>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "actors/local_cluster.hpp"
#include "actors/pipeline_messages.hpp"
#include "actors/router_actor.hpp"
#include "messages/readers.hpp"
#include "topology/loader.hpp"

namespace mosaic::actors {
namespace {

using namespace std::chrono_literals;

struct held_state {
  std::vector<caf::typed_response_promise<token_event_msg>> held;
  int credits = 0; ///< answers granted by ok_atom, not yet given
  static inline const char* name = "held_linker";
};

/// Answers held requests while it has credits.
void answer_held(held_state& st) {
  while (st.credits > 0 && !st.held.empty()) {
    wire::token_event ev;
    ev.finish = msg::FinishReason::stop;
    st.held.front().deliver(make_token_event_msg(ev));
    st.held.erase(st.held.begin());
    --st.credits;
  }
}

/// Holds every generate request; each `ok_atom` grants one answer, given
/// to the oldest held request now or to the next one that arrives.
caf::behavior held_linker(caf::stateful_actor<held_state>* self, int /*unused*/) {
  return {
      [self](generate_atom, const generate_request_msg&,
             const caf::actor&) -> caf::result<token_event_msg> {
        auto rp = self->make_response_promise<token_event_msg>();
        self->state.held.push_back(rp);
        answer_held(self->state);
        return rp;
      },
      [self](caf::ok_atom) {
        ++self->state.credits;
        answer_held(self->state);
      },
  };
}

class router_test : public ::testing::Test {
protected:
  router_test() {
    init_message_types(cfg_);
    cfg_.set("scheduler.max-threads", 2);
    cfg_.set("logger.console", caf::atom("none"));
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    ctx_ = std::make_unique<node_context>();
    ctx_->options.max_inflight = 1;
    ctx_->options.max_queue = 1;
    linker_ = sys_->spawn(held_linker, 0);
    router_ = spawn_router(*sys_, ctx_.get(), router_peers{linker_, nullptr, {}, nullptr, {}, nullptr});
  }
  ~router_test() override {
    caf::anon_send_exit(router_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(linker_, caf::exit_reason::user_shutdown);
  }

  generate_request_msg request(int64_t deadline_unix_ns) {
    wire::generate_request r;
    r.tenant = "alice";
    r.deadline_unix_ns = deadline_unix_ns;
    r.segments.push_back(wire::text_segment{"hi"});
    return make_generate_request_msg(r);
  }

  /// The next answer to `self`: the router's error code, or none for an event.
  errc answer(caf::scoped_actor& self) {
    errc got = errc::internal;
    self->receive([&](const token_event_msg&) { got = errc::none; },
                  [&](const caf::error& err) { got = from_caf_error(err).code; },
                  caf::after(10s) >> [&] { got = errc::unavailable; });
    return got;
  }

  caf::actor_system_config cfg_;
  std::unique_ptr<node_context> ctx_; // outlives the actor system
  std::unique_ptr<caf::actor_system> sys_;
  caf::actor linker_;
  caf::actor router_;
};

TEST_F(router_test, a_full_router_queues_then_refuses_and_never_drops) {
  caf::scoped_actor running{*sys_};
  caf::scoped_actor waiting{*sys_};
  caf::scoped_actor refused{*sys_};
  const int64_t far = unix_now_ns() + int64_t(60) * 1'000'000'000;
  running->send(router_, generate_atom_v, request(far), caf::actor{});
  // The queue holds one request, which waits 100 ms and then fails.
  waiting->send(router_, generate_atom_v, request(unix_now_ns() + 100'000'000), caf::actor{});
  // The queue is full: the third fails at once.
  const auto t0 = std::chrono::steady_clock::now();
  refused->send(router_, generate_atom_v, request(far), caf::actor{});
  EXPECT_EQ(answer(refused), errc::overloaded);
  EXPECT_EQ(answer(waiting), errc::overloaded);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
  caf::anon_send(linker_, caf::ok_atom_v);
  EXPECT_EQ(answer(running), errc::none);
  EXPECT_EQ(ctx_->counters.overloaded.load(), 2u);
  EXPECT_EQ(ctx_->counters.completed.load(), 1u);
  EXPECT_EQ(ctx_->counters.requests.load(), 3u);
}

TEST_F(router_test, a_waiting_request_is_admitted_when_a_slot_frees) {
  caf::scoped_actor first{*sys_};
  caf::scoped_actor second{*sys_};
  const int64_t far = unix_now_ns() + int64_t(60) * 1'000'000'000;
  first->send(router_, generate_atom_v, request(far), caf::actor{});
  second->send(router_, generate_atom_v, request(far), caf::actor{});
  caf::anon_send(linker_, caf::ok_atom_v); // answers the first
  EXPECT_EQ(answer(first), errc::none);
  caf::anon_send(linker_, caf::ok_atom_v); // the second was admitted meanwhile
  EXPECT_EQ(answer(second), errc::none);
  EXPECT_EQ(ctx_->counters.overloaded.load(), 0u);
}

} // namespace
} // namespace mosaic::actors

namespace mosaic::actors {
namespace {

TEST(node_options_test, the_single_cpu_topology_fills_every_role) {
  auto topo = load_topology(std::string{MOSAIC_SOURCE_DIR} + "/deploy/topologies/single-cpu.yaml");
  ASSERT_TRUE(topo) << topo.err().to_string();
  auto o = node_options_from_topology(*topo);
  ASSERT_TRUE(o) << o.err().to_string();
  EXPECT_EQ(o->model, "builtin:small");
  EXPECT_EQ(o->default_policy.to_string(), "mpic:32");
  EXPECT_EQ(o->decode_max_batch, 16);
  EXPECT_EQ(o->prefill_max_tokens, 0); // the model's context
  EXPECT_EQ(o->prefill_chunk_tokens, 2048);
  EXPECT_TRUE(o->prefix_caching);
  EXPECT_EQ(o->io, kv::io_mode::pread);
  EXPECT_EQ(o->max_inflight, 256);
  EXPECT_FALSE(o->library_dir.empty());
  EXPECT_EQ(o->library_dir.filename(), "library");
}

TEST(node_options_test, a_node_missing_a_role_is_refused_with_the_fix) {
  // Valid, but its "front" node runs no kv_loader, linker, prefill or decode.
  auto topo =
      load_topology(std::string{MOSAIC_SOURCE_DIR} + "/deploy/topologies/three-process.yaml");
  ASSERT_TRUE(topo) << topo.err().to_string();
  auto o = node_options_from_topology(*topo, "front");
  ASSERT_FALSE(o);
  EXPECT_EQ(o.err().code, errc::unsupported);
  EXPECT_NE(o.err().message.find("kv_loader"), std::string::npos) << o.err().message;
  EXPECT_EQ(node_options_from_topology(*topo, "nowhere").err().code, errc::not_found);
}

} // namespace
} // namespace mosaic::actors
