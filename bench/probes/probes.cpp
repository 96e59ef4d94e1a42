// JSON lines and process readings for the probes.
#include "probes.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace karx_probes {

void JsonLine::key(std::string_view k) {
  if (text_.size() > 1) text_ += ',';
  text_ += '"';
  text_ += k;
  text_ += "\":";
}

JsonLine& JsonLine::add(std::string_view k, std::string_view value) {
  key(k);
  text_ += '"';
  for (char c : value) {
    if (c == '"' || c == '\\') text_ += '\\';
    text_ += c;
  }
  text_ += '"';
  return *this;
}

JsonLine& JsonLine::add(std::string_view k, std::int64_t value) {
  key(k);
  text_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::add(std::string_view k, std::uint64_t value) {
  key(k);
  text_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::add(std::string_view k, double value, int decimals) {
  key(k);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  text_ += buf;
  return *this;
}

void JsonLine::print() const {
  // One write per line, flushed at once: a reader never sees half an object, even if the
  // process dies right after.
  std::string line = text_ + "}\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

std::uint64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) throw std::runtime_error("cannot read /proc/self/statm");
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

double process_cpu_ms() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) throw std::runtime_error("getrusage failed");
  auto ms = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) / 1e3; };
  return ms(ru.ru_utime) + ms(ru.ru_stime);
}

int process_threads() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  throw std::runtime_error("no Threads: line in /proc/self/status");
}

void trim_heap() { malloc_trim(0); }

}  // namespace karx_probes
