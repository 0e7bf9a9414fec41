#include "lococo/core/progress.h"

#include <cstdio>

#include <unistd.h>

#include <fmt/format.h>

namespace lococo {
namespace {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const auto t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{:02}:{:02}", t / 60, t % 60);
}

}  // namespace

Progress::Progress(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_) finish();
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::set(int64_t done, const std::string& extra) {
  done_ = done;
  if (!extra.empty()) extra_ = extra;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : 5.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  if (!extra.empty()) extra_ = extra;
  draw(true);
}

void Progress::draw(bool final) {
  if (!enabled_) return;
  const double el = elapsed_seconds();
  const double rate = el > 0 ? done_ / el : 0.0;
  const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / total_) : 0.0;
  const int width = 24;
  const int filled = static_cast<int>(frac * width);
  const std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
  const double eta = rate > 0 ? (total_ - done_) / rate : -1;
  const std::string line =
      fmt::format("{} [{}] {}/{} {:.1f} {}/s elapsed {} eta {}{}{}", label_, bar, done_, total_, rate, unit_,
                  format_duration(el), final ? "00:00" : format_duration(eta), extra_.empty() ? "" : " ", extra_);
  if (tty_)
    fmt::print(stderr, "\r\033[K{}{}", line, final ? "\n" : "");
  else
    fmt::print(stderr, "{}\n", line);
  std::fflush(stderr);
}

}  // namespace lococo
