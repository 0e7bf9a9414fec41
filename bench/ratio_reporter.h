// A Google Benchmark console reporter that also keeps each benchmark's
// seconds per iteration by name, so a benchmark's main() can print ratios of
// runs measured side by side after RunSpecifiedBenchmarks().
#pragma once

#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace lococo {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs)
      if (!r.error_occurred && r.iterations > 0)
        seconds[r.run_name.function_name] = r.real_accumulated_time / static_cast<double>(r.iterations);
  }
  // Seconds per iteration of `name`, or 0 when it did not run (filtered out, failed).
  double of(const std::string& name) const {
    const auto it = seconds.find(name);
    return it == seconds.end() ? 0.0 : it->second;
  }
  std::map<std::string, double> seconds;
};

}  // namespace lococo
