#include "util/expr.hpp"

#include <cctype>
#include <charconv>
#include <cmath>

namespace kiln::detail {

namespace {

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  std::optional<double> parse() {
    auto v = expr(0);
    skip();
    if (!v || pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  // Deeply nested parentheses are input, not a program: bound the recursion.
  static constexpr int kMaxDepth = 64;

  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }

  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::optional<double> expr(int depth) {
    auto v = term(depth);
    while (v) {
      if (eat('+')) {
        auto r = term(depth);
        if (!r) return std::nullopt;
        *v += *r;
      } else if (eat('-')) {
        auto r = term(depth);
        if (!r) return std::nullopt;
        *v -= *r;
      } else {
        break;
      }
    }
    return v;
  }

  std::optional<double> term(int depth) {
    auto v = power(depth);
    while (v) {
      if (eat('*')) {
        auto r = power(depth);
        if (!r) return std::nullopt;
        *v *= *r;
      } else if (eat('/')) {
        auto r = power(depth);
        if (!r || *r == 0) return std::nullopt;
        *v /= *r;
      } else {
        break;
      }
    }
    return v;
  }

  // a ^ b, right-associative, binding tighter than * and /, looser than a sign: -2^2 = 4.
  std::optional<double> power(int depth) {
    auto base = factor(depth);
    if (!base || !eat('^')) return base;
    auto exponent = power(depth + 1);
    if (!exponent) return std::nullopt;
    return std::pow(*base, *exponent);
  }

  std::optional<double> factor(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    if (eat('-')) {
      auto v = factor(depth + 1);
      if (v) *v = -*v;
      return v;
    }
    if (eat('+')) return factor(depth + 1);
    if (eat('(')) {
      auto v = expr(depth + 1);
      if (!v || !eat(')')) return std::nullopt;
      return v;
    }
    skip();
    double value = 0;
    auto [end, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), value);
    if (ec != std::errc() || end == s_.data() + pos_) return std::nullopt;
    pos_ = static_cast<std::size_t>(end - s_.data());
    return value;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

std::optional<double> eval_number(std::string_view text) {
  auto v = Parser(text).parse();
  if (v && !std::isfinite(*v)) return std::nullopt;
  return v;
}

std::optional<long long> parse_integer(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

}  // namespace kiln::detail
