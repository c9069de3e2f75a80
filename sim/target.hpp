#pragma once

// What the live driver sends requests to: `cluster_target`
// (sim/cluster_target.hpp), an in-process single-node cluster over
// actors/local_cluster, or a running front door: `http_target`
// (sim/http_target.hpp, `--target http://HOST:PORT`) over HTTP, or
// `zmq_target` (sim/zmq_target.hpp, `--target zmq://HOST:PORT`) over its
// ZeroMQ API (docs/sim.md).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sim/workload.hpp"

namespace mosaic::sim {

/// How a request ended.
struct request_outcome {
  bool ok = false;
  std::string error;
  int prompt_tokens = 0; ///< as the server counted them (text + image)
  int image_tokens = 0;
  std::vector<int32_t> tokens; ///< generated ids
};

class target {
public:
  using clock = std::chrono::steady_clock;
  /// Called once per generated token, with the time it was received.
  using on_token = std::function<void(int32_t token, clock::time_point at)>;
  /// Called once when the request ends (success or error), after its last
  /// on_token, with the time it ended.
  using on_done = std::function<void(const request_outcome& outcome, clock::time_point at)>;

  virtual ~target() = default;
  /// Sends `req`; never blocks for long. The callbacks run on a thread of
  /// the target; calls for one request never overlap.
  virtual void submit(const sim_request& req, on_token token, on_done done) = 0;
  /// Blocks until every submitted request has ended (or `timeout`
  /// passed, then cancels the rest, which end with an error).
  virtual void drain(std::chrono::milliseconds timeout) = 0;
  /// One line saying what is driven ("in-process cluster, builtin:small, cpu").
  virtual std::string describe() const = 0;
};

} // namespace mosaic::sim
