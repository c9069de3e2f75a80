#pragma once

// The cluster topology (DESIGN.md §7) as validated plain structs: which
// nodes exist, where they listen, which devices they own and which actors
// run on each. `topology/loader.hpp` builds these from YAML; everything
// downstream (mosaic node, mosaic serve, the simulator) only reads them.
// A `topology` handed out by the loader has passed every check in
// docs/topology.md, so consumers need not re-validate; treat it as const.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/compression_spec.hpp"
#include "engine/policy_spec.hpp"
#include "engine/schedule_policy.hpp"

namespace mosaic {

/// Where a spec was written in its topology file (1-based; 0 when the spec
/// did not come from a file). Lets later start-up errors ("port in use")
/// point at the line to change.
struct spec_origin {
  int line = 0;
  int column = 0;
};

/// A compute device of a node: the CPU or one CUDA ordinal.
struct device_spec {
  enum class kind_t : uint8_t { cpu, cuda };

  kind_t kind = kind_t::cpu;
  int index = 0; ///< CUDA ordinal; 0 for the CPU

  /// "cpu" or "cuda:N": the name `make_backend()` accepts.
  std::string to_string() const;
  bool operator==(const device_spec&) const = default;
};

// -- actor specs (one struct per kind) ----------------------------------------

/// The front door: OpenAI-compatible HTTP and the ZeroMQ API.
struct frontend_spec {
  int http_port = 8000;
  int zmq_port = 8001;
  std::string bind;                     ///< address to listen on; defaults to the node's host
  int max_body_mb = 32;                 ///< larger request bodies get HTTP 413
  int max_concurrent = 256;             ///< in-flight requests before HTTP 503
  int max_connections = 1024;           ///< open connections before HTTP 503 at accept
  int max_connections_per_client = 256; ///< from one address before HTTP 429 at accept
  int header_timeout_s = 10;            ///< a request's line and headers must all arrive within it
  int drain_s = 30;                     ///< SIGTERM: how long running requests may finish

  size_t max_body_bytes() const { return static_cast<size_t>(max_body_mb) << 20; }
};

/// How a router spreads requests over the workers of a role.
enum class router_strategy : uint8_t { least_loaded, round_robin, cache_aware };

/// Spreads requests over encoders, linkers, prefill and decode workers.
struct router_spec {
  router_strategy strategy = router_strategy::cache_aware;
};

/// Vision tower + projector; keeps an encoder-output cache keyed by image.
struct encoder_spec {
  device_spec device; ///< defaults to the node's first device
  int cache_mb = 1024;
  int max_batch = 8; ///< images encoded in one pass

  size_t cache_bytes() const { return static_cast<size_t>(cache_mb) << 20; }
};

/// Element type of KV stored in a library.
enum class kv_storage_dtype : uint8_t { f16, bf16 };
/// How the loader reads library files.
enum class kv_io_engine : uint8_t { uring, pread };

/// Owns a KV library (RAM and disk tiers) and loads entries layer by layer.
struct kv_loader_spec {
  std::string library; ///< directory of the disk tier (resolved path)
  double ram_gb = 4.0;
  double disk_gb = 64.0;
  kv_storage_dtype storage = kv_storage_dtype::f16;
  kv_io_engine io = kv_io_engine::uring;
  int queue_depth = 64;  ///< reads in flight
  int64_t ttl_s = 86400; ///< lifetime of a tenant's (static) library entry

  uint64_t ram_bytes() const { return static_cast<uint64_t>(ram_gb * (1ull << 30)); }
  uint64_t disk_bytes() const { return static_cast<uint64_t>(disk_gb * (1ull << 30)); }
};

/// Looks images up in the libraries and builds the link plan.
struct linker_spec {
  policy_spec policy; ///< defaults to `defaults.policy`
};

/// Runs the one-pass prefill of a link plan; its requests then pass the
/// compress stage (FastCache) on the same device before decode.
struct prefill_spec {
  device_spec device;
  /// The longest prompt a prefill takes; 0 = the model's context
  /// (max_position_embeddings).
  int max_tokens = 0;
  /// Chunked prefill: tokens computed per chunk, with decode steps of
  /// running streams between chunks.
  int chunk_tokens = 2048;
  /// Automatic prefix caching in the node's KV pool (engine/prefix_cache.hpp).
  bool prefix_cache = true;
  /// Which library misses are compiled and stored after use: "first" (every
  /// image the first time it misses), "repeat" (an image the encoder saw
  /// before, i.e. from its second sighting outside the cached prefix on) or
  /// "off".
  std::string store_after_use = "repeat";
  /// KV compression of requests that name none (engine/compression_spec.hpp
  /// grammar); `none` (the default) skips the compress stage.
  compression_spec compression;
  /// How the prefill, compress and decode stages batch (FastCache's stage
  /// scheduler, engine/schedule_policy.hpp): "auto" (dynamic when
  /// `compression` is on, else off), "off", "dynamic[:count=N,wait=S,max=B]",
  /// "fcfs" or fixed sizes "p<P>c<C>d<D>[:wait=S]".
  std::string schedule = "auto";
};

/// Continuous-batching decode over a paged KV pool.
struct decode_spec {
  device_spec device;
  int max_batch = 64;  ///< sequences decoded together
  int block_size = 16; ///< tokens per KV page (a power of two)
  double pool_gb = 2.0;

  uint64_t pool_bytes() const { return static_cast<uint64_t>(pool_gb * (1ull << 30)); }
};

/// Actor roles. The order matches the alternatives of `actor_config`.
enum class actor_kind : uint8_t { frontend, router, encoder, kv_loader, linker, prefill, decode };

/// "frontend", "kv_loader", ...: the `kind:` value in a topology file.
const char* to_string(actor_kind kind) noexcept;

using actor_config = std::variant<frontend_spec, router_spec, encoder_spec, kv_loader_spec,
                                  linker_spec, prefill_spec, decode_spec>;

/// One actor placed on a node.
struct actor_spec {
  actor_config config;
  spec_origin origin;

  actor_kind kind() const noexcept { return static_cast<actor_kind>(config.index()); }
  /// The kind-specific fields, or nullptr when this actor is another kind.
  template <class T>
  const T* get() const noexcept {
    return std::get_if<T>(&config);
  }
};

/// One process of the cluster.
struct node_spec {
  std::string name;
  std::string host;        ///< address peers use to reach this node
  int control_port = 7400; ///< CAF middleman
  int data_port = 7500;    ///< ZeroMQ KV data plane
  std::vector<device_spec> devices{device_spec{}};
  int threads = 0; ///< CPU backend threads; 0 = every core
  std::vector<actor_spec> actors;
  /// The node's CURVE public key (Z85, 40 characters; `mosaic keys`
  /// makes a pair). Given for every node or none: with keys, the data
  /// plane is encrypted and a node accepts transfers only from the
  /// topology's nodes.
  std::string public_key;
  /// Where the node finds its secret key (on its own machine); `mosaic
  /// node --key-file` overrides it.
  std::string key_file;
  /// The control plane's TLS (CAF's OpenSSL module): this node's
  /// certificate (PEM, signed by the topology's `tls_ca`) and private key,
  /// on its own machine. Given for every node or none, together with
  /// `tls_ca`: with them, control connections are TLS both ways and a peer
  /// without a certificate from the cluster's CA is refused.
  std::string tls_cert;
  std::string tls_key;
  spec_origin origin;

  /// Number of actors of `kind` on this node.
  size_t count(actor_kind kind) const noexcept;
};

/// Defaults that requests inherit unless they say otherwise.
struct request_defaults {
  policy_spec policy{policy_kind::mpic, 32, 0.0f};
  int deadline_ms = 30000;
  int max_tokens = 256; ///< generated tokens when a request gives no limit
};

const char* to_string(router_strategy s) noexcept;
const char* to_string(kv_storage_dtype d) noexcept;
const char* to_string(kv_io_engine e) noexcept;

/// A whole cluster.
struct topology {
  std::string model;    ///< "builtin:tiny", "builtin:small" or a resolved directory path
  std::string api_keys; ///< key file (resolved path); empty = no authentication
  /// The CA certificate (PEM) every node's `tls_cert` must chain to;
  /// empty = the control plane is plain TCP (keep it on a private network).
  std::string tls_ca;
  request_defaults defaults;
  std::vector<node_spec> nodes;
  std::string source; ///< file name or label it was parsed from

  /// The node called `name`, or nullptr.
  const node_spec* find_node(std::string_view name) const noexcept;
  /// Actors over all nodes.
  size_t actor_count() const noexcept;
  /// Actors of `kind` over all nodes.
  size_t count(actor_kind kind) const noexcept;
};

} // namespace mosaic
