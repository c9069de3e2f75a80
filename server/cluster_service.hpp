#pragma once

// generation_service over an in-process actors::local_cluster: what
// `mosaic serve` and the integration tests put behind the HTTP front door.

#include <chrono>
#include <memory>
#include <string>

#include "actors/local_cluster.hpp"
#include "server/generation_service.hpp"

namespace mosaic::server {

class cluster_service final : public generation_service {
public:
  /// `cluster` must outlive this object; `model` is the id /v1/models lists.
  cluster_service(actors::local_cluster& cluster, std::string model);

  service_info info() const override { return info_; }
  std::shared_ptr<generation_stream> submit(const wire::generate_request& request) override;
  result<stored_image> upload(std::string_view tenant, std::span<const uint8_t> image,
                              std::chrono::milliseconds timeout) override;
  status remove(std::string_view tenant, const library_key_bytes& key) override;
  service_stats stats() const override;

private:
  actors::local_cluster& cluster_;
  service_info info_;
};

} // namespace mosaic::server
