/* SPDX-License-Identifier: MIT OR Apache-2.0 */
// Shared helpers for the grpc C++ interop/benchmark peers (not part of the library).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace amnx {

// Reads a whole file; exits with a message on failure.
inline std::string slurp(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// "--name value" / "--flag" parser. `flags` lists the options that take no value.
// Repeated options keep the last value, except those collected in `multi`.
struct Args {
  std::map<std::string, std::string> v;
  std::multimap<std::string, std::string> multi;
  bool has(const char *k) const { return v.count(k) != 0; }
  std::string get(const char *k, const char *def = "") const {
    auto it = v.find(k);
    return it == v.end() ? def : it->second;
  }
  double num(const char *k, double def) const {
    auto it = v.find(k);
    if (it == v.end()) return def;
    char *end = nullptr;
    double d = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end) {
      std::fprintf(stderr, "bad number for --%s: %s\n", k, it->second.c_str());
      std::exit(2);
    }
    return d;
  }
};

inline Args parse_args(int argc, char **argv, const char *flags, const char *multi, const char *usage) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string s = argv[i];
    if (s == "-h" || s == "--help") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (s.rfind("--", 0) != 0) {
      std::fprintf(stderr, "unexpected argument %s\n%s", s.c_str(), usage);
      std::exit(2);
    }
    std::string k = s.substr(2), val;
    size_t eq = k.find('=');
    if (eq != std::string::npos) {
      val = k.substr(eq + 1);
      k = k.substr(0, eq);
    } else if (std::strstr(flags, (" " + k + " ").c_str())) {
      val = "1";
    } else if (i + 1 < argc) {
      val = argv[++i];
    } else {
      std::fprintf(stderr, "--%s needs a value\n%s", k.c_str(), usage);
      std::exit(2);
    }
    if (std::strstr(multi, (" " + k + " ").c_str()))
      a.multi.emplace(k, val);
    else
      a.v[k] = val;
  }
  return a;
}

constexpr int kMaxMessage = 64 * 1024 * 1024;

}  // namespace amnx
