#pragma once

// CURVE key pairs of the data plane (ZeroMQ's CurveZMQ: each node has
// one; the topology lists every node's public key, each node reads its
// own secret from a key file). `mosaic keys --out FILE` makes a pair.
//
// The key file: two lines, "public: <Z85>" and "secret: <Z85>", mode 0600.
//
//   auto pair = make_curve_pair();
//   write_key_file("node.key", *pair);
//   auto back = read_key_file("node.key");   // checks the pair matches

#include <filesystem>
#include <string>

#include "engine/error.hpp"

namespace mosaic::kv::transfer {

struct curve_pair {
  std::string public_key; ///< Z85, 40 characters
  std::string secret_key; ///< Z85, 40 characters
};

/// A fresh pair from libzmq's CSPRNG.
result<curve_pair> make_curve_pair();

/// Writes `pair` to a new file readable by its owner only; refuses to
/// replace an existing file.
status write_key_file(const std::filesystem::path& path, const curve_pair& pair);

/// Reads a key file: both keys present and valid, and the public key the
/// one the secret key derives.
result<curve_pair> read_key_file(const std::filesystem::path& path);

} // namespace mosaic::kv::transfer
