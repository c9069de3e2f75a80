#pragma once

// A child process of a CLI test (`mosaic serve`, `mosaic node`), with its
// output in a log file; killed when destroyed.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mosaic::test {

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A child process with its output in a log file; killed when destroyed.
struct child {
  pid_t pid = -1;
  std::filesystem::path log;

  void start(const std::vector<std::string>& argv, const std::filesystem::path& log_path) {
    log = log_path;
    pid = fork();
    if (pid == 0) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> args;
      for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  bool running() {
    if (pid <= 0)
      return false;
    return waitpid(pid, nullptr, WNOHANG) == 0;
  }
  void kill_now(int sig) {
    if (pid <= 0)
      return;
    ::kill(pid, sig);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) != 0) {
        pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  /// Waits until the log holds `text`; false when the process exits or
  /// `timeout` passes first.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (read_file(log).find(text) != std::string::npos)
        return true;
      if (!running())
        return read_file(log).find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    return false;
  }
  /// Waits up to `timeout` for the process to exit: its exit status (a
  /// signal N reads 128 + N), or -1 while it still runs.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (pid > 0) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= end)
        return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    return -1;
  }
  ~child() { kill_now(SIGTERM); }
};

} // namespace mosaic::test
