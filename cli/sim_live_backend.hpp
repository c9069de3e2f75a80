#pragma once

// What `mosaic sim run|compare` drive (docs/sim.md): the in-process
// cluster (no --target) or the servers named by --target's URL schemes,
// Mosaic front doors and OpenAI-compatible peers (vLLM, SGLang). A Mosaic
// backend runs once per policy (and rate), a peer once, with the same
// workload, each run starting from the same cache state.

#include <memory>
#include <string>
#include <vector>

#include "cli/sim_options.hpp"
#include "sim/report.hpp"

namespace mosaic::cli {

class live_backend {
public:
  virtual ~live_backend() = default;
  /// Makes the workload's images available (library / uploads / data
  /// URLs); once per workload, before its runs.
  virtual status prepare(const sim::workload& w) = 0;
  /// One open-loop run of `w` labelled `label`, every request on `policy`
  /// (a peer has no policies and ignores it).
  virtual result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                                      const std::string& label, double rate) = 0;
  /// What is driven, for the report ("vllm at http://127.0.0.1:8000 (model)").
  virtual std::string describe() const = 0;
  /// The served model, for the report.
  virtual std::string model() const = 0;
  /// Who serves it: "mosaic", or the peer's own name ("vllm", "sglang").
  virtual std::string server() const { return "mosaic"; }
  /// Where it is ("127.0.0.1:8000"; "in-process").
  virtual std::string where() const = 0;
  bool is_mosaic() const { return server() == "mosaic"; }
};

/// The backends `o.targets` name, in order: none → the in-process
/// cluster; http://HOST:PORT → a Mosaic front door or a peer (connects
/// now: an unreachable one is an error here); zmq://HOST:PORT → Mosaic's
/// ZeroMQ API (API key from --api-key, else MOSAIC_API_KEY). Unknown
/// schemes are errors that list the known ones. Resolves --images `auto`
/// (data URLs when any http target is not Mosaic).
result<std::vector<std::unique_ptr<live_backend>>> make_live_backends(sim_options& o);

/// One run of a compare: which backend, on which policy, under which label.
struct planned_run {
  live_backend* backend = nullptr;
  std::string policy; ///< "" for a peer
  std::string label;  ///< the policy, or the peer's name; "@HOST:PORT" added where two would clash
};

/// Every Mosaic backend once per policy, every peer once.
std::vector<planned_run> plan_runs(const std::vector<std::unique_ptr<live_backend>>& backends,
                                   const std::vector<std::string>& policies);

} // namespace mosaic::cli
