#pragma once

// The in-process target: a single-node cluster (actors/local_cluster)
// running in this process, driven through its C++ API. TTFT and every
// token time are measured on the real engine when the token event reaches
// this process (no model, no estimate). Images are sent as library
// references (their SHA-256 keys) when the workload's images were put in
// a dynamic library beforehand (`prebuild_dynamic_library`), else inline
// as PNG bytes.

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/local_cluster.hpp"
#include "sim/target.hpp"

namespace mosaic::sim {

struct cluster_target_options {
  std::string policy; ///< reuse policy of every request ("" = node default)
  std::string tenant = "sim";
  bool images_by_key = true;  ///< library references; false: inline PNG
  uint64_t sampling_seed = 0; ///< greedy decoding; the seed only matters for temperature > 0
  std::chrono::milliseconds deadline{std::chrono::minutes{5}};
  std::string compression{}; ///< KV compression of every request ("" = node default)
};

class cluster_target final : public target {
public:
  /// `cluster` must outlive the target; `w` gives the image pool (seed, size).
  cluster_target(actors::local_cluster& cluster, const workload& w, cluster_target_options options);
  ~cluster_target() override;

  void submit(const sim_request& req, on_token token, on_done done) override;
  void drain(std::chrono::milliseconds timeout) override;
  std::string describe() const override;

private:
  actors::local_cluster* cluster_;
  cluster_target_options options_;
  std::vector<int> tokens_;               // [pool] image tokens (anyres: by size)
  std::vector<library_key_bytes> keys_;   // [pool] SHA-256 image keys
  std::vector<std::vector<uint8_t>> png_; // [pool] encoded images (inline mode)
  std::mutex mutex_;
  std::vector<std::shared_ptr<actors::token_stream>> streams_;
  std::vector<std::thread> readers_; ///< one per request, joined by drain()
};

/// Puts every image `w` uses into the dynamic library `library` of the
/// cluster's node (encode + compile on the node's engine); images already
/// there are skipped. Returns how many were compiled.
result<int> prebuild_dynamic_library(actors::local_cluster& cluster, const workload& w,
                                     std::string_view library = "sim");

} // namespace mosaic::sim
