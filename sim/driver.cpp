#include "sim/driver.hpp"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

namespace mosaic::sim {

namespace {

/// Counters the callbacks bump and the progress thread reads.
struct progress_counters {
  std::atomic<size_t> sent{0}, done{0}, failed{0}, tokens{0};
};

/// Draws the progress bar until stopped (see drive_options::progress_bar).
class progress_printer {
public:
  progress_printer(const progress_counters& c, std::string label, size_t total, double duration_s,
                   target::clock::time_point start)
    : c_(c), label_(std::move(label)), total_(total), duration_s_(duration_s), start_(start),
      tty_(isatty(STDERR_FILENO) == 1), thread_([this] { loop(); }) {}

  ~progress_printer() {
    {
      std::lock_guard lock{mutex_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    draw(true);
  }

private:
  void loop() {
    std::unique_lock lock{mutex_};
    while (!cv_.wait_for(lock, std::chrono::milliseconds{250}, [this] { return stop_; }))
      draw(false);
  }

  void draw(bool last) {
    const size_t finished = c_.done.load() + c_.failed.load();
    if (!tty_) {
      // Logs: a line at each tenth of the requests, and the last one.
      const size_t tenth = total_ == 0 ? 0 : finished * 10 / total_;
      if (!last && (tenth <= printed_tenth_ || finished == total_))
        return;
      printed_tenth_ = tenth;
    }
    const double elapsed = std::chrono::duration<double>(target::clock::now() - start_).count();
    const auto line = progress_line(label_, c_.sent.load(), total_, c_.done.load(),
                                    c_.failed.load(), c_.tokens.load(), elapsed, duration_s_);
    if (tty_)
      std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), last ? "\n" : "");
    else
      std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  }

  const progress_counters& c_;
  std::string label_;
  size_t total_;
  double duration_s_;
  target::clock::time_point start_;
  bool tty_;
  size_t printed_tenth_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_; // last: starts after the fields it reads
};

} // namespace

std::string progress_line(const std::string& label, size_t sent, size_t total, size_t done,
                          size_t failed, size_t tokens, double elapsed_s, double duration_s) {
  constexpr int width = 20;
  const size_t finished = done + failed;
  const int filled = total == 0 ? width : int(finished * width / total);
  std::string bar(size_t(filled), '#');
  bar.resize(width, '.');
  char buf[256];
  std::snprintf(
      buf, sizeof buf, "[%s] [%s] %zu/%zu sent, %zu done, %zu failed, %zu tokens, %.0f/%.0f s",
      label.c_str(), bar.c_str(), sent, total, done, failed, tokens, elapsed_s, duration_s);
  return buf;
}

run_result drive(target& t, const workload& w, const drive_options& options) {
  using clock = target::clock;
  const auto seconds = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };

  run_result out;
  out.records.resize(w.requests.size());
  std::mutex mutex; // serialises the --verbose lines (records are per request, see target.hpp)
  progress_counters counters;
  const auto start = clock::now();
  const double last_arrival = w.requests.empty() ? 0.0 : w.requests.back().arrival_s;
  std::unique_ptr<progress_printer> bar;
  if (options.progress_bar)
    bar = std::make_unique<progress_printer>(counters, options.label, w.requests.size(),
                                             last_arrival, start);
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
    counters.sent++;
    t.submit(
        req,
        [&rec, &counters, start, seconds](int32_t token, clock::time_point at) {
          const double s = seconds(at - start);
          if (rec.token_times_s.empty())
            rec.first_token_s = s;
          rec.token_times_s.push_back(s);
          rec.tokens.push_back(token);
          counters.tokens++;
        },
        [&, i, start, seconds](const request_outcome& o, clock::time_point at) {
          auto& r = out.records[i];
          r.end_s = seconds(at - start);
          r.ok = o.ok && !r.token_times_s.empty();
          r.error = o.ok && r.token_times_s.empty() ? "no token generated" : o.error;
          r.prompt_tokens = o.prompt_tokens;
          r.image_tokens = o.image_tokens;
          r.output_tokens = int(r.token_times_s.size());
          (r.ok ? counters.done : counters.failed)++;
          if (!options.progress)
            return;
          std::lock_guard lock{mutex};
          std::fprintf(stderr, "  [%s] %zu/%zu done (request %zu: %s, ttft %.3f s)\n",
                       options.label.c_str(), counters.done + counters.failed, w.requests.size(), i,
                       r.ok ? "ok" : r.error.c_str(), r.ok ? r.ttft() : 0.0);
        });
  }
  t.drain(options.drain_timeout);
  bar.reset();
  out.summary = summarize(out.records, options.objectives);
  out.summary.label = options.label;
  out.summary.rate = options.rate;
  return out;
}

} // namespace mosaic::sim
