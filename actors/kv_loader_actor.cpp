#include "actors/kv_loader_actor.hpp"

#include <chrono>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/pipeline_messages.hpp"
#include "messages/error_convert.hpp"
#include "messages/readers.hpp"

namespace mosaic::actors {

namespace {

using steady = std::chrono::steady_clock;

/// A lookup hit waiting for its load request.
struct pending_hit {
  kv::lookup_hit hit;
  steady::time_point since;
};

struct kv_loader_state {
  node_context* ctx = nullptr;
  uint64_t next_entry = 1;
  std::unordered_map<uint64_t, pending_hit> pending;
  static inline const char* name = "kv_loader";
};

/// A hit whose request died before asking for the load would hold its
/// lease forever; leases older than this are dropped.
constexpr auto pending_ttl = std::chrono::seconds{120};

void drop_stale(kv_loader_state& st) {
  const auto now = steady::now();
  std::erase_if(st.pending, [&](const auto& kv) { return now - kv.second.since > pending_ttl; });
}

library_lookup_result_msg lookup(kv_loader_state& st, const library_lookup_msg& m) {
  drop_stale(st);
  wire::library_lookup_result out;
  out.request_id = m->request_id();
  const std::string tenant = m->tenant() ? m->tenant()->str() : std::string{};
  if (m->keys() == nullptr)
    return make_library_lookup_result_msg(out);
  for (const auto* k : *m->keys()) {
    wire::lookup_entry e;
    e.key = from_msg_key(*k);
    auto hit = st.ctx->library->lookup(tenant, e.key);
    if (!hit) {
      out.entries.push_back(e); // miss (not_found) or refused: compute it
      continue;
    }
    e.tier = hit->in_ram() ? msg::Tier::ram : msg::Tier::disk;
    e.n_tokens = hit->in_ram() ? static_cast<uint32_t>(hit->ram->n_tokens)
                               : static_cast<uint32_t>(hit->disk.header().n_tokens);
    e.entry_id = st.next_entry++;
    st.pending.emplace(e.entry_id, pending_hit{std::move(*hit), steady::now()});
    out.entries.push_back(e);
  }
  return make_library_lookup_result_msg(out);
}

layer_ready_msg load(kv_loader_state& st, const load_request_msg& m) {
  wire::layer_ready out;
  out.request_id = m->request_id();
  out.entry_id = m->entry_id();
  out.key = from_key(m->key());
  auto it = st.pending.find(m->entry_id());
  if (it == st.pending.end()) {
    out.err = make_error(errc::not_found, "library entry ", std::to_string(m->entry_id()),
                         " was not looked up (or its lease expired); look it up again");
    return make_layer_ready_msg(out);
  }
  auto entry = std::make_shared<loaded_entry>();
  auto hit = std::move(it->second.hit);
  st.pending.erase(it);
  if (hit.in_ram())
    entry->ram = std::move(hit.ram);
  else
    entry->handle = st.ctx->loader->load(std::move(hit.disk), &entry->image);
  out.k.id = st.ctx->loads.put(std::move(entry));
  out.v.id = out.k.id;
  return make_layer_ready_msg(out);
}

/// Deletes the tenant's own entries of `m`'s keys (DELETE
/// /v1/mosaic/images/{id}); the first error, not_found when none was there.
store_result_msg remove(kv_loader_state& st, const library_lookup_msg& m) {
  const std::string tenant = m->tenant() ? m->tenant()->str() : std::string{};
  error first{};
  if (m->keys() == nullptr || m->keys()->size() == 0)
    first = make_error(errc::invalid_argument, "remove names no key");
  else
    for (const auto* k : *m->keys())
      if (auto ok = st.ctx->library->remove(tenant, from_key(k)); !ok && first.code == errc::none)
        first = ok.err();
  return make_store_result_msg(m->request_id(), {}, 0, first);
}

store_result_msg store(kv_loader_state& st, const store_request_msg& m) {
  const auto image_key = from_key(m->key());
  const uint64_t compiled_id = m->kv() ? m->kv()->sequence() : 0;
  auto img = st.ctx->compiled.take(compiled_id);
  if (!img)
    return make_store_result_msg(m->request_id(), {}, 0,
                                 make_error(errc::not_found, "no compiled image behind handle ",
                                            std::to_string(compiled_id)));
  const std::string tenant = m->tenant() ? m->tenant()->str() : std::string{};
  auto info = st.ctx->library->put_static(tenant, image_key, *img);
  if (!info)
    return make_store_result_msg(m->request_id(), {}, 0, info.err());
  st.ctx->counters.stores++;
  return make_store_result_msg(m->request_id(), info->key, info->file_bytes, {});
}

caf::behavior kv_loader_actor(caf::stateful_actor<kv_loader_state>* self, node_context* ctx) {
  self->state.ctx = ctx;
  return {
      [self](lookup_atom, const library_lookup_msg& m) { return lookup(self->state, m); },
      [self](load_atom, const load_request_msg& m) { return load(self->state, m); },
      [self](store_atom, const store_request_msg& m) { return store(self->state, m); },
      [self](remove_atom, const library_lookup_msg& m) { return remove(self->state, m); },
  };
}

} // namespace

caf::actor spawn_kv_loader(caf::actor_system& sys, node_context* ctx) {
  return sys.spawn<caf::detached>(kv_loader_actor, ctx);
}

} // namespace mosaic::actors
