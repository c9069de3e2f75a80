#include "sim/zmq_target.hpp"

#include "sim/procedural_image.hpp"

namespace mosaic::sim {

result<std::unique_ptr<zmq_target>> zmq_target::connect(const std::string& url, const workload& w,
                                                        zmq_target_options options) {
  constexpr std::string_view scheme = "zmq://";
  if (!url.starts_with(scheme) || url.find(':', scheme.size()) == std::string::npos)
    return make_error(errc::invalid_argument, "--target: '", url,
                      "' is not zmq://HOST:PORT (the front door's ZeroMQ API)");
  auto client = api::api_client::connect("tcp://" + url.substr(scheme.size()));
  if (!client)
    return std::move(client).err();
  return std::make_unique<zmq_target>(std::move(*client), url, w, std::move(options));
}

zmq_target::zmq_target(std::unique_ptr<api::api_client> client, std::string url, const workload& w,
                       zmq_target_options options)
  : client_(std::move(client)), url_(std::move(url)), options_(std::move(options)) {
  png_.resize(size_t(w.spec.image_pool));
  for (int idx : w.used_images())
    png_[size_t(idx)] = procedural_png(w.seed, idx, w.spec.image_size);
  thread_ = std::thread{[this] { serve(); }};
}

zmq_target::~zmq_target() {
  drain(std::chrono::milliseconds{0});
  stop_ = true;
  thread_.join();
}

void zmq_target::submit(const sim_request& req, on_token token, on_done done) {
  api::chat_request c;
  c.api_key = options_.api_key;
  c.policy = options_.policy;
  c.max_tokens = req.max_tokens;
  c.temperature = 0.0f;
  c.seed = options_.sampling_seed;
  api::message m;
  for (const auto& p : req.pieces) {
    if (p.is_image)
      m.content.emplace_back(api::image_bytes{png_[size_t(p.image)], "image/png"});
    else
      m.content.emplace_back(p.text);
  }
  c.messages.push_back(std::move(m));
  std::lock_guard lock{mutex_};
  queue_.push_back({std::move(c), std::move(token), std::move(done)});
  ++in_flight_;
}

void zmq_target::end(running& r, const std::string& error) {
  r.outcome.ok = error.empty();
  r.outcome.error = error;
  r.done(r.outcome, clock::now());
  std::lock_guard lock{mutex_};
  --in_flight_;
  idle_.notify_all();
}

void zmq_target::serve() {
  while (!stop_) {
    std::deque<pending> to_send;
    bool cancel = false;
    {
      std::lock_guard lock{mutex_};
      to_send.swap(queue_);
      cancel = cancel_all_;
    }
    for (auto& p : to_send) {
      running r{std::move(p.token), std::move(p.done), {}};
      if (cancel) {
        end(r, "cancelled: the drain timeout passed");
        continue;
      }
      auto id = client_->send(p.request);
      if (!id) {
        end(r, id.err().to_string());
        continue;
      }
      flying_.emplace(*id, std::move(r));
    }
    if (cancel && !flying_.empty()) {
      for (auto& [id, r] : flying_) {
        (void)client_->cancel(id);
        end(r, "cancelled: the drain timeout passed");
      }
      flying_.clear();
    }
    auto f = client_->receive(std::chrono::milliseconds{flying_.empty() ? 20 : 1});
    if (!f || !*f)
      continue; // a corrupt frame names no request we could end
    auto it = flying_.find((*f)->request_id);
    if (it == flying_.end())
      continue;
    auto& r = it->second;
    if (const auto* t = std::get_if<api::token_frame>(&(*f)->body)) {
      r.token(t->token_id, clock::now());
      r.outcome.tokens.push_back(t->token_id);
      continue;
    }
    if (const auto* d = std::get_if<api::finish_frame>(&(*f)->body)) {
      r.outcome.prompt_tokens = int(d->prompt_tokens);
      r.outcome.image_tokens = int(d->image_tokens);
      end(r, "");
    } else {
      const auto& e = std::get<api::error_frame>((*f)->body);
      end(r, "HTTP " + std::to_string(e.status) + ": " + e.message);
    }
    flying_.erase(it);
  }
}

void zmq_target::drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock{mutex_};
  if (!idle_.wait_for(lock, timeout, [this] { return in_flight_ == 0; })) {
    cancel_all_ = true; // the serve thread ends the rest with an error
    idle_.wait(lock, [this] { return in_flight_ == 0; });
    cancel_all_ = false;
  }
}

std::string zmq_target::describe() const {
  return "ZeroMQ front door " + url_;
}

} // namespace mosaic::sim
