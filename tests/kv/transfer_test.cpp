// The host KV data plane: bytes arrive whole and in place, per layer;
// flow control bounds what a sender has in flight; corrupt, hostile or
// silent peers fail only their own transfer, with a clear error, and
// leave the receiver serving others.

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "kv/transfer/receiver.hpp"
#include "kv/transfer/sender.hpp"
#include "kv/transfer/wire.hpp"

// A scalar XXH3 as the reference for the vectorised hashing (header-only:
// static, XXH_INLINE_-prefixed symbols).
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_SCALAR
#include <xxhash.h>

namespace mosaic::kv::transfer {
namespace {

using namespace std::chrono_literals;

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng{seed};
  std::vector<std::byte> out(n);
  for (auto& b : out)
    b = static_cast<std::byte>(rng());
  return out;
}

std::span<const std::byte> as_span(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

/// A hand-driven DEALER peer, to send what a real sender never would.
struct raw_peer {
  zmq::socket_t socket;
  raw_peer(zmq::context_t& ctx, const std::string& endpoint)
    : socket(ctx, zmq::socket_type::dealer) {
    socket.set(zmq::sockopt::linger, 0);
    socket.connect(endpoint);
  }
  void send(const frame_header& h, std::span<const std::byte> payload = {}) {
    auto head = encode(h);
    socket.send(zmq::buffer(head.data(), head.size()), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(payload.data(), payload.size()));
  }
  void send_begin(uint64_t id, uint32_t layers, uint64_t bytes) {
    auto p = encode(begin_payload{layers, bytes});
    send({frame_kind::begin, id}, p);
  }
  /// The next answer's header (and payload), or nullopt after 2 s.
  std::optional<frame_header> answer(std::string* payload = nullptr) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 2000ms) == 0)
      return std::nullopt;
    zmq::message_t head, body;
    (void)socket.recv(head);
    if (head.more())
      (void)socket.recv(body);
    if (payload)
      payload->assign(static_cast<const char*>(body.data()), body.size());
    auto h = decode_header({static_cast<const std::byte*>(head.data()), head.size()});
    return h ? std::optional{*h} : std::nullopt;
  }
};

struct transfer_test : ::testing::Test {
  zmq::context_t ctx{1};
  receiver_options ropts;
  std::unique_ptr<kv_receiver> receiver;

  void start() {
    auto r = kv_receiver::bind(ctx, "tcp://127.0.0.1:*", ropts);
    ASSERT_TRUE(r) << r.err().to_string();
    receiver = std::move(*r);
  }
  std::unique_ptr<kv_sender> sender(sender_options o = {}) {
    auto s = kv_sender::connect(ctx, receiver->endpoint(), o);
    EXPECT_TRUE(s);
    return std::move(*s);
  }
  /// A complete, verified transfer works after whatever the test did.
  void expect_still_serving(uint64_t id) {
    auto s = sender();
    auto data = random_bytes(5000, 99);
    ASSERT_TRUE(s->begin(id, 2, 2500));
    ASSERT_TRUE(s->send_layer(0, std::span{data}.first(2500)));
    ASSERT_TRUE(s->send_layer(1, std::span{data}.subspan(2500)));
    ASSERT_TRUE(s->finish());
    auto kv = receiver->take(id, 1s);
    ASSERT_TRUE(kv);
    ASSERT_TRUE((*kv)->wait_all(1s));
    EXPECT_EQ(0, std::memcmp((*kv)->layer(1).data(), data.data() + 2500, 2500));
  }
};

TEST_F(transfer_test, layers_arrive_whole_in_place_and_in_any_order) {
  start();
  sender_options so;
  so.chunk_bytes = 64 << 10; // several chunks per layer, uneven last chunk
  auto s = sender(so);
  const uint32_t layers = 5;
  const uint64_t layer_bytes = 300'001;
  auto data = random_bytes(layers * layer_bytes, 1);
  std::string meta = "decode-task-bytes";

  std::thread consumer_thread;
  std::vector<bool> seen(layers, false);
  ASSERT_TRUE(s->begin(42, layers, layer_bytes, as_span(meta)));
  consumer_thread = std::thread([&] {
    auto kv = receiver->take(42, 2s);
    ASSERT_TRUE(kv) << kv.err().to_string();
    EXPECT_EQ((*kv)->meta(), meta);
    for (uint32_t l : {4u, 0u, 2u, 1u, 3u}) { // waits in another order than sent
      auto ready = (*kv)->wait_layer(l, 5s);
      ASSERT_TRUE(ready) << "layer " << l << ": " << ready.err().to_string();
      EXPECT_EQ(0, std::memcmp((*kv)->layer(l).data(), data.data() + l * layer_bytes, layer_bytes))
          << "layer " << l;
      seen[l] = true;
    }
    EXPECT_TRUE((*kv)->wait_all(5s));
  });
  for (uint32_t l : {0u, 2u, 1u, 4u, 3u}) {
    auto sent = s->send_layer(l, std::span{data}.subspan(l * layer_bytes, layer_bytes));
    EXPECT_TRUE(sent) << "layer " << l << ": " << sent.err().to_string();
  }
  auto finished = s->finish();
  EXPECT_TRUE(finished) << finished.err().to_string();
  consumer_thread.join();
  EXPECT_EQ(seen, std::vector<bool>(layers, true));
  EXPECT_EQ(s->stats().bytes, layers * layer_bytes);
  EXPECT_EQ(receiver->stats().transfers, 1u);
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u); // the consumer let go
}

TEST_F(transfer_test, sender_never_exceeds_granted_credit) {
  // A receiver that accepts with 2 credits and never grants more.
  zmq::socket_t fake(ctx, zmq::socket_type::router);
  fake.set(zmq::sockopt::linger, 0);
  fake.bind("tcp://127.0.0.1:*");
  auto endpoint = fake.get(zmq::sockopt::last_endpoint);
  sender_options so;
  so.chunk_bytes = 1000;
  so.peer_timeout = 300ms;
  auto s = kv_sender::connect(ctx, endpoint, so);
  ASSERT_TRUE(s);
  std::thread fake_receiver([&] {
    zmq::message_t id, head, body;
    (void)fake.recv(id);
    (void)fake.recv(head);
    (void)fake.recv(body);
    auto h = encode(frame_header{frame_kind::accept, 1, 0, 0, 2, 0});
    fake.send(id, zmq::send_flags::sndmore);
    fake.send(zmq::buffer(h.data(), h.size()), zmq::send_flags::sndmore);
    fake.send(zmq::message_t{}, zmq::send_flags::none);
  });
  EXPECT_FALSE((*s)->ready_for(1)) << "no transfer begun";
  ASSERT_TRUE((*s)->begin(1, 1, 10'000));
  fake_receiver.join();
  // ready_for says whether a send would wait: 2 chunks fit the credit, 3 do
  // not (the prefill worker releases the compute lock on false).
  EXPECT_TRUE((*s)->ready_for(2'000));
  EXPECT_FALSE((*s)->ready_for(2'001));
  EXPECT_FALSE((*s)->ready_for(10'000));
  auto data = random_bytes(10'000, 2);
  auto t0 = std::chrono::steady_clock::now();
  auto st = (*s)->send_layer(0, data);
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::unavailable) << st.err().to_string();
  EXPECT_EQ((*s)->stats().chunks, 2u); // exactly the granted credit
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 3s);
}

TEST_F(transfer_test, corrupt_chunk_fails_that_transfer_only) {
  start();
  raw_peer peer(ctx, receiver->endpoint());
  peer.send_begin(7, 1, 100);
  ASSERT_EQ(peer.answer()->kind, frame_kind::accept);
  auto data = random_bytes(100, 3);
  frame_header h{frame_kind::chunk, 7, 0, 0, 100, checksum(data) ^ 1};
  peer.send(h, data);
  std::string why;
  auto a = peer.answer(&why);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->kind, frame_kind::error);
  EXPECT_NE(decode_error(as_span(why)).message.find("checksum"), std::string::npos);
  auto kv = receiver->take(7, 1s);
  ASSERT_TRUE(kv);
  auto st = (*kv)->wait_layer(0, 1s);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::corrupt_data);
  EXPECT_EQ(receiver->stats().checksum_failures, 1u);
  expect_still_serving(8);
}

TEST_F(transfer_test, chunk_out_of_place_is_refused) {
  start();
  raw_peer peer(ctx, receiver->endpoint());
  peer.send_begin(9, 2, 100);
  ASSERT_EQ(peer.answer()->kind, frame_kind::accept);
  auto data = random_bytes(60, 4);
  // Past the end of the layer, a layer that does not exist, a gap.
  for (auto [layer, offset] : {std::pair{0u, 50ull}, std::pair{5u, 0ull}, std::pair{1u, 10ull}}) {
    peer.send_begin(10 + layer, 2, 100);
    ASSERT_EQ(peer.answer()->kind, frame_kind::accept);
    peer.send({frame_kind::chunk, 10 + layer, layer, offset, 60, checksum(data)}, data);
    auto a = peer.answer();
    ASSERT_TRUE(a);
    EXPECT_EQ(a->kind, frame_kind::error) << layer << "@" << offset;
  }
  expect_still_serving(20);
}

TEST_F(transfer_test, hostile_sizes_and_garbage_get_errors_and_reserve_nothing) {
  ropts.max_transfer_bytes = 1 << 20;
  start();
  auto s = sender();
  for (auto [layers, bytes] : {std::pair{0u, 10ull}, std::pair{1u, 0ull}, std::pair{4096u, 10ull},
                               std::pair{2u, ~0ull / 2}}) {
    auto st = s->begin(1, layers, bytes);
    EXPECT_FALSE(st) << layers << " x " << bytes;
  }
  raw_peer peer(ctx, receiver->endpoint());
  auto junk = random_bytes(48, 5);
  peer.send({frame_kind::begin, 3}, std::span{junk}.first(4)); // payload too short
  EXPECT_EQ(peer.answer()->kind, frame_kind::error);
  peer.socket.send(zmq::buffer(junk.data(), junk.size())); // not a Mosaic frame at all
  EXPECT_EQ(peer.answer()->kind, frame_kind::error);
  peer.send({frame_kind::accept, 4}); // a receiver's frame sent to the receiver
  EXPECT_EQ(peer.answer()->kind, frame_kind::error);
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  expect_still_serving(30);
}

TEST_F(transfer_test, an_oversized_frame_drops_its_peer_before_allocation) {
  ropts.max_frame_bytes = 1 << 20;
  start();
  raw_peer peer(ctx, receiver->endpoint());
  // One 4 MiB part: libzmq reads its length first and drops the peer
  // (ZMQ_MAXMSGSIZE), so nothing answers and nothing is reserved.
  std::vector<std::byte> big(4 << 20, std::byte{7});
  peer.send({frame_kind::begin, 5}, big);
  EXPECT_FALSE(peer.answer()) << "the receiver answered an oversized frame";
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  EXPECT_EQ(receiver->stats().transfers, 0u);
  expect_still_serving(31);
}

/// A fresh CURVE key pair (Z85 public, secret).
std::pair<std::string, std::string> curve_pair() {
  char pub[41], sec[41];
  EXPECT_EQ(zmq_curve_keypair(pub, sec), 0);
  return {pub, sec};
}

TEST_F(transfer_test, with_curve_only_listed_peers_get_through) {
  const auto server = curve_pair(), member = curve_pair(), stranger = curve_pair();
  ropts.curve = receiver_options::curve_keys{server.second, {member.first}};
  start();
  sender_options o;
  o.peer_timeout = 500ms;
  // A member of the cluster: the transfer goes through, encrypted.
  o.curve = sender_options::curve_keys{server.first, member.first, member.second};
  {
    auto s = sender(o);
    auto data = random_bytes(4000, 3);
    ASSERT_TRUE(s->begin(40, 1, 4000));
    ASSERT_TRUE(s->send_layer(0, data));
    ASSERT_TRUE(s->finish());
    auto kv = receiver->take(40, 1s);
    ASSERT_TRUE(kv);
    ASSERT_TRUE((*kv)->wait_all(1s));
    EXPECT_EQ(0, std::memcmp((*kv)->layer(0).data(), data.data(), 4000));
  }
  // A key pair the receiver does not list: refused at the handshake.
  o.curve = sender_options::curve_keys{server.first, stranger.first, stranger.second};
  EXPECT_FALSE(sender(o)->begin(41, 1, 100));
  // No CURVE at all: nothing gets through either.
  o.curve.reset();
  EXPECT_FALSE(sender(o)->begin(42, 1, 100));
  // The right server key but someone else's public key: CURVE makes the
  // client prove it holds the secret, so this fails too.
  o.curve = sender_options::curve_keys{server.first, member.first, stranger.second};
  EXPECT_FALSE(sender(o)->begin(43, 1, 100));
  EXPECT_GE(receiver->stats().peers_refused, 1u);
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  EXPECT_FALSE(receiver->take(41, 10ms));
}

TEST_F(transfer_test, memory_budget_refuses_then_frees) {
  ropts.budget_bytes = 1000;
  start();
  auto s = sender();
  auto data = random_bytes(600, 6);
  ASSERT_TRUE(s->begin(1, 1, 600));
  ASSERT_TRUE(s->send_layer(0, data));
  ASSERT_TRUE(s->finish());
  auto second = s->begin(2, 1, 600);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.err().code, errc::overloaded);
  {
    auto kv = receiver->take(1, 1s);
    ASSERT_TRUE(kv);
    EXPECT_EQ(receiver->stats().budget_used_bytes, 600u);
  } // the consumer drops the first transfer: its bytes are free again
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  ASSERT_TRUE(s->begin(2, 1, 600));
}

TEST_F(transfer_test, missing_receiver_is_unavailable_not_a_hang) {
  sender_options so;
  so.peer_timeout = 200ms;
  auto s = kv_sender::connect(ctx, "tcp://127.0.0.1:1", so); // nothing listens on port 1
  ASSERT_TRUE(s);
  auto t0 = std::chrono::steady_clock::now();
  auto st = (*s)->begin(1, 1, 10);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::unavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_FALSE(kv_sender::connect(ctx, "not an endpoint", so));
}

TEST_F(transfer_test, silent_sender_fails_the_consumer_within_idle_timeout) {
  ropts.idle_timeout = 200ms;
  start();
  {
    raw_peer peer(ctx, receiver->endpoint());
    peer.send_begin(5, 2, 100);
    ASSERT_EQ(peer.answer()->kind, frame_kind::accept);
  } // the sender is gone
  auto kv = receiver->take(5, 1s);
  ASSERT_TRUE(kv);
  auto t0 = std::chrono::steady_clock::now();
  auto st = (*kv)->wait_layer(1, 5s);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::unavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST_F(transfer_test, abort_reaches_the_consumer_and_duplicates_are_refused) {
  start();
  auto s = sender();
  ASSERT_TRUE(s->begin(11, 1, 100));
  auto again = sender()->begin(11, 1, 100); // another sender, same request id
  ASSERT_FALSE(again);
  s->abort("prefill failed");
  auto kv = receiver->take(11, 1s);
  ASSERT_TRUE(kv);
  auto st = (*kv)->wait_all(2s);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.err().code, errc::cancelled);
  EXPECT_NE(st.err().message.find("prefill failed"), std::string::npos);
  EXPECT_FALSE(receiver->take(12, 50ms)); // never begun: a timeout, not a hang
}

TEST_F(transfer_test, unclaimed_transfers_expire_and_free_their_budget) {
  ropts.unclaimed_ttl = 100ms;
  start();
  auto s = sender();
  auto data = random_bytes(100, 7);
  ASSERT_TRUE(s->begin(1, 1, 100));
  ASSERT_TRUE(s->send_layer(0, data));
  ASSERT_TRUE(s->finish());
  for (int i = 0; i < 100 && receiver->stats().budget_used_bytes != 0; ++i)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  EXPECT_FALSE(receiver->take(1, 10ms));
}

TEST_F(transfer_test, several_senders_at_once) {
  start();
  const int n = 4;
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < n; ++i)
    data.push_back(random_bytes(3 * 200'000, 100 + i));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      sender_options so;
      so.chunk_bytes = 16 << 10;
      auto s = sender(so);
      ASSERT_TRUE(s->begin(100 + i, 3, 200'000));
      for (uint32_t l = 0; l < 3; ++l)
        ASSERT_TRUE(s->send_layer(l, std::span{data[i]}.subspan(l * 200'000, 200'000)));
      ASSERT_TRUE(s->finish());
    });
  for (int i = 0; i < n; ++i) {
    auto kv = receiver->take(100 + i, 5s);
    ASSERT_TRUE(kv);
    ASSERT_TRUE((*kv)->wait_all(5s));
    for (uint32_t l = 0; l < 3; ++l)
      EXPECT_EQ(0, std::memcmp((*kv)->layer(l).data(), data[i].data() + l * 200'000, 200'000));
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(receiver->stats().transfers, uint64_t(n));
}

TEST(transfer_wire, copy_and_checksum_copies_and_equals_checksum) {
  for (size_t n : {size_t(0), size_t(1), size_t(16 << 10), size_t(16 << 10) + 7, size_t(1) << 20}) {
    auto src = random_bytes(n, uint32_t(n));
    std::vector<std::byte> dst(n);
    EXPECT_EQ(copy_and_checksum(dst.data(), src), checksum(src)) << n;
    EXPECT_EQ(dst, src) << n;
  }
}

TEST(transfer_wire, checksums_equal_scalar_xxh3_at_every_size_and_alignment) {
  // Sizes around the 64 KiB switch to streaming stores and the 16 KiB and
  // 128-byte blocks; destinations off every 32-byte alignment.
  auto src = random_bytes((size_t(1) << 20) + 300, 7);
  std::vector<std::byte> dst(src.size() + 64);
  for (size_t n :
       {size_t(0), size_t(129), size_t(64 << 10) - 1, size_t(64 << 10), size_t(64 << 10) + 127,
        size_t(200'003), size_t(1) << 20, (size_t(1) << 20) + 300}) {
    for (size_t shift : {size_t(0), size_t(1), size_t(17), size_t(31), size_t(32)}) {
      std::span<const std::byte> part{src.data() + shift % 5, n - std::min(n, shift % 5)};
      const uint64_t want = XXH3_64bits(part.data(), part.size());
      EXPECT_EQ(checksum(part), want) << n;
      for (auto when : {read_next::soon, read_next::later}) {
        std::fill(dst.begin(), dst.end(), std::byte{0});
        EXPECT_EQ(copy_and_checksum(dst.data() + shift, part, when), want) << n << " at +" << shift;
        EXPECT_EQ(0, std::memcmp(dst.data() + shift, part.data(), part.size())) << n;
        EXPECT_EQ(dst[shift + part.size()], std::byte{0}) << "wrote past the end: " << n;
        if (shift > 0) {
          EXPECT_EQ(dst[shift - 1], std::byte{0}) << "wrote before the start: " << n;
        }
      }
    }
  }
}

TEST_F(transfer_test, zero_copy_layers_arrive_and_their_owner_is_released) {
  start();
  sender_options so;
  so.chunk_bytes = 1000;
  auto s = sender(so);
  auto data = std::make_shared<std::vector<std::byte>>(random_bytes(5000, 3));
  std::weak_ptr<std::vector<std::byte>> alive = data;
  ASSERT_TRUE(s->begin(21, 2, 2500));
  ASSERT_TRUE(s->send_layer(0, std::span{*data}.first(2500), data));
  ASSERT_TRUE(s->send_layer(1, std::span{*data}.subspan(2500), data));
  ASSERT_TRUE(s->finish());
  auto kv = receiver->take(21, 1s);
  ASSERT_TRUE(kv);
  ASSERT_TRUE((*kv)->wait_all(1s));
  EXPECT_EQ(0, std::memcmp((*kv)->layer(0).data(), data->data(), 2500));
  EXPECT_EQ(0, std::memcmp((*kv)->layer(1).data(), data->data() + 2500, 2500));
  data.reset(); // every message is sent: ZeroMQ holds no share any more
  for (int i = 0; i < 100 && !alive.expired(); ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(alive.expired());
  EXPECT_FALSE(s->send_layer(0, {}, nullptr)); // zero-copy without an owner is refused
}

TEST_F(transfer_test, a_one_byte_send_queue_still_delivers_every_chunk) {
  // A queue of one byte: each chunk is hashed only once ZeroMQ has put the
  // previous one on the wire (a chunk larger than the bound goes alone).
  start();
  sender_options so;
  so.chunk_bytes = 64 << 10;
  so.max_queued_bytes = 1;
  auto s = sender(so);
  auto data = std::make_shared<std::vector<std::byte>>(random_bytes(1 << 20, 9));
  ASSERT_TRUE(s->begin(26, 2, 512 << 10));
  ASSERT_TRUE(s->send_layer(0, std::span{*data}.first(512 << 10), data)); // zero-copy
  ASSERT_TRUE(s->send_layer(1, std::span{*data}.subspan(512 << 10)));     // copying
  ASSERT_TRUE(s->finish());
  auto kv = receiver->take(26, 1s);
  ASSERT_TRUE(kv);
  ASSERT_TRUE((*kv)->wait_all(1s));
  EXPECT_EQ(0, std::memcmp((*kv)->layer(0).data(), data->data(), 1 << 20));
  EXPECT_EQ(s->stats().chunks, 16u);
  so.max_queued_bytes = 0;
  EXPECT_EQ(kv_sender::connect(ctx, receiver->endpoint(), so).err().code, errc::invalid_argument);
}

TEST_F(transfer_test, queued_zero_copy_chunks_keep_their_bytes_alive_after_the_sender_is_gone) {
  ropts.window_chunks = 64;
  start();
  sender_options so;
  so.chunk_bytes = 4096;
  auto s = sender(so);
  auto data = std::make_shared<std::vector<std::byte>>(random_bytes(64 * 4096, 4));
  std::weak_ptr<std::vector<std::byte>> alive = data;
  ASSERT_TRUE(s->begin(22, 1, data->size()));
  ASSERT_TRUE(s->send_layer(0, *data, data));
  data.reset();
  s.reset(); // socket closed (linger 0) with chunks possibly still queued
  for (int i = 0; i < 100 && !alive.expired(); ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(alive.expired()); // released by ZeroMQ, never before it was done with them
}

TEST_F(transfer_test, layers_arrived_by_counts_layers_whole_before_a_time) {
  start();
  auto s = sender();
  auto data = random_bytes(3000, 5);
  ASSERT_TRUE(s->begin(23, 3, 1000));
  ASSERT_TRUE(s->send_layer(0, std::span{data}.first(1000)));
  auto kv = receiver->take(23, 1s);
  ASSERT_TRUE(kv);
  ASSERT_TRUE((*kv)->wait_layer(0, 1s));
  const auto between = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->send_layer(1, std::span{data}.subspan(1000, 1000)));
  ASSERT_TRUE(s->send_layer(2, std::span{data}.subspan(2000)));
  ASSERT_TRUE(s->finish());
  EXPECT_EQ((*kv)->layers_arrived_by(between), 1u);
  EXPECT_EQ((*kv)->layers_arrived_by(std::chrono::steady_clock::now()), 3u);
}

TEST_F(transfer_test, an_aborted_transfer_nobody_took_frees_its_bytes_and_may_begin_again) {
  ropts.budget_bytes = 1500;
  start();
  auto s = sender();
  ASSERT_TRUE(s->begin(24, 1, 1000));
  s->abort("the prefill pass is re-run");
  // The failed transfer returns its budget at once (else this would be refused)...
  for (int i = 0; i < 100 && receiver->stats().budget_used_bytes != 0; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  // ...and the same request id may begin again (a re-run pass), replacing it.
  auto data = random_bytes(1000, 6);
  ASSERT_TRUE(s->begin(24, 1, 1000));
  ASSERT_TRUE(s->send_layer(0, data));
  ASSERT_TRUE(s->finish());
  auto kv = receiver->take(24, 1s);
  ASSERT_TRUE(kv);
  ASSERT_TRUE((*kv)->wait_all(1s));
  EXPECT_EQ(0, std::memcmp((*kv)->layer(0).data(), data.data(), 1000));
  // A running (not failed) transfer of that id still refuses a second begin.
  ASSERT_TRUE(s->begin(25, 1, 100));
  EXPECT_FALSE(sender()->begin(25, 1, 100));
}

TEST_F(transfer_test, reused_landing_buffers_hold_each_transfers_own_bytes) {
  start();
  auto s = sender();
  const uint64_t layer = uint64_t(3) << 20; // 2 x 3 MiB: large enough to be kept for reuse
  for (uint32_t round = 0; round < 3; ++round) {
    auto data = random_bytes(2 * layer, 40 + round);
    ASSERT_TRUE(s->begin(30 + round, 2, layer));
    ASSERT_TRUE(s->send_layer(0, std::span{data}.first(layer)));
    ASSERT_TRUE(s->send_layer(1, std::span{data}.subspan(layer)));
    ASSERT_TRUE(s->finish());
    auto kv = receiver->take(30 + round, 2s);
    ASSERT_TRUE(kv);
    ASSERT_TRUE((*kv)->wait_all(2s));
    EXPECT_EQ(0, std::memcmp((*kv)->layer(0).data(), data.data(), layer)) << round;
    EXPECT_EQ(0, std::memcmp((*kv)->layer(1).data(), data.data() + layer, layer)) << round;
    kv->reset(); // its buffer goes back to the receiver's spares
    EXPECT_EQ(receiver->stats().budget_used_bytes, 0u);
  }
  EXPECT_EQ(receiver->stats().landing_reused, 2u);
}

TEST_F(transfer_test, spare_landing_buffers_and_bytes_in_use_stay_within_the_budget) {
  // A budget of 1.5 transfers of 8 MiB: each transfer reuses the last
  // one's buffer; a 12 MiB one cannot, so the spare is freed to make room.
  const uint64_t mib = uint64_t(1) << 20;
  ropts.budget_bytes = 12 * mib;
  start();
  auto s = sender();
  auto send = [&](uint64_t id, uint64_t layer) {
    auto data = random_bytes(2 * layer, uint32_t(id));
    ASSERT_TRUE(s->begin(id, 2, layer));
    ASSERT_TRUE(s->send_layer(0, std::span{data}.first(layer)));
    ASSERT_TRUE(s->send_layer(1, std::span{data}.subspan(layer)));
    ASSERT_TRUE(s->finish());
    auto kv = receiver->take(id, 2s);
    ASSERT_TRUE(kv);
    ASSERT_TRUE((*kv)->wait_all(2s));
    EXPECT_EQ(0, std::memcmp((*kv)->layer(1).data(), data.data() + layer, layer)) << id;
    auto st = receiver->stats();
    EXPECT_LE(st.budget_used_bytes + st.spare_bytes, ropts.budget_bytes) << id;
  };
  for (uint64_t id = 1; id <= 3; ++id)
    send(id, 4 * mib);
  EXPECT_EQ(receiver->stats().landing_reused, 2u);
  EXPECT_EQ(receiver->stats().spare_bytes, 8 * mib);
  send(4, 6 * mib); // 12 MiB: the 8 MiB spare is too small and must go
  auto st = receiver->stats();
  EXPECT_EQ(st.landing_reused, 2u);
  EXPECT_EQ(st.spare_bytes, 12 * mib);
  EXPECT_EQ(st.budget_used_bytes, 0u);
}

} // namespace
} // namespace mosaic::kv::transfer
