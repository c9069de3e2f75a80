#pragma once

// What `mosaic sim run|compare` drive (docs/sim.md): the in-process
// cluster (no --target) or a remote one named by --target's URL scheme.
// One backend per command; `run` is called once per policy (and rate)
// with the same workload, each starting from the same cache state.

#include <memory>
#include <string>

#include "cli/sim_options.hpp"
#include "sim/report.hpp"

namespace mosaic::cli {

class live_backend {
public:
  virtual ~live_backend() = default;
  /// Makes the workload's images available (library / uploads); once per
  /// workload, before its runs.
  virtual status prepare(const sim::workload& w) = 0;
  /// One open-loop run of `w` with every request on `policy`.
  virtual result<sim::run_result> run(const sim::workload& w, const std::string& policy,
                                      double rate) = 0;
  /// What is driven, for the report ("front door http://127.0.0.1:8000 (builtin:small)").
  virtual std::string describe() const = 0;
  /// The served model, for the report.
  virtual std::string model() const = 0;
};

/// The backend `o.target` names: empty → the in-process cluster,
/// http://HOST:PORT → a `mosaic serve` front door (connects now: an
/// unreachable one is an error here), zmq://HOST:PORT → its ZeroMQ API
/// (API key from --api-key, else MOSAIC_API_KEY). Unknown schemes are errors that list
/// the known ones.
result<std::unique_ptr<live_backend>> make_live_backend(sim_options& o);

} // namespace mosaic::cli
