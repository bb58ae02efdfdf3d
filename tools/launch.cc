// See launch.h.
#include "launch.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace anybit_cli {

namespace {

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int launch_local(int nproc, const std::vector<std::string>& args) {
  char tmpl[] = "/tmp/anybit-ddp-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("--nproc: cannot create a temporary directory: ") +
                                                 std::strerror(errno));
  const std::string dir = tmpl;
  std::vector<std::string> inherited;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key != "RANK" && key != "WORLD_SIZE" && key != "LOCAL_RANK" && key != "ANYBIT_STORE_FILE" &&
        key != "MASTER_ADDR" && key != "MASTER_PORT")
      inherited.push_back(kv);
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<pid_t> pids;
  auto stop_all = [&](pid_t except) {
    for (pid_t p : pids)
      if (p != except && p > 0) ::kill(p, SIGTERM);
  };
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env = inherited;
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("ANYBIT_STORE_FILE=" + dir + "/store");
    std::vector<char*> envp;
    for (auto& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      stop_all(0);
      for (pid_t p : pids) ::waitpid(p, nullptr, 0);
      std::filesystem::remove_all(dir);
      throw std::runtime_error("--nproc: cannot start process " + std::to_string(r) + ": " + std::strerror(rc));
    }
    pids.push_back(pid);
  }
  int result = 0;
  for (size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, 0);
    if (done < 0) break;
    const int code = status_code(status);
    if (code != 0 && result == 0) {
      result = code;
      stop_all(done);  // the others would wait for it in the next allreduce until the timeout
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return result;
}

}  // namespace anybit_cli
