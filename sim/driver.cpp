#include "sim/driver.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

namespace mosaic::sim {

run_result drive(target& t, const workload& w, const drive_options& options) {
  using clock = target::clock;
  const auto seconds = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };

  run_result out;
  out.records.resize(w.requests.size());
  std::mutex mutex; // guards `finished` (records are per request, see target.hpp)
  size_t finished = 0;
  const auto start = clock::now();
  for (size_t i = 0; i < w.requests.size(); ++i) {
    const auto& req = w.requests[i];
    std::this_thread::sleep_until(start + std::chrono::duration_cast<clock::duration>(
                                              std::chrono::duration<double>(req.arrival_s)));
    auto& rec = out.records[i];
    rec.id = req.id;
    rec.dialogue = req.dialogue;
    rec.turn = req.turn;
    rec.arrival_s = req.arrival_s;
    rec.n_images = req.n_images();
    rec.sent_s = seconds(clock::now() - start);
    t.submit(
        req,
        [&rec, start, seconds](int32_t token, clock::time_point at) {
          const double s = seconds(at - start);
          if (rec.token_times_s.empty())
            rec.first_token_s = s;
          rec.token_times_s.push_back(s);
          rec.tokens.push_back(token);
        },
        [&, i, start, seconds](const request_outcome& o, clock::time_point at) {
          auto& r = out.records[i];
          r.end_s = seconds(at - start);
          r.ok = o.ok && !r.token_times_s.empty();
          r.error = o.ok && r.token_times_s.empty() ? "no token generated" : o.error;
          r.prompt_tokens = o.prompt_tokens;
          r.image_tokens = o.image_tokens;
          r.output_tokens = int(r.token_times_s.size());
          std::lock_guard lock{mutex};
          ++finished;
          if (options.progress)
            std::fprintf(stderr, "  [%s] %zu/%zu done (request %zu: %s, ttft %.3f s)\n",
                         options.label.c_str(), finished, w.requests.size(), i,
                         r.ok ? "ok" : r.error.c_str(), r.ok ? r.ttft() : 0.0);
        });
  }
  t.drain(options.drain_timeout);
  out.summary = summarize(out.records, options.objectives);
  out.summary.label = options.label;
  out.summary.rate = options.rate;
  return out;
}

} // namespace mosaic::sim
