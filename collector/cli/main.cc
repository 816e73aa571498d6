// triplinectl: the operators' command line for a Tripline collector. Everything lives in
// collector/cli/triplinectl.h; this file hands it the process's arguments, environment, terminal
// and streams. gRPC's own log lines (TLS handshake details and the like) are dropped unless
// GRPC_VERBOSITY is set: triplinectl's error message already says what failed.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "collector/cli/triplinectl.h"
#include "grpc/support/log.h"

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_function([](gpr_log_func_args*) {});
  }
  return tripline::cli::RunTriplinectl(argc, argv, tripline::cli::ProcessEnvironment(STDOUT_FILENO),
                                       std::cout, std::cerr);
}
