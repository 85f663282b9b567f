#include <algorithm>
#include <cmath>
#include <numbers>

#include "kiln/train.hpp"

namespace kiln {

double Schedule::factor(std::int64_t step, std::int64_t total, std::int64_t per_epoch) const {
  total = std::max<std::int64_t>(total, 1);
  const double t = static_cast<double>(step) / static_cast<double>(total);
  switch (kind) {
    case Kind::constant: return 1.0;
    case Kind::step: {
      double epoch = static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(per_epoch, 1));
      return std::pow(gamma, std::floor(epoch / every + 1e-9));
    }
    case Kind::cosine: return final + (1.0 - final) * 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(t, 1.0)));
    case Kind::linear: {
      // Knots at whole steps, as numpy.interp over [0, int(warmup * total), total].
      auto knot = static_cast<std::int64_t>(warmup * static_cast<double>(total));
      if (step < knot) return start + (1.0 - start) * static_cast<double>(step) / static_cast<double>(knot);
      if (total == knot) return 1.0;
      double u = static_cast<double>(step - knot) / static_cast<double>(total - knot);
      return 1.0 + (final - 1.0) * std::min(u, 1.0);
    }
  }
  return 1.0;
}

}  // namespace kiln
