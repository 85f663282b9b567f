#pragma once

// Offsets of a 4-D activation [n, c, h, w] in NCHW or NHWC memory, for kernels that work on
// either layout. Vectors of features are [n, c, 1, 1], for which both layouts coincide.
#include <cstdint>

#include "math/hd.hpp"

namespace kiln::math {

struct Dims4 {
  std::int64_t n = 0, c = 0, h = 1, w = 1;
  bool nhwc = false;

  KILN_HD std::int64_t count() const { return n * c * h * w; }
  KILN_HD std::int64_t at(std::int64_t in, std::int64_t ic, std::int64_t ih, std::int64_t iw) const {
    return nhwc ? ((in * h + ih) * w + iw) * c + ic : ((in * c + ic) * h + ih) * w + iw;
  }
  // The channel of the element at offset i.
  KILN_HD std::int64_t channel_of(std::int64_t i) const { return nhwc ? i % c : (i / (h * w)) % c; }
};

// (n, c, h, w) of an element.
struct Index4 {
  std::int64_t n, c, h, w;
};

// The element at offset i of a tensor laid out as `d` says: Dims4::at inverted.
KILN_HD Index4 index_of(const Dims4& d, std::int64_t i) {
  Index4 x{};
  if (d.nhwc) {
    x.c = i % d.c, i /= d.c;
    x.w = i % d.w, i /= d.w;
    x.h = i % d.h, x.n = i / d.h;
  } else {
    x.w = i % d.w, i /= d.w;
    x.h = i % d.h, i /= d.h;
    x.c = i % d.c, x.n = i / d.c;
  }
  return x;
}

// The offset in NCHW order of the element at offset i: the same for an element whatever the
// layout, so what is drawn per element (dropout's mask) does not depend on the layout.
KILN_HD std::int64_t logical_index(const Dims4& d, std::int64_t i) {
  if (!d.nhwc) return i;
  const Index4 x = index_of(d, i);
  return ((x.n * d.c + x.c) * d.h + x.h) * d.w + x.w;
}

// Where the element at offset i of `d` finds its sample's and channel's value in a tensor of
// one value per channel ([n, c], the same in both layouts): a broadcast over h and w.
KILN_HD std::int64_t per_channel_index(const Dims4& d, std::int64_t i) { return i / (d.c * d.h * d.w) * d.c + d.channel_of(i); }

}  // namespace kiln::math
