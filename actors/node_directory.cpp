#include "actors/node_directory.hpp"

#include <map>

#include <caf/all.hpp>

#include "messages/caf_types.hpp"

namespace mosaic::actors {

namespace {

struct directory_state {
  std::string node;
  actor_resolver resolve;
  std::shared_ptr<peer_directories> directories;
  std::map<caf::actor_addr, std::string> introduced; ///< monitored directories -> node
  static inline const char* name = "node_directory";
};

caf::behavior node_directory(caf::stateful_actor<directory_state>* self, std::string node,
                             actor_resolver resolve,
                             std::shared_ptr<peer_directories> directories) {
  self->state.node = std::move(node);
  self->state.resolve = std::move(resolve);
  self->state.directories = std::move(directories);
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.introduced.find(dm.source);
    if (it == st.introduced.end())
      return;
    if (st.directories)
      st.directories->forget(it->second, dm.source);
    st.introduced.erase(it);
  });
  return {
      [self](hello_atom, const std::string& kind, const std::string& from_node,
             caf::actor& from_directory) -> caf::result<caf::actor> {
        auto& st = self->state;
        if (from_directory && st.directories && from_node != st.node &&
            !st.introduced.count(from_directory.address())) {
          self->monitor(from_directory);
          st.introduced.emplace(from_directory.address(), from_node);
          st.directories->introduce(from_node, from_directory);
        }
        if (kind == "directory")
          return caf::actor_cast<caf::actor>(self);
        auto a = st.resolve(kind, from_node);
        // Actors made for peers (gateways) stop with the directory.
        if (a)
          self->link_to(a);
        if (!a)
          return to_caf_error(make_error(errc::not_found, "node '", self->state.node, "' runs no ",
                                         kind,
                                         " actor; check that every node runs the same topology "
                                         "file"));
        return a;
      },
      [self](heartbeat_atom) { return self->state.node; },
  };
}

} // namespace

caf::actor spawn_node_directory(caf::actor_system& sys, std::string node, actor_resolver resolve,
                                std::shared_ptr<peer_directories> directories) {
  return sys.spawn(node_directory, std::move(node), std::move(resolve), std::move(directories));
}

} // namespace mosaic::actors
