// `lococo`: one executable, one subcommand per job. Each subcommand lives in
// apps/cmd_<name>.cpp; errors become one line on stderr and a non-zero exit.
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli_common.h"
#include "lococo/core/memory_stats.h"
#include "commands.h"

// libgomp reads OMP_WAIT_POLICY once, when it is loaded, and by default its
// threads spin for a long time after each parallel region. When anything else
// shares the cores that spinning steals their time (docs/DESIGN.md section 8).
// So unless the user chose a policy, lococo asks for the passive one (applied
// by the one restart of run_selected); OMP_WAIT_POLICY=ACTIVE keeps spinning
// for dedicated machines.

int main(int argc, char** argv) {
  lococo::keep_heap_steady();
  lococo::cli::set_process_args(argv);
  lococo::cli::request_env("OMP_WAIT_POLICY", "PASSIVE");
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
