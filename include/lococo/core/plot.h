// PNG plots through gnuplot (a Debian package set-up installs): the caller
// writes the gnuplot commands that draw, this writes the PNG atomically.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lococo {

// Runs gnuplot with `commands` (data inline as $name << EOD ... EOD blocks) and
// output set to a temporary PNG, renamed to `png` on success. Returns "" on
// success or a one-line reason (gnuplot missing, or its error).
std::string render_png(const std::string& commands, const std::filesystem::path& png, int width = 900, int height = 540);

// render_png that appends `png` to `written` on success and only warns (spdlog)
// otherwise: reports keep their numbers in JSON when no plot can be drawn.
void render_png_into(std::vector<std::filesystem::path>& written, const std::string& commands,
                     const std::filesystem::path& png, int width = 900, int height = 540);

// A string quoted for gnuplot ('...' with ' doubled).
std::string gnuplot_quote(const std::string& s);

// One named line of a line chart: its (x, y) points.
struct PlotSeries {
  std::string title;
  std::vector<std::pair<double, double>> points;
};
// gnuplot commands drawing `series` as lines with points, after `settings`
// ("set title ...\n" lines: labels, scales, ranges); key outside right, grid.
std::string line_chart(const std::string& settings, const std::vector<PlotSeries>& series);

}  // namespace lococo
