// The wrappers are registered with CAF: they serialize through CAF's binary
// serializer (what crosses nodes), the loading side verifies the buffer,
// errc maps to caf::error and back, and an actor answers a wrapped request.

#include <chrono>
#include <memory>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <gtest/gtest.h>

#include "messages/caf_types.hpp"
#include "messages/readers.hpp"
#include "tests/messages/message_samples.hpp"

namespace mosaic {
namespace {

using namespace std::chrono_literals;

class caf_types_test : public ::testing::Test {
protected:
  caf_types_test() {
    init_message_types(cfg_);
    cfg_.set("scheduler.max-threads", 2);
    cfg_.set("logger.console", caf::atom("none"));
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    rng_.seed(seed_);
  }

  /// Serializes `x` with CAF's binary serializer.
  template <class T>
  std::vector<char> save(T& x) {
    std::vector<char> buf;
    caf::binary_serializer sink{*sys_, buf};
    auto err = sink(x);
    EXPECT_FALSE(err) << sys_->render(err);
    return buf;
  }

  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  uint64_t seed_ = test::fresh_seed();
  test::rng_t rng_;
};

TEST_F(caf_types_test, every_message_type_round_trips_through_the_binary_serializer) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  int n_types = 0;
  test::for_each_sample(rng_, [&](const auto& m) {
    using msg_type = std::decay_t<decltype(m)>;
    ++n_types;
    // A whole caf::message, as BASP ships it: atoms and wrappers by name.
    caf::message out = caf::make_message(generate_atom_v, m);
    auto buf = save(out);
    caf::message in;
    caf::binary_deserializer source{*sys_, buf};
    auto err = source(in);
    ASSERT_FALSE(err) << m.name() << ": " << sys_->render(err);
    ASSERT_TRUE((in.match_elements<generate_atom, msg_type>())) << m.name();
    EXPECT_EQ(in.get_as<msg_type>(1), m) << m.name();
  });
  EXPECT_EQ(n_types, 23);
}

TEST_F(caf_types_test, a_corrupt_buffer_fails_deserialization_with_corrupt_data) {
  auto m = make_generate_request_msg(test::random_generate_request(rng_));
  auto buf = save(m);
  // Damage the FlatBuffers identifier inside CAF's payload.
  std::string_view view{buf.data(), buf.size()};
  auto at = view.find("MGEN");
  ASSERT_NE(at, std::string_view::npos);
  buf[at] = 'X';

  generate_request_msg back;
  caf::binary_deserializer source{*sys_, buf};
  auto err = source(back);
  ASSERT_TRUE(err);
  EXPECT_EQ(err.category(), caf_error_category);
  auto mosaic_err = from_caf_error(err);
  EXPECT_EQ(mosaic_err.code, errc::corrupt_data);
  EXPECT_NE(mosaic_err.message.find("mosaic.msg.GenerateRequest"), std::string::npos);
  EXPECT_TRUE(back.empty()) << "a rejected buffer must not reach the message";
}

TEST_F(caf_types_test, a_huge_announced_size_is_rejected_before_allocating) {
  std::vector<char> buf;
  caf::binary_serializer sink{*sys_, buf};
  uint64_t huge = uint64_t{1} << 40; // 1 TiB
  ASSERT_FALSE(sink(huge));
  generate_request_msg back;
  caf::binary_deserializer source{*sys_, buf};
  auto err = from_caf_error(source(back));
  EXPECT_EQ(err.code, errc::corrupt_data);
  EXPECT_NE(err.message.find("over the limit"), std::string::npos) << err.message;
}

TEST_F(caf_types_test, a_truncated_caf_payload_is_an_error) {
  auto m = make_generate_request_msg(test::random_generate_request(rng_));
  auto buf = save(m);
  for (size_t len : {size_t{0}, size_t{4}, buf.size() / 2, buf.size() - 1}) {
    generate_request_msg back;
    caf::binary_deserializer source{*sys_, buf.data(), len};
    EXPECT_TRUE(source(back)) << "a " << len << "-byte prefix loaded";
    EXPECT_TRUE(back.empty());
  }
}

TEST_F(caf_types_test, every_errc_maps_to_caf_error_and_back) {
  for (int c = 1; c <= 12; ++c) {
    error err{static_cast<errc>(c), "detail " + std::to_string(c)};
    caf::error ce = to_caf_error(err);
    ASSERT_TRUE(ce);
    EXPECT_EQ(ce.category(), caf::atom("mosaic"));
    EXPECT_EQ(ce.code(), c);
    auto back = from_caf_error(ce);
    EXPECT_EQ(back.code, err.code);
    EXPECT_EQ(back.message, err.message);
    // The rendered text names the code and carries the message.
    auto text = sys_->render(ce);
    EXPECT_NE(text.find(to_string(err.code)), std::string::npos) << text;
    EXPECT_NE(text.find(err.message), std::string::npos) << text;
    // caf::error built directly from the enum is the same error.
    EXPECT_EQ(caf::error(err.code, err.message), ce);
  }
  EXPECT_FALSE(to_caf_error(error{}));
  EXPECT_EQ(from_caf_error(caf::error{}).code, errc::none);
  EXPECT_EQ(from_caf_error(caf::sec::request_timeout).code, errc::timeout);
  EXPECT_EQ(from_caf_error(caf::sec::request_receiver_down).code, errc::unavailable);
  EXPECT_EQ(from_caf_error(caf::sec::runtime_error).code, errc::internal);
}

/// Answers generate requests with one token event whose text is `prefix`
/// plus the tenant; refuses anonymous tenants; never answers cancel (to
/// exercise request timeouts). Spawned with an argument because CAF 0.17.6
/// binds a reference to a null tuple for argument-less function actors
/// (UBSan reports it inside caf/detail/init_fun_factory.hpp).
caf::behavior token_server(caf::event_based_actor* self, std::string prefix) {
  return {
      [prefix](generate_atom, const generate_request_msg& m) -> caf::result<token_event_msg> {
        auto req = read_generate_request(m);
        if (!req)
          return to_caf_error(req.err());
        if (req->tenant.empty())
          return to_caf_error(make_error(errc::permission_denied, "request ",
                                         std::to_string(req->request_id), " has no tenant"));
        return make_token_event_msg({.request_id = req->request_id,
                                     .index = 0,
                                     .token_id = static_cast<int32_t>(req->segments.size()),
                                     .text = prefix + req->tenant});
      },
      [self](cancel_atom, const cancel_msg&) -> caf::result<caf::unit_t> {
        return self->make_response_promise<caf::unit_t>(); // never delivered
      },
  };
}

TEST_F(caf_types_test, an_actor_answers_a_wrapped_request) {
  auto server = sys_->spawn(token_server, "");
  caf::scoped_actor self{*sys_};
  auto req = test::random_generate_request(rng_);
  req.tenant = "acme";
  bool answered = false;
  self->request(server, 5s, generate_atom_v, make_generate_request_msg(req))
      .receive(
          [&](const token_event_msg& ev) {
            answered = true;
            EXPECT_EQ(ev->request_id(), req.request_id);
            EXPECT_EQ(ev->token_id(), static_cast<int32_t>(req.segments.size()));
            EXPECT_EQ(ev->text()->str(), "acme");
          },
          [&](caf::error& err) { FAIL() << sys_->render(err); });
  EXPECT_TRUE(answered);
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

TEST_F(caf_types_test, an_actor_error_reaches_the_caller_as_a_mosaic_error) {
  auto server = sys_->spawn(token_server, "");
  caf::scoped_actor self{*sys_};
  error got;
  self->request(server, 5s, generate_atom_v, make_generate_request_msg({.request_id = 31}))
      .receive([&](const token_event_msg&) { ADD_FAILURE() << "anonymous request was served"; },
               [&](caf::error& err) { got = from_caf_error(err); });
  EXPECT_EQ(got.code, errc::permission_denied);
  EXPECT_EQ(got.message, "request 31 has no tenant");
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

TEST_F(caf_types_test, an_unanswered_request_times_out_as_errc_timeout) {
  auto server = sys_->spawn(token_server, "");
  caf::scoped_actor self{*sys_};
  error got;
  self->request(server, 50ms, cancel_atom_v, make_cancel_msg(1, "test"))
      .receive([&](caf::unit_t) { ADD_FAILURE() << "no reply expected"; },
               [&](caf::error& err) { got = from_caf_error(err); });
  EXPECT_EQ(got.code, errc::timeout);
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

/// Runs in a forked child: publishes a token_server on a loopback port,
/// writes the port to `port_fd`, serves until `stop_fd` reaches EOF.
[[noreturn]] void serve_in_child(int port_fd, int stop_fd) {
  caf::actor_system_config cfg;
  init_message_types(cfg);
  init_network(cfg);
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  auto server = sys.spawn(token_server, "remote:");
  auto port = sys.middleman().publish(server, 0, "127.0.0.1");
  uint16_t p = port ? *port : 0;
  if (write(port_fd, &p, sizeof(p)) != sizeof(p))
    _exit(2);
  char c = 0;
  while (read(stop_fd, &c, 1) > 0) {
  }
  _exit(port ? 0 : 1);
}

TEST(caf_remote_test, a_wrapped_request_crosses_processes) {
  // Another process, so that the two actor systems are distinct nodes and
  // the messages really go through BASP (type names + binary serializer).
  int port_pipe[2];
  int stop_pipe[2];
  ASSERT_EQ(pipe(port_pipe), 0);
  ASSERT_EQ(pipe(stop_pipe), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(port_pipe[0]);
    close(stop_pipe[1]);
    serve_in_child(port_pipe[1], stop_pipe[0]);
  }
  close(port_pipe[1]);
  close(stop_pipe[0]);
  auto stop_child = [&] {
    close(stop_pipe[1]);
    int wstatus = 0;
    waitpid(child, &wstatus, 0);
    return wstatus;
  };

  pollfd pfd{port_pipe[0], POLLIN, 0};
  uint16_t port = 0;
  if (poll(&pfd, 1, 10000) != 1 || read(port_pipe[0], &port, sizeof(port)) != sizeof(port) ||
      port == 0) {
    stop_child();
    FAIL() << "the child process did not publish its actor";
  }
  close(port_pipe[0]);

  {
    caf::actor_system_config cfg;
    init_message_types(cfg);
    init_network(cfg);
    cfg.set("scheduler.max-threads", 2);
    caf::actor_system sys{cfg};
    auto server = sys.middleman().remote_actor("127.0.0.1", port);
    ASSERT_TRUE(server) << sys.render(server.error());
    caf::scoped_actor self{sys};

    wire::generate_request req{.request_id = 77, .tenant = "acme"};
    req.segments.push_back(wire::text_segment{"describe"});
    self->request(*server, 5s, generate_atom_v, make_generate_request_msg(req))
        .receive(
            [&](const token_event_msg& ev) {
              EXPECT_EQ(ev->request_id(), 77u);
              EXPECT_EQ(ev->text()->str(), "remote:acme");
            },
            [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });

    error got;
    self->request(*server, 5s, generate_atom_v, make_generate_request_msg({.request_id = 78}))
        .receive([&](const token_event_msg&) { ADD_FAILURE() << "anonymous request was served"; },
                 [&](caf::error& err) { got = from_caf_error(err); });
    EXPECT_EQ(got.code, errc::permission_denied);
    EXPECT_EQ(got.message, "request 78 has no tenant");
  }
  EXPECT_EQ(stop_child(), 0);
}

} // namespace
} // namespace mosaic
