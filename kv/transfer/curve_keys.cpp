#include "kv/transfer/curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <zmq.h>

namespace mosaic::kv::transfer {

namespace {

constexpr size_t max_key_file_bytes = 4096;

bool valid_z85_key(const std::string& key) {
  uint8_t bin[32];
  return key.size() == 40 && zmq_z85_decode(bin, key.c_str()) != nullptr;
}

} // namespace

result<curve_pair> make_curve_pair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    return make_error(errc::unsupported, "this libzmq has no CURVE support (", zmq_strerror(errno),
                      ")");
  return curve_pair{pub, sec};
}

status write_key_file(const std::filesystem::path& path, const curve_pair& pair) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errno == EEXIST ? errc::invalid_argument : errc::io_error, "cannot create ",
                      path.string(), ": ", std::strerror(errno),
                      errno == EEXIST ? " (a key file is never replaced; remove it first)" : "");
  const std::string text = "public: " + pair.public_key + "\nsecret: " + pair.secret_key + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok)
    return make_error(errc::io_error, "cannot write ", path.string(), ": ", std::strerror(errno));
  return {};
}

result<curve_pair> read_key_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return make_error(errc::not_found, "cannot read key file ", path.string(), ": ", ec.message());
  if (size > max_key_file_bytes)
    return make_error(errc::invalid_argument, "key file ", path.string(), " is ",
                      std::to_string(size), " bytes; a key file is two short lines");
  std::ifstream in{path};
  curve_pair pair;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#')
      continue;
    const auto colon = line.find(':');
    const std::string key = line.substr(0, colon);
    std::string value = colon == std::string::npos ? std::string{} : line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    if (key == "public")
      pair.public_key = value;
    else if (key == "secret")
      pair.secret_key = value;
    else
      return make_error(errc::invalid_argument, path.string(), ":", std::to_string(n),
                        ": unknown line; a key file has `public: …` and `secret: …`");
  }
  if (!valid_z85_key(pair.public_key) || !valid_z85_key(pair.secret_key))
    return make_error(errc::invalid_argument, "key file ", path.string(),
                      " needs `public:` and `secret:` lines with 40-character Z85 keys (make one "
                      "with `mosaic keys --out FILE`)");
  char derived[41] = {};
  if (zmq_curve_public(derived, pair.secret_key.c_str()) != 0 || pair.public_key != derived)
    return make_error(errc::invalid_argument, "key file ", path.string(),
                      ": the public key is not the secret key's");
  return pair;
}

} // namespace mosaic::kv::transfer
