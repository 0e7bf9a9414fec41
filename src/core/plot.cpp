#include "lococo/core/plot.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lococo {

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string render_png(const std::string& commands, const std::filesystem::path& png, int width, int height) {
  namespace fs = std::filesystem;
  const fs::path tmp = png.string() + fmt::format(".tmp{}", static_cast<long>(::getpid()));
  const fs::path script = png.string() + fmt::format(".gp.tmp{}", static_cast<long>(::getpid()));
  {
    std::ofstream out(script);
    out << fmt::format("set terminal pngcairo size {},{} noenhanced font 'sans,10'\n", width, height)
        << "set output " << gnuplot_quote(tmp.string()) << "\n"
        << commands << "\nunset output\n";
    if (!out) return fmt::format("{}: cannot write the gnuplot script", script.string());
  }
  const fs::path log = script.string() + ".log";
  const std::string cmd = fmt::format("gnuplot {} > {} 2>&1", gnuplot_quote(script.string()), gnuplot_quote(log.string()));
  const int status = std::system(cmd.c_str());
  std::string why;
  if (status != 0) {
    std::ifstream in(log);
    std::string line, last;
    while (std::getline(in, line))
      if (!line.empty()) last = line;
    why = WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "gnuplot is not installed (apt-get install gnuplot-nox)"
                                                           : fmt::format("gnuplot failed: {}", last);
  }
  std::error_code ec;
  if (why.empty()) fs::rename(tmp, png, ec);
  if (ec) why = fmt::format("{}: {}", png.string(), ec.message());
  fs::remove(script, ec);
  fs::remove(log, ec);
  fs::remove(tmp, ec);
  return why;
}

void render_png_into(std::vector<std::filesystem::path>& written, const std::string& commands,
                     const std::filesystem::path& png, int width, int height) {
  const std::string why = render_png(commands, png, width, height);
  if (why.empty())
    written.push_back(png);
  else
    spdlog::warn("no plot {}: {}", png.string(), why);
}

std::string line_chart(const std::string& settings, const std::vector<PlotSeries>& series) {
  std::ostringstream gp;
  gp << settings << "set key outside right\nset grid\n";
  std::string plot = "plot ";
  for (size_t i = 0; i < series.size(); ++i) {
    gp << "$series" << i << " << EOD\n";
    for (const auto& [x, y] : series[i].points) gp << x << " " << y << "\n";
    gp << "EOD\n";
    plot += (i ? ", $series" : "$series") + std::to_string(i) + " using 1:2 with linespoints title " +
            gnuplot_quote(series[i].title);
  }
  gp << plot << "\n";
  return gp.str();
}

}  // namespace lococo
