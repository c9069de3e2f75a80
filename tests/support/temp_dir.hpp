#pragma once

// A fresh directory under the system temp dir for one test, removed with
// its contents when it goes out of scope. Shared by every test folder.

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>

namespace mosaic::testing {

class temp_dir {
public:
  /// `tag` names the directory (mosaic-<tag>-<random>) so that leftovers of
  /// a crashed test say where they came from.
  explicit temp_dir(std::string_view tag = "test") {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("mosaic-" + std::string{tag} + "-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// Writes `bytes` to `name` inside the directory; returns the full path.
  std::string write(const std::string& name, std::string_view bytes) const {
    auto file = path_ / name;
    std::ofstream out{file, std::ios::binary};
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return file.string();
  }

private:
  std::filesystem::path path_;
};

} // namespace mosaic::testing
