// `mosaic keys --out FILE`: a CURVE key pair for one node of a cluster.
// The secret stays in FILE (mode 0600) on that node; the printed public
// key goes into the topology (`public_key:` of the node).

#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "kv/transfer/curve_keys.hpp"

namespace mosaic::cli {

void add_keys_command(CLI::App& app, int* exit_code) {
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "keys", "Make a node's CURVE key pair for the encrypted, authenticated data plane");
  cmd->add_option("--out", *out, "key file to create (never replaced; mode 0600)")->required();
  cmd->callback([out, exit_code] {
    auto pair = kv::transfer::make_curve_pair();
    if (!pair) {
      std::fprintf(stderr, "mosaic keys: %s\n", pair.err().to_string().c_str());
      *exit_code = 1;
      return;
    }
    if (auto ok = kv::transfer::write_key_file(*out, *pair); !ok) {
      std::fprintf(stderr, "mosaic keys: %s\n", ok.err().to_string().c_str());
      *exit_code = 1;
      return;
    }
    std::printf("wrote %s (keep it on the node, readable by mosaic only)\n"
                "add to the node in the topology:\n"
                "    public_key: \"%s\"\n    key_file: %s\n",
                out->c_str(), pair->public_key.c_str(), out->c_str());
    *exit_code = 0;
  });
}

} // namespace mosaic::cli
