#include "actors/node_directory.hpp"

#include <caf/all.hpp>

#include "messages/caf_types.hpp"

namespace mosaic::actors {

namespace {

struct directory_state {
  std::string node;
  actor_resolver resolve;
  static inline const char* name = "node_directory";
};

caf::behavior node_directory(caf::stateful_actor<directory_state>* self, std::string node,
                             actor_resolver resolve) {
  self->state.node = std::move(node);
  self->state.resolve = std::move(resolve);
  return {
      [self](hello_atom, const std::string& kind,
             const std::string& from_node) -> caf::result<caf::actor> {
        auto a = self->state.resolve(kind, from_node);
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

caf::actor spawn_node_directory(caf::actor_system& sys, std::string node, actor_resolver resolve) {
  return sys.spawn(node_directory, std::move(node), std::move(resolve));
}

} // namespace mosaic::actors
