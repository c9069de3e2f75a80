#pragma once

// The ZeroMQ target: a running front door's ZeroMQ API (`mosaic serve`,
// `--target zmq://HOST:PORT`), driven through messages/api_client.hpp.
// Images go inline as the workload's procedural PNGs (the server's
// library turns repeats into hits, as for any client). TTFT and token
// times are taken when each frame reaches this process, so they include
// the network and the server's front door.
//
//   auto t = zmq_target::connect("zmq://127.0.0.1:8001", workload, {});
//   sim::drive(**t, workload, options);

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "messages/api_client.hpp"
#include "sim/target.hpp"

namespace mosaic::sim {

struct zmq_target_options {
  std::string policy;         ///< reuse policy of every request ("" = the server's)
  std::string api_key;        ///< when the server requires keys
  uint64_t sampling_seed = 0; ///< greedy decoding; the seed only matters for temperature > 0
};

class zmq_target final : public target {
public:
  /// Connects to `url` ("zmq://HOST:PORT"). Errors: a URL of another form.
  static result<std::unique_ptr<zmq_target>> connect(const std::string& url, const workload& w,
                                                     zmq_target_options options);
  ~zmq_target() override;

  void submit(const sim_request& req, on_token token, on_done done) override;
  void drain(std::chrono::milliseconds timeout) override;
  std::string describe() const override;

  zmq_target(std::unique_ptr<api::api_client> client, std::string url, const workload& w,
             zmq_target_options options);

private:
  struct pending {
    api::chat_request request;
    on_token token;
    on_done done;
  };
  struct running {
    on_token token;
    on_done done;
    request_outcome outcome;
  };
  void serve();
  void end(running& r, const std::string& error);

  std::unique_ptr<api::api_client> client_; ///< used by the serve thread only
  std::string url_;
  zmq_target_options options_;
  std::vector<std::vector<uint8_t>> png_; // [pool] encoded images
  std::mutex mutex_;
  std::condition_variable idle_;
  std::deque<pending> queue_;          ///< submitted, not sent yet
  std::map<uint64_t, running> flying_; ///< by request id (serve thread)
  size_t in_flight_ = 0;               ///< queue_ + flying_, under mutex_
  bool cancel_all_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

} // namespace mosaic::sim
