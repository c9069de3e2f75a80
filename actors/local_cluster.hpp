#pragma once

// Every actor of one node in this process, behind a small C++ API: the
// tests, the benchmarks, `mosaic serve` and (next) the HTTP front door
// use it. `start` creates the node_context and spawns kv_loader, encoder,
// decode, prefill, linker and router (node_options::prefill_workers
// linker + prefill pairs, among which the router picks); `submit` sends a request to the
// router and returns the stream of its token events; `upload` runs the
// upload-then-ask flow (encode, compile, store in the tenant's library).
//
//   auto cluster = local_cluster::start(options);
//   auto stream = (*cluster)->submit(request);
//   auto done = stream->wait(std::chrono::seconds{30}); // tokens, finish, ttft

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/node_context.hpp"
#include "messages/builders.hpp"
#include "topology/topology.hpp"

namespace mosaic::actors {

/// How a request ended, with what it produced.
struct completion {
  uint64_t request_id = 0;
  std::vector<int32_t> tokens; ///< generated tokens (the stop token excluded)
  std::string text;
  msg::FinishReason finish = msg::FinishReason::none;
  msg::Usage usage{};
  uint32_t image_tokens = 0;  ///< the prompt's (each image's own count)
  double ttft_seconds = 0.0;  ///< submit → first token event
  double total_seconds = 0.0; ///< submit → last event
  /// What the compress stage did (requests whose compression was not none).
  std::optional<msg::CompressionUsage> compression;
  /// sampling.logprobs >= 0: per token, its entry then the alternatives.
  std::vector<std::vector<wire::token_logprob>> logprobs;
  std::vector<int32_t> prompt_token_ids; ///< sampling.return_token_ids
};

/// The token events of one request, in order; filled by CAF, read by any
/// thread. Every wait takes a timeout.
class token_stream {
public:
  /// The next event; nullopt when none came within `timeout` or the
  /// stream is over (finished() then says so).
  std::optional<wire::token_event> next(std::chrono::milliseconds timeout);
  /// Waits for the end of the request: what it generated, or its error
  /// (errc::timeout when `timeout` passes first).
  result<completion> wait(std::chrono::milliseconds timeout);
  /// Stops the request: its sequence leaves the batch and frees its blocks.
  void cancel();
  bool finished() const;
  /// The router's id (0 until the first event).
  uint64_t request_id() const;

  // -- used by the client actor ---------------------------------------------------

  explicit token_stream(std::chrono::steady_clock::time_point submitted);
  void attach(caf::actor client);
  /// A streamed event; the streamed last event is left to `finish`.
  void push(const wire::token_event& ev);
  /// The request's answer (its last event), after every streamed token.
  void finish(const wire::token_event& last);
  void end(const error& err);

private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<wire::token_event> unread_;
  completion result_;
  error error_;
  bool finished_ = false;
  bool first_ = true;
  std::chrono::steady_clock::time_point submitted_;
  caf::actor client_;
};

/// Answer to an upload.
struct upload_result {
  digest image_key{}; ///< what an ImageKey segment names it by
  uint32_t n_tokens = 0;
  bool encoder_cache_hit = false;
};

/// Fills node_options from one node of a validated topology (the first
/// when `node` is empty). That node must run every role except the
/// frontend: one process, one node (`local_cluster::join` runs a part).
result<node_options> node_options_from_topology(const topology& topo, std::string_view node = {});

/// node_options of one node of a multi-node topology: like
/// node_options_from_topology without requiring every role (a node
/// without a kv_loader opens no library; one without prefill or decode
/// gets a small pool).
result<node_options> node_options_for_node(const topology& topo, std::string_view node);

struct node_network;
struct peer_address;
class peer_health;

/// How `local_cluster::join` runs a node of a multi-node topology.
struct join_options {
  /// How long to wait for every peer node at startup.
  std::chrono::milliseconds connect_timeout{60000};
  /// Address to listen on (control and data port); empty: the node's host
  /// when it is an IP address, else 0.0.0.0.
  std::string bind;
  bool quiet = false; ///< no peer up/down lines on stderr
  /// This node's CURVE key file (`mosaic keys`); empty: the topology
  /// node's key_file. Needed when the topology gives nodes public keys.
  std::string key_file;
};

class local_cluster {
public:
  /// Creates the node and spawns its actors.
  static result<std::unique_ptr<local_cluster>> start(node_options options);
  /// start(node_options_from_topology(topo, node)).
  static result<std::unique_ptr<local_cluster>> start(const topology& topo,
                                                      std::string_view node = {});
  /// One node of a multi-node cluster (`mosaic node`, actors/cluster_node.cpp):
  /// spawns only the actors the topology places on `node`, publishes them
  /// through CAF's middleman on its control_port, receives bulk (KV,
  /// embeddings) on its data_port, links to the peer nodes that run the
  /// other roles, and returns once every peer is connected; errc::timeout
  /// after `connect_timeout`, naming each missing peer and its host:port.
  static result<std::unique_ptr<local_cluster>> join(const topology& topo, std::string_view node,
                                                     join_options options = {});
  /// Stops every actor (running requests end), then frees the node.
  ~local_cluster();
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  /// Sends `req` to the router (its request_id is replaced by the
  /// router's; deadline 0 takes the node default). Never blocks.
  std::shared_ptr<token_stream> submit(const wire::generate_request& req);
  /// Upload-then-ask: encodes `image` (PNG/JPEG bytes), compiles its KV and
  /// stores it in `tenant`'s static library; returns once stored.
  result<upload_result> upload(std::string_view tenant, std::span<const uint8_t> image,
                               std::chrono::milliseconds timeout = std::chrono::seconds{60});
  /// Deletes `tenant`'s image from every library of the cluster (through
  /// the router): not_found when none held it.
  status remove(std::string_view tenant, const digest& image_key,
                std::chrono::milliseconds timeout = std::chrono::seconds{30});
  node_stats stats() const { return ctx_->stats(); }
  /// Waits up to `grace` until this node holds no request's work (no job,
  /// no KV sequence in a pass, a hand-off or a decode): a node stopped by
  /// SIGTERM lets what it runs finish. True when it got there.
  bool wait_idle(std::chrono::milliseconds grace) const;
  node_context& context() { return *ctx_; }
  /// One line per spawned actor ("router  (cooperative)").
  const std::vector<std::string>& actors() const { return actors_; }
  /// Prefill workers (each with its own linker) spawned in this process.
  size_t prefill_workers() const;
  /// Stops local prefill worker `i` (its linker and prefill actor), as if
  /// it had crashed: the router sends it nothing more; requests it was
  /// running fail. For drills and tests.
  status stop_prefill_worker(size_t i);
  /// Peer nodes this node links to (empty in one process).
  std::vector<peer_address> peers() const;
  /// Up/down state of the peers (null in one process).
  std::shared_ptr<peer_health> health() const;

  struct private_tag {};
  explicit local_cluster(private_tag);

private:
  std::unique_ptr<node_context> ctx_;
  std::unique_ptr<node_network> net_; // multi-node only; outlives sys_ (reset first)
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::vector<caf::actor> all_;
  std::mutex clients_mutex_;
  /// Client actors of submitted requests, stopped first at shutdown.
  std::vector<std::pair<std::weak_ptr<token_stream>, caf::actor>> clients_;
  caf::actor router_;
  /// Local prefill workers: (linker, prefill).
  std::vector<std::pair<caf::actor, caf::actor>> workers_;
  std::vector<std::string> actors_;
};

} // namespace mosaic::actors
