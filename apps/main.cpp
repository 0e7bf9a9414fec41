// `lococo`: one executable, one subcommand per job. Each subcommand lives in
// apps/cmd_<name>.cpp; errors become one line on stderr and a non-zero exit.
#include <cstdlib>
#include <iostream>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli_common.h"
#include "commands.h"

namespace {

// libgomp reads OMP_WAIT_POLICY once, when it is loaded, and by default its
// threads spin for a long time after each parallel region. When anything else
// shares the cores that spinning steals their time (measured on 2 cores with a
// second busy process: a training step took 978 ms spinning, 419 ms passive).
// So unless the user chose a policy, lococo restarts itself once with the
// passive one; OMP_WAIT_POLICY=ACTIVE keeps spinning for dedicated machines.
void prefer_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp_waits(argv);
  lococo::cli::set_process_args(argv);
  CLI::App app{"lococo: long-context language models in fixed memory (LoCoCo KV-cache compression)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lococo 0.1.0");
  lococo::cli::add_all_commands(app);
  try {
    app.parse(argc, argv);
    return lococo::cli::run_selected(app);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const c10::Error& e) {
    std::cerr << "lococo: error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "lococo: error: " << e.what() << "\n";
  }
  return 1;
}
