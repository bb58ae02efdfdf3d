// Runs this program in N processes on this host for data-parallel fine-tuning, as
// `torchrun --nproc-per-node N` would: each child gets RANK, WORLD_SIZE and a rendezvous
// file (ANYBIT_STORE_FILE) in its environment, the parent waits for all of them.
#pragma once

#include <string>
#include <vector>

namespace anybit_cli {

// Starts `nproc` copies of /proc/self/exe with `args` (args[0] is the program name) and
// waits. When one fails, the others are stopped. Returns 0 when all succeed, else the
// first failure's exit status (128 + signal for a killed child). Throws std::runtime_error
// when a process cannot be started.
int launch_local(int nproc, const std::vector<std::string>& args);

}  // namespace anybit_cli
