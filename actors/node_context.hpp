#pragma once

// What the actors of one process share: the model on its backend, the
// image encoder, the KV library and its loader, and the handle tables
// through which bulk tensors move between actors (messages carry only the
// handles). Created once before the actors are spawned and handed to each
// of them by pointer; it must outlive every actor of the node.
//
// Lifetimes (docs/actors.md): a handle's object is owned by its table
// until a consumer `take`s it; then by that consumer. A request's prefill
// job is put by the linker and taken by the prefill worker; its KV
// sequence is put by the prefill worker and taken by the decode worker,
// which frees its blocks the moment the sequence finishes.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/compute_lock.hpp"
#include "actors/handle_table.hpp"
#include "actors/stage_admission.hpp"
#include "engine/backend.hpp"
#include "engine/compression_spec.hpp"
#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/image.hpp"
#include "engine/policy_spec.hpp"
#include "kv/library.hpp"
#include "kv/loader.hpp"
#include "messages/builders.hpp"
#include "topology/topology.hpp"

namespace mosaic::actors {

/// Everything a node needs to start (topology/ → here, see
/// `node_options_from_topology` in actors/local_cluster.hpp).
struct node_options {
  std::string model = "builtin:small"; ///< builtin:tiny, builtin:small or a directory
  std::string device = "cpu";          ///< make_backend() name
  int threads = 0;                     ///< CPU backend threads; 0 = every core
  // -- KV pool (decode) ---------------------------------------------------------
  uint64_t pool_bytes = uint64_t(1) << 30;
  int block_size = 16;
  int decode_max_batch = 16;
  // -- library and loader -------------------------------------------------------
  bool with_library = true; ///< false: no library and no loader (a node without kv_loader)
  std::filesystem::path library_dir;
  uint64_t ram_budget_bytes = uint64_t(2) << 30;
  uint64_t disk_budget_bytes = uint64_t(20) << 30;
  kv::storage_dtype storage = kv::storage_dtype::f16;
  kv::io_mode io = kv::io_mode::automatic;
  unsigned queue_depth = 32;
  std::chrono::seconds static_ttl{86400};
  // -- encoder, prefill ---------------------------------------------------------
  uint64_t encoder_cache_bytes = uint64_t(512) << 20;
  /// The longest prompt a prefill takes; 0: the model's context
  /// (max_position_embeddings).
  int prefill_max_tokens = 0;
  /// Chunked prefill: tokens computed per chunk, decode steps run between
  /// chunks (engine/prefill.hpp). 0: one chunk.
  int prefill_chunk_tokens = 2048;
  /// Automatic prefix caching in the pool (engine/prefix_cache.hpp).
  bool prefix_caching = true;
  /// Which library misses are compiled and stored after use (topology
  /// `store_after_use`): "first", "repeat" (images the encoder saw before)
  /// or "off". Never images inside the cached prefix the request adopted.
  std::string store_after_use = "repeat";
  /// KV compression of requests that name none (FastCache compress stage);
  /// none: requests go from prefill straight to decode.
  compression_spec default_compression{};
  /// How the stages batch (actors/stage_admission.hpp): "auto" (dynamic
  /// when default_compression is on, else off), "off", or a
  /// parse_schedule_policy form ("dynamic", "fcfs", "p1c1d8", ...).
  std::string schedule = "auto";
  // -- request defaults and admission --------------------------------------------
  policy_spec default_policy{policy_kind::mpic, 32, 0.0f};
  int default_deadline_ms = 30000;
  int default_max_tokens = 256;
  int max_inflight = 64; ///< requests between router admission and their last token
  int max_queue = 256;   ///< requests waiting for admission; beyond: overloaded at once
  // -- routing over prefill workers (actors/prefill_routing.hpp) -----------------
  /// Prefill workers of this process (each with its own linker); the
  /// router spreads requests over them and over remote ones.
  int prefill_workers = 1;
  router_strategy route_strategy = router_strategy::cache_aware;
  double route_miss_weight = 1.0; ///< per image token a worker would compute again
  double route_load_weight = 1.0; ///< per prompt token in flight on a worker
};

/// A library entry being read into memory (a disk hit) or already there
/// (a RAM hit). `image` is declared before `handle` so that the handle,
/// which waits for the read, is destroyed first.
struct loaded_entry {
  compiled_image image;                      ///< disk hit destination
  std::shared_ptr<const compiled_image> ram; ///< RAM hit
  kv::load_handle handle;                    ///< disk hit progress
  /// The entry (RAM copy or load destination).
  const compiled_image& entry() const { return ram ? *ram : image; }
  status wait_embeddings() const { return ram ? status{} : handle.wait_embeddings(); }
  status wait_layer(int layer) const { return ram ? status{} : handle.wait_layer(layer); }
  bool layer_ready(int layer) const { return ram || handle.layer_ready(layer); }
};

/// One image of a request as the linker resolved it.
struct job_image {
  digest image_key{};
  int n_tokens = 0;
  /// M-RoPE models (Qwen2-VL): the image's token grid, from its size (an
  /// inline image) or its library entry (an image named by key); {}
  /// otherwise.
  token_grid grid{};
  uint64_t load_id = 0; ///< loads table handle of a library hit; 0: miss
  std::shared_ptr<const std::vector<float>> embeddings; // [n_tokens, hidden] miss
  /// Inline images, decoded once by the linker: for the encoder of a miss
  /// (node_context::decoded) and a load-failure fallback.
  std::shared_ptr<const decoded_image> pixels;
  bool fresh = false;       ///< encoded now: store to the library after use
  bool seen_before = false; ///< the encoder had it cached (an earlier sighting)
};

/// An inline image the linker decoded (and keyed), lent to this node's
/// encoder so that a miss is not decoded twice. The encoder uses it only
/// for the same request and tenant.
struct decoded_pixels {
  uint64_t request_id = 0;
  std::string tenant;
  digest key{};
  std::shared_ptr<const decoded_image> image;
};

/// What the prefill worker needs to run one request (linker → prefill).
struct prefill_job {
  uint64_t request_id = 0;
  std::string tenant;
  std::string cache_salt; ///< the request's prefix-cache salt (prefix_scope::salt)
  int64_t deadline_unix_ns = 0;
  policy_spec policy;
  std::vector<int32_t> ids;      ///< prompt ids, one image_token_id per image
  std::vector<job_image> images; ///< in prompt order
  wire::sampling sampling;
  bool stream = false;
  uint64_t admission_wait_us = 0; ///< time in the router's admission queue
  /// When the linker handed the job to the prefill worker (the start of
  /// its wait in the prefill queue).
  std::chrono::steady_clock::time_point handed_over{};
  compression_spec compression; ///< none: no compress stage
};

/// A prefilled request on its way through the compress stage (prefill →
/// compress): its KV and the plan the prefill ran (compress_kv needs the
/// segments, positions and, for snapkv, the window's inputs).
struct compress_job {
  kv_sequence sequence;
  /// The plan with its borrowed library entries and prefix dropped; its
  /// image embeddings point into `inputs`.
  link_plan plan;
  std::vector<std::shared_ptr<const void>> inputs; ///< keeps plan.images[i].embeddings alive
  compression_spec compression;
};

/// Where requests' time goes on a node, summed over requests in
/// node_stats::stage_us (on /metrics: mosaic:request_stage_seconds_total)
/// and printed for one request by bench/stage_profile. Stages nest: the
/// linker's `resolve_images` is its wall time until every image is encoded
/// or its load started, and holds the encoder's decode, lock wait and
/// encode of the request's misses; `prefill_compute` excludes
/// `prefill_load_wait` and includes waiting for the compute lock. `compile`
/// (store after use) is off the request's path, after its first token,
/// and counts its own compute only (not the steps it let others go first).
enum class request_stage : uint8_t {
  prepare,           ///< linker: tokenize; decode and key inline images
  library_lookup,    ///< linker ↔ kv_loader: which images a library holds
  resolve_images,    ///< linker: lookup answered → every miss encoded, every hit loading
  image_decode,      ///< encoder: PNG/JPEG decode and key (uploads; remote linkers' misses)
  encode_lock_wait,  ///< encoder: waiting for the compute lock
  vision_encode,     ///< encoder: vision tower + projector
  prefill_queue,     ///< linker hand-off → the prefill pass starts
  prefill_load_wait, ///< in the pass: waiting for library layers
  prefill_compute,   ///< the pass (plan, link, recompute, first token), less load waits
  compile,           ///< a new image's library entry (store after use, uploads); not its write
};
inline constexpr size_t n_request_stages = 10;
/// "prepare", "library_lookup", ... (the metric's `stage` label).
const char* stage_name(request_stage s);

/// Counters a user or operator notices (stats()).
struct node_stats {
  uint64_t requests = 0;   ///< admitted by the router
  uint64_t completed = 0;  ///< ended with a result
  uint64_t failed = 0;     ///< ended with an error (incl. overloaded, timeout)
  uint64_t overloaded = 0; ///< refused by admission
  uint64_t cancelled = 0;
  /// Requests waiting now: in the router's admission queue, or handed to
  /// the prefill worker and not yet started by it.
  uint64_t waiting = 0;
  uint64_t library_hits = 0; ///< images found in a library
  uint64_t library_misses = 0;
  uint64_t encoder_cache_hits = 0;
  uint64_t encodes = 0;        ///< vision tower runs
  uint64_t image_decodes = 0;  ///< inline images decoded (once per image and request)
  uint64_t load_fallbacks = 0; ///< hits recomputed because their load failed
  uint64_t stores = 0;         ///< entries written to a library
  uint64_t prefills = 0;
  uint64_t prefill_us = 0;   ///< prefill passes, summed
  uint64_t load_wait_us = 0; ///< of which waiting for library layers
  /// Layers sent to a remote decode node with the compute lock released
  /// because the wire was not ready (credits or a full send queue).
  uint64_t kv_send_unlocked_waits = 0;
  uint64_t decode_steps = 0;
  uint64_t compressions = 0;         ///< requests through the compress stage
  uint64_t compress_us = 0;          ///< compress stage time, summed
  uint64_t compress_saved_bytes = 0; ///< pool bytes freed by compression, summed
  uint64_t compress_fallbacks = 0;   ///< no pool room for the compressed copy: decoded as is
  /// Requests the router sent to a prefill worker known to hold at least
  /// one of their images (cache_aware routing), and those images.
  uint64_t routed_by_affinity = 0;
  uint64_t routed_images_held = 0;
  /// Requests the router sent to each prefill worker, in its order
  /// (local workers first, then remote nodes in file order).
  std::vector<uint64_t> routed_per_worker;
  kv_pool_stats pool;
  stage_admission_stats stages; ///< the stage scheduler's batches and KV reservations
  std::array<uint64_t, n_request_stages> stage_us{};    ///< per request_stage, summed
  std::array<uint64_t, n_request_stages> stage_count{}; ///< times each was timed
};

/// Images whose store after use is queued or running, by tenant and image
/// key: an image is queued once only, and a request that misses an image
/// whose compile is running waits for its entry (actors/linker_actor.cpp)
/// instead of computing it again. Thread-safe.
class compile_registry {
public:
  /// Queues the image; false when it is queued or running already.
  bool add(const std::string& tenant, const digest& key) {
    std::lock_guard guard{mutex_};
    const bool added = keys_.emplace(std::pair{tenant, key}, false).second;
    queued_ += added ? 1 : 0;
    return added;
  }
  /// Its compile starts.
  void start(const std::string& tenant, const digest& key) {
    std::lock_guard guard{mutex_};
    auto [it, added] = keys_.emplace(std::pair{tenant, key}, true);
    if (!added && !it->second) {
      it->second = true;
      --queued_;
    }
  }
  /// Stored, or given up.
  void remove(const std::string& tenant, const digest& key) {
    std::lock_guard guard{mutex_};
    auto it = keys_.find({tenant, key});
    if (it == keys_.end())
      return;
    queued_ -= it->second ? 0 : 1;
    keys_.erase(it);
  }
  /// Images queued whose compile has not started.
  size_t queued() const {
    std::lock_guard guard{mutex_};
    return queued_;
  }
  /// Whether its compile (or the store after it) is running now.
  bool running(const std::string& tenant, const digest& key) const {
    std::lock_guard guard{mutex_};
    auto it = keys_.find({tenant, key});
    return it != keys_.end() && it->second;
  }

private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, digest>, bool> keys_; ///< true: running
  size_t queued_ = 0;                                   ///< keys_ entries not running
};

/// Atomically updated counters behind node_stats.
struct node_counters {
  std::atomic<uint64_t> requests{0}, completed{0}, failed{0}, overloaded{0}, cancelled{0},
      library_hits{0}, library_misses{0}, encoder_cache_hits{0}, encodes{0}, load_fallbacks{0},
      stores{0}, prefills{0}, prefill_us{0}, load_wait_us{0}, decode_steps{0}, compressions{0},
      compress_us{0}, compress_saved_bytes{0}, compress_fallbacks{0}, routed_by_affinity{0},
      routed_images_held{0}, kv_send_unlocked_waits{0}, image_decodes{0};
  std::atomic<uint64_t> admission_queue{0}; ///< gauge: requests in the router's queue
  /// gauge: sequences the node's decode workers generate now (a
  /// background compile takes short steps while any stream runs).
  std::atomic<int64_t> decoding{0};
  std::array<std::atomic<uint64_t>, n_request_stages> stage_us{}, stage_count{};
  /// Adds `us` to `stage`.
  void add_stage(request_stage stage, uint64_t us) {
    stage_us[size_t(stage)] += us;
    stage_count[size_t(stage)]++;
  }
  /// Adds the time since `since` to `stage`.
  void add_stage_since(request_stage stage, std::chrono::steady_clock::time_point since) {
    add_stage(stage, uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - since)
                                  .count()));
  }
};

/// The shared state of one node's actors.
struct node_context {
  /// Loads the model, creates the pool, opens the library and starts the
  /// loader. Errors name the piece that failed.
  static result<std::unique_ptr<node_context>> create(node_options options);

  node_options options;
  std::unique_ptr<mosaic::backend> backend;
  std::unique_ptr<llava_engine> engine; // its pool holds every request's KV
  std::optional<image_encoder> encoder;
  std::unique_ptr<kv::kv_library> library;
  std::unique_ptr<kv::kv_loader> loader;
  digest model_fingerprint{};

  /// The backend is driven by one thread at a time (engine/llava_engine.hpp):
  /// every encode, compile, prefill chunk and decode step holds this (FIFO).
  compute_lock compute_mutex;

  // -- handle tables ------------------------------------------------------------
  handle_table<const std::vector<float>> embeddings; // [n_tokens, hidden] each
  handle_table<const decoded_pixels> decoded;        ///< linker -> encoder (EncodeRequest.decoded)
  handle_table<const compiled_image> compiled;       ///< compiled images awaiting a store
  compile_registry compiling;                        ///< images in store after use
  handle_table<loaded_entry> loads;                  ///< library hits of running requests
  handle_table<kv_sequence> sequences;               ///< prefilled KV awaiting decode
  handle_table<prefill_job> jobs;                    ///< keyed by request id
  handle_table<compress_job> compress_jobs;          ///< prefill → compress, by request id

  node_counters counters;
  /// Requests routed to each prefill worker (router thread writes, stats() reads).
  mutable std::mutex routed_mutex;
  std::vector<uint64_t> routed_per_worker;

  /// Admission to the prefill, compress and decode stages (never null).
  std::unique_ptr<stage_admission> stages;

  /// A snapshot of the counters and the pool.
  node_stats stats() const;
};

/// Nanoseconds since the Unix epoch (the deadline clock of the messages).
int64_t unix_now_ns();

} // namespace mosaic::actors
