// 3x3 convolutions by Winograd's F(4x4, 3x3); see conv_winograd.hpp.
//
// For one input channel's 6x6 tile d and one 3x3 filter g, the 4x4 output tile is
//
//   Y = A^T [ (G g G^T) * (B^T d B) ] A      (* elementwise, 36 products)
//
// with the interpolation points 0, 1, -1, 2, -2 and infinity (Lavin and Gray's matrices,
// below). Summed over input channels, the 36 elementwise products become 36 GEMMs:
//
//   U[xi][k][c] = (G g[k][c] G^T)[xi]         the filters, once per call
//   V[xi][c][t] = (B^T d[c][t] B)[xi]         each input tile t
//   M[xi][k][t] = sum_c U[xi][k][c] V[xi][c][t]
//   y[k][t]     = A^T M[.][k][t] A            each output tile
//
// The input gradient is the same conv of dY with each filter rotated by 180 degrees and the
// channels swapped: the rotation is in how the filters are read, the swap is the GEMM
// reading U transposed. The weight gradient is the forward's transpose (below).
//
// Numbers: the transforms add and scale by 1, 2, 4, 5, 8 and (filters) 1/4, 1/6, 1/12, 1/24,
// so the result differs from the direct sum by rounding alone, but of intermediates up to
// tens of times an element: errors of a few millionths of the tensor's largest magnitude
// (5e-6 for y and dx, 8e-6 for dW measured on unit-normal data; the direct conv's are
// about 1e-7), the usual price of F(4x4, 3x3) in fp32. Every output is computed by the same
// operations in the same order whatever the thread count and chunking (kiln's GEMM sums
// over k in order, the weight gradient sums fixed steps of tiles in order), so results are
// the same bits on any number of threads (`WinogradConv.SameBitsOnAnyThreadCount`).
//
// Threads: where the batch has enough tiles, they are split into chunks of at most kChunk;
// each thread of an OpenMP team transforms its chunks' input tiles into a slot of its own
// (V), runs the 36 GEMMs into a second (M), and transforms those into the output, while
// both are in its core's cache. Where it has too few (small planes) the team shares each
// chunk instead (see shared_chunks). The tile transforms run 8 tiles (or 8 channels) at a
// time, one per vector lane, in with_best_simd's AVX2 copy where the CPU has it.
#include "layers/conv_winograd.hpp"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "layers/gemm.hpp"
#include "math/simd.hpp"

namespace kiln::detail::winograd {

namespace {

constexpr int kLanes = 8;              // tiles transformed at once
constexpr std::int64_t kChunk = 64;    // tiles per chunk at most (a multiple of kLanes)
constexpr std::int64_t kAlign = 64;    // floats (256 bytes) between workspace regions
constexpr std::int64_t kPoints = 36;   // 6x6
constexpr std::int64_t kStep = 256;    // tiles per step of a shared or summed chunk at most

std::int64_t aligned(std::int64_t floats) { return (floats + kAlign - 1) / kAlign * kAlign; }
// Columns of V, M and E: whole groups of kLanes tiles.
std::int64_t whole_lanes(std::int64_t tiles) { return (tiles + kLanes - 1) / kLanes * kLanes; }
// Tiles per step where the whole team works on each chunk (shared chunks, the weight
// gradient's sum): all of them, up to kStep.
std::int64_t step_chunk(std::int64_t tiles) { return std::clamp<std::int64_t>(whole_lanes(tiles), kLanes, kStep); }

// The conv both passes run: `in` (n x cin x h x w) to `out` (n x cout x h x w), 3x3, pad 1,
// with the filters already in the Winograd domain, u[xi] a cout x cin matrix (`transposed`:
// stored cin x cout, i.e. [xi][cin][cout]).
struct Conv {
  std::int64_t n, cin, cout, h, w;
  const float* u;
  bool transposed;
  const float* bias;  // nullptr: none
  bool accumulate;
  std::int64_t tiles_h() const { return (h + 3) / 4; }
  std::int64_t tiles_w() const { return (w + 3) / 4; }
  std::int64_t tiles() const { return n * tiles_h() * tiles_w(); }
};

std::int64_t chunk_for(std::int64_t tiles, int threads) {
  const std::int64_t per = (tiles + threads - 1) / threads;
  return std::clamp<std::int64_t>(whole_lanes(per), kLanes, kChunk);
}

std::int64_t slot_floats(std::int64_t cin, std::int64_t cout, std::int64_t chunk) {
  return aligned(kPoints * cin * chunk) + aligned(kPoints * cout * chunk);
}

// Where a tile's 6x6 input window starts (row y0, column x0, one above and left of its
// 4x4 output tile), as an offset into a sample's plane, and whether it lies wholly inside.
struct TileAt {
  std::int64_t sample = -1;  // -1: a lane past the chunk's last tile
  std::int64_t y0 = 0, x0 = 0;
  bool inside = false;
};

TileAt tile_at(const Conv& cv, std::int64_t t) {
  const std::int64_t per = cv.tiles_h() * cv.tiles_w(), r = t % per;
  TileAt a{.sample = t / per, .y0 = r / cv.tiles_w() * 4 - 1, .x0 = r % cv.tiles_w() * 4 - 1};
  a.inside = a.y0 >= 0 && a.x0 >= 0 && a.y0 + 6 <= cv.h && a.x0 + 6 <= cv.w;
  return a;
}

// B^T applied to 6 values a stride apart, 8 lanes at once.
KILN_INLINE inline void bt6(const float (*d)[kLanes], int stride, float (*v)[kLanes], int vstride) {
  for (int l = 0; l < kLanes; ++l) {
    const float d0 = d[0][l], d1 = d[stride][l], d2 = d[2 * stride][l], d3 = d[3 * stride][l], d4 = d[4 * stride][l],
                d5 = d[5 * stride][l];
    v[0][l] = (4.0f * d0 - 5.0f * d2) + d4;
    v[vstride][l] = (d3 + d4) - 4.0f * (d1 + d2);
    v[2 * vstride][l] = 4.0f * (d1 - d2) + (d4 - d3);
    v[3 * vstride][l] = 2.0f * (d3 - d1) + (d4 - d2);
    v[4 * vstride][l] = 2.0f * (d1 - d3) + (d4 - d2);
    v[5 * vstride][l] = (4.0f * d1 - 5.0f * d3) + d5;
  }
}

// A^T applied to 6 values a stride apart, 8 lanes at once.
KILN_INLINE inline void at6(const float (*m)[kLanes], int stride, float (*o)[kLanes], int ostride) {
  for (int l = 0; l < kLanes; ++l) {
    const float m0 = m[0][l], m1 = m[stride][l], m2 = m[2 * stride][l], m3 = m[3 * stride][l], m4 = m[4 * stride][l],
                m5 = m[5 * stride][l];
    const float p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    o[0][l] = (m0 + p12) + p34;
    o[ostride][l] = d12 + 2.0f * d34;
    o[2 * ostride][l] = p12 + 4.0f * p34;
    o[3 * ostride][l] = (d12 + 8.0f * d34) + m5;
  }
}

// V[xi][c][lane] for channel c of 8 tiles: gathers each lane's 6x6 window (zero outside
// the plane), then B^T d B.
KILN_INLINE inline void input_tiles(const Conv& cv, const float* in, std::int64_t c, const TileAt* at, float* v,
                                    std::int64_t v_stride) {
  alignas(32) float d[36][kLanes];
  alignas(32) float t[36][kLanes];
  const std::int64_t plane = cv.h * cv.w;
  for (int l = 0; l < kLanes; ++l) {
    const TileAt& a = at[l];
    if (a.sample < 0) {
      for (int e = 0; e < 36; ++e) d[e][l] = 0.0f;
      continue;
    }
    const float* p = in + (a.sample * cv.cin + c) * plane;
    if (a.inside) {
      const float* q = p + a.y0 * cv.w + a.x0;
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) d[i * 6 + j][l] = q[i * cv.w + j];
      continue;
    }
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        const std::int64_t y = a.y0 + i, x = a.x0 + j;
        d[i * 6 + j][l] = y >= 0 && y < cv.h && x >= 0 && x < cv.w ? p[y * cv.w + x] : 0.0f;
      }
  }
  for (int j = 0; j < 6; ++j) bt6(&d[j], 6, &t[j], 6);   // columns: t = B^T d
  for (int i = 0; i < 6; ++i) bt6(&t[i * 6], 1, &d[i * 6], 1);  // rows: (B^T d) B
  for (int e = 0; e < 36; ++e)
    for (int l = 0; l < kLanes; ++l) v[e * v_stride + l] = d[e][l];
}

// Output channel k of 8 tiles from M[xi][k][lane]: A^T m A, plus the bias, written (or
// added) where the 4x4 tile lies inside the plane.
KILN_INLINE inline void output_tiles(const Conv& cv, const float* m, std::int64_t m_stride, std::int64_t k,
                                     const TileAt* at, float* out) {
  alignas(32) float e[36][kLanes];
  alignas(32) float s[24][kLanes];
  alignas(32) float o[16][kLanes];
  for (int x = 0; x < 36; ++x)
    for (int l = 0; l < kLanes; ++l) e[x][l] = m[x * m_stride + l];
  for (int j = 0; j < 6; ++j) at6(&e[j], 6, &s[j], 6);     // columns: s = A^T m (4 x 6)
  for (int i = 0; i < 4; ++i) at6(&s[i * 6], 1, &o[i * 4], 1);  // rows: (A^T m) A (4 x 4)
  const float b = cv.bias ? cv.bias[k] : 0.0f;
  const std::int64_t plane = cv.h * cv.w;
  for (int l = 0; l < kLanes; ++l) {
    const TileAt& a = at[l];
    if (a.sample < 0) continue;
    float* p = out + (a.sample * cv.cout + k) * plane;
    const std::int64_t y0 = a.y0 + 1, x0 = a.x0 + 1;
    const int rows = static_cast<int>(std::min<std::int64_t>(4, cv.h - y0));
    const int cols = static_cast<int>(std::min<std::int64_t>(4, cv.w - x0));
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        float& dst = p[(y0 + i) * cv.w + x0 + j];
        const float r = o[i * 4 + j][l] + b;
        dst = cv.accumulate ? dst + r : r;
      }
  }
}

// Where tiles [t0, t1) lie, padded with empty lanes to `lanes`.
void tile_table(const Conv& cv, std::int64_t t0, std::int64_t t1, std::int64_t lanes, TileAt* at) {
  for (std::int64_t q = 0; q < lanes; ++q) at[q] = t0 + q < t1 ? tile_at(cv, t0 + q) : TileAt{};
}

// V[xi][c][0 .. lanes) for input channel c of a chunk's tiles.
KILN_INLINE inline void input_channel(const Conv& cv, const float* in, std::int64_t c, const TileAt* at, std::int64_t lanes,
                                      float* v) {
  for (std::int64_t g = 0; g < lanes; g += kLanes) input_tiles(cv, in, c, at + g, v + c * lanes + g, cv.cin * lanes);
}

// M[xi] = U[xi] V[xi] for `lanes` tiles.
void products(const Conv& cv, std::int64_t xi, const float* v, float* m, std::int64_t lanes) {
  const float* u = cv.u + xi * cv.cin * cv.cout;
  gemm(cv.transposed ? Trans::yes : Trans::no, Trans::no, cv.cout, lanes, cv.cin, 1.0f, u, cv.transposed ? cv.cout : cv.cin,
       v + xi * cv.cin * lanes, lanes, 0.0f, m + xi * cv.cout * lanes, lanes);
}

// Tiles [t0, t1) of `in` into `out`, in the slot (V then M) of the calling thread.
void run_chunk(const Conv& cv, const float* in, float* out, std::int64_t t0, std::int64_t t1, std::int64_t chunk,
               float* slot) {
  const std::int64_t lanes = whole_lanes(t1 - t0);  // columns of V and M
  float* v = slot;
  float* m = slot + aligned(kPoints * cv.cin * chunk);
  TileAt at[kChunk];
  tile_table(cv, t0, t1, lanes, at);
  math::with_best_simd([&](auto) KILN_INLINE {
    for (std::int64_t c = 0; c < cv.cin; ++c) input_channel(cv, in, c, at, lanes, v);
  });
  for (std::int64_t xi = 0; xi < kPoints; ++xi) products(cv, xi, v, m, lanes);
  math::with_best_simd([&](auto) KILN_INLINE {
    for (std::int64_t k = 0; k < cv.cout; ++k)
      for (std::int64_t g = 0; g < lanes; g += kLanes)
        output_tiles(cv, m + k * lanes + g, cv.cout * lanes, k, at + g, out);
  });
}

// Whether the threads share each chunk (input transform split by channel, GEMMs by xi,
// output transform by output channel) rather than each taking chunks of its own: where
// the batch has too few tiles to give each thread a full chunk (small planes, wide layers:
// ResNet's 4x4 planes of 512 channels), each thread running all 36 GEMMs would read all
// of U, many megabytes, for a few tiles.
bool shared_chunks(std::int64_t tiles, int team) { return team > 1 && chunk_for(tiles, team) < kChunk; }

// The whole conv: the filters are in the workspace's first region already.
void run(const Conv& cv, int threads, const float* in, float* out, float* slots) {
  const std::int64_t tiles = cv.tiles();
  if (tiles == 0) return;
  const int team_max = gemm_team(threads);
  if (shared_chunks(tiles, team_max)) {
    const std::int64_t chunk = step_chunk(tiles);
    float* v = slots;
    float* m = slots + aligned(kPoints * cv.cin * chunk);
    TileAt ats[kStep];
    for (std::int64_t t0 = 0; t0 < tiles; t0 += chunk) {
      const std::int64_t lanes = whole_lanes(std::min(chunk, tiles - t0));
      tile_table(cv, t0, tiles, lanes, ats);
#pragma omp parallel num_threads(team_max)
      {
#pragma omp for schedule(static)
        for (std::int64_t c = 0; c < cv.cin; ++c)
          math::with_best_simd([&](auto) KILN_INLINE { input_channel(cv, in, c, ats, lanes, v); });
#pragma omp for schedule(static)
        for (std::int64_t xi = 0; xi < kPoints; ++xi) products(cv, xi, v, m, lanes);
#pragma omp for schedule(static)
        for (std::int64_t k = 0; k < cv.cout; ++k)
          math::with_best_simd([&](auto) KILN_INLINE {
            for (std::int64_t g = 0; g < lanes; g += kLanes)
              output_tiles(cv, m + k * lanes + g, cv.cout * lanes, k, ats + g, out);
          });
      }
    }
    return;
  }
  const std::int64_t chunk = chunk_for(tiles, team_max);
  const std::int64_t chunks = (tiles + chunk - 1) / chunk;
  const int team = static_cast<int>(std::min<std::int64_t>(team_max, chunks));
  const std::int64_t slot = slot_floats(cv.cin, cv.cout, chunk);
#pragma omp parallel num_threads(team)
  {
    float* mine = slots + omp_get_thread_num() * slot;
#pragma omp for schedule(static)
    for (std::int64_t j = 0; j < chunks; ++j)
      run_chunk(cv, in, out, j * chunk, std::min(tiles, (j + 1) * chunk), chunk, mine);
  }
}

float* memory_for(std::int64_t need, float* workspace, std::int64_t have) {
  if (workspace && have >= need) return workspace;
  thread_local std::vector<float> own;
  if (static_cast<std::int64_t>(own.size()) < need) own.assign(static_cast<std::size_t>(need), 0.0f);
  return own.data();
}

// G g G^T for 8 filters at once (g: 9 taps by 8 lanes), into u[xi * u_stride + lane].
KILN_INLINE inline void filter_tiles(const float (*g)[kLanes], float* u, std::int64_t u_stride, int lanes) {
  alignas(32) float t[18][kLanes];  // G g: 6 x 3
  alignas(32) float o[36][kLanes];  // (G g) G^T: 6 x 6
  constexpr float q = 1.0f / 4, s = 1.0f / 6, h = 1.0f / 12, e = 1.0f / 24;
  const auto g6 = [&](const float (*x)[kLanes], int stride, float (*y)[kLanes], int ystride) KILN_INLINE {
    for (int l = 0; l < kLanes; ++l) {
      const float x0 = x[0][l], x1 = x[stride][l], x2 = x[2 * stride][l];
      y[0][l] = q * x0;
      y[ystride][l] = -s * ((x0 + x1) + x2);
      y[2 * ystride][l] = -s * ((x0 - x1) + x2);
      y[3 * ystride][l] = (e * x0 + h * x1) + s * x2;
      y[4 * ystride][l] = (e * x0 - h * x1) + s * x2;
      y[5 * ystride][l] = x2;
    }
  };
  for (int j = 0; j < 3; ++j) g6(&g[j], 3, &t[j], 3);          // columns: G g
  for (int i = 0; i < 6; ++i) g6(&t[i * 3], 1, &o[i * 6], 1);  // rows: (G g) G^T
  if (lanes == kLanes) {
    for (int x = 0; x < 36; ++x)
      for (int l = 0; l < kLanes; ++l) u[x * u_stride + l] = o[x][l];
    return;
  }
  for (int x = 0; x < 36; ++x)
    for (int l = 0; l < lanes; ++l) u[x * u_stride + l] = o[x][l];
}

// U[xi][k][c] from w[k][c][3][3] (rotated: each filter turned by 180 degrees), 8 input
// channels at a time; the output channels split among threads.
void transform_filters(const ConvShape& s, int threads, const float* w, bool rotated, float* u) {
  const std::int64_t kc = s.co * s.c;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t k = 0; k < s.co; ++k)
    math::with_best_simd([&](auto) KILN_INLINE {
      alignas(32) float g[9][kLanes];
      for (std::int64_t c0 = 0; c0 < s.c; c0 += kLanes) {
        const int lanes = static_cast<int>(std::min<std::int64_t>(kLanes, s.c - c0));
        const float* src = w + (k * s.c + c0) * 9;
        for (int l = 0; l < kLanes; ++l)
          for (int tap = 0; tap < 9; ++tap) g[tap][l] = l < lanes ? src[l * 9 + (rotated ? 8 - tap : tap)] : 0.0f;
        filter_tiles(g, u + k * s.c + c0, kc, lanes);
      }
    });
}

// ---- The weight gradient --------------------------------------------------------------
//
// The forward's transpose: with E_t = A dY_t A^T (each 4x4 tile of dY into the Winograd
// domain) and V_t as forward,
//
//   MT[xi][c][k] = sum_t V[xi][c][t] E[xi][t][k]      36 GEMMs summing over tiles
//   dW[k][c]     = G^T MT[.][c][k] G
//
// The tiles are summed in steps of at most kStep: all threads transform a step's input
// tiles (split by channel) and dY tiles (split by tile), then run its 36 GEMMs (split by xi),
// each adding into MT. Every element of MT is one sum over the tiles in order, so dW does
// not depend on the thread count.

std::int64_t dw_floats(const ConvShape& s) {
  const std::int64_t chunk = step_chunk(s.n * ((s.h + 3) / 4) * ((s.w + 3) / 4));
  return aligned(kPoints * s.c * chunk) + aligned(kPoints * chunk * s.co) + aligned(kPoints * s.c * s.co);
}

// A applied to 4 values a stride apart (A dY's columns, then rows), 8 lanes at once.
KILN_INLINE inline void a4(const float (*y)[kLanes], int stride, float (*o)[kLanes], int ostride) {
  for (int l = 0; l < kLanes; ++l) {
    const float y0 = y[0][l], y1 = y[stride][l], y2 = y[2 * stride][l], y3 = y[3 * stride][l];
    o[0][l] = y0;
    o[ostride][l] = (y0 + y1) + (y2 + y3);
    o[2 * ostride][l] = (y0 - y1) + (y2 - y3);
    o[3 * ostride][l] = (y0 + 2.0f * y1) + (4.0f * y2 + 8.0f * y3);
    o[4 * ostride][l] = (y0 - 2.0f * y1) + (4.0f * y2 - 8.0f * y3);
    o[5 * ostride][l] = y3;
  }
}

// G^T applied to 6 values a stride apart, 8 lanes at once.
KILN_INLINE inline void gt6(const float (*m)[kLanes], int stride, float (*o)[kLanes], int ostride) {
  constexpr float q = 1.0f / 4, s = 1.0f / 6, h = 1.0f / 12, e = 1.0f / 24;
  for (int l = 0; l < kLanes; ++l) {
    const float m0 = m[0][l], m1 = m[stride][l], m2 = m[2 * stride][l], m3 = m[3 * stride][l], m4 = m[4 * stride][l],
                m5 = m[5 * stride][l];
    o[0][l] = (q * m0 - s * (m1 + m2)) + e * (m3 + m4);
    o[ostride][l] = s * (m2 - m1) + h * (m3 - m4);
    o[2 * ostride][l] = s * ((m3 + m4) - (m1 + m2)) + m5;
  }
}

// E[xi][lane] for one tile and 8 output channels (k0 + lane): A dY A^T of each channel's
// 4x4 tile (zero past the plane's edge), into e[xi * e_stride + lane].
KILN_INLINE inline void dy_tiles(const Conv& cv, const float* dy, const TileAt& a, std::int64_t k0, float* e,
                                 std::int64_t e_stride) {
  alignas(32) float y[16][kLanes];
  alignas(32) float t[24][kLanes];
  alignas(32) float o[36][kLanes];
  const int lanes = static_cast<int>(std::min<std::int64_t>(kLanes, cv.cout - k0));
  const std::int64_t y0 = a.y0 + 1, x0 = a.x0 + 1, plane = cv.h * cv.w;
  const int rows = static_cast<int>(std::min<std::int64_t>(4, cv.h - y0));
  const int cols = static_cast<int>(std::min<std::int64_t>(4, cv.w - x0));
  for (int l = 0; l < kLanes; ++l) {
    if (l >= lanes || a.sample < 0) {
      for (int x = 0; x < 16; ++x) y[x][l] = 0.0f;
      continue;
    }
    const float* p = dy + (a.sample * cv.cout + k0 + l) * plane + y0 * cv.w + x0;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) y[i * 4 + j][l] = i < rows && j < cols ? p[i * cv.w + j] : 0.0f;
  }
  for (int j = 0; j < 4; ++j) a4(&y[j], 4, &t[j], 4);          // columns: A dY (6 x 4)
  for (int i = 0; i < 6; ++i) a4(&t[i * 4], 1, &o[i * 6], 1);  // rows: (A dY) A^T (6 x 6)
  for (int x = 0; x < 36; ++x)
    for (int l = 0; l < kLanes; ++l) e[x * e_stride + l] = o[x][l];
}

void backward_weights_impl(const ConvShape& s, int threads, const float* x, const float* dy, float* dw, float* ws) {
  const Conv cv{.n = s.n, .cin = s.c, .cout = s.co, .h = s.h, .w = s.w, .u = nullptr, .transposed = false,
                .bias = nullptr, .accumulate = false};
  const std::int64_t tiles = cv.tiles();
  if (tiles == 0) {
    std::fill(dw, dw + s.co * s.c * 9, 0.0f);
    return;
  }
  const std::int64_t chunk = step_chunk(tiles);
  const std::int64_t co_pad = whole_lanes(s.co);  // E's rows: whole groups of 8
  float* v = ws;
  float* e = v + aligned(kPoints * s.c * chunk);
  float* mt = e + aligned(kPoints * chunk * s.co);
  const int team = gemm_team(threads);
  TileAt ats[kStep];
  for (std::int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const std::int64_t lanes = whole_lanes(std::min(chunk, tiles - t0));
    tile_table(cv, t0, tiles, lanes, ats);
#pragma omp parallel num_threads(team)
    {
#pragma omp for schedule(static)
      for (std::int64_t c = 0; c < s.c; ++c)
        math::with_best_simd([&](auto) KILN_INLINE { input_channel(cv, x, c, ats, lanes, v); });
#pragma omp for schedule(static)
      for (std::int64_t q = 0; q < lanes; ++q)
        math::with_best_simd([&](auto) KILN_INLINE {
          // E[xi][q][k]: rows of co floats; the last group of 8 may run past co into the
          // next row, which its own tile then overwrites, so groups are written in order.
          alignas(32) float tail[kPoints * kLanes];
          for (std::int64_t k0 = 0; k0 < co_pad; k0 += kLanes) {
            if (k0 + kLanes <= s.co) {
              dy_tiles(cv, dy, ats[q], k0, e + q * s.co + k0, lanes * s.co);
              continue;
            }
            dy_tiles(cv, dy, ats[q], k0, tail, kLanes);
            for (int xi = 0; xi < kPoints; ++xi)
              for (std::int64_t l = 0; l < s.co - k0; ++l) e[xi * lanes * s.co + q * s.co + k0 + l] = tail[xi * kLanes + l];
          }
        });
#pragma omp for schedule(static)
      for (std::int64_t xi = 0; xi < kPoints; ++xi)
        gemm(Trans::no, Trans::no, s.c, s.co, lanes, 1.0f, v + xi * s.c * lanes, lanes, e + xi * lanes * s.co, s.co,
             t0 == 0 ? 0.0f : 1.0f, mt + xi * s.c * s.co, s.co);
    }
  }
  // dW[k][c] = G^T MT[.][c][k] G, 8 output channels at a time.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t c = 0; c < s.c; ++c)
    math::with_best_simd([&](auto) KILN_INLINE {
      alignas(32) float m[36][kLanes];
      alignas(32) float t[18][kLanes];
      alignas(32) float o[9][kLanes];
      for (std::int64_t k0 = 0; k0 < s.co; k0 += kLanes) {
        const int lanes = static_cast<int>(std::min<std::int64_t>(kLanes, s.co - k0));
        for (int xi = 0; xi < kPoints; ++xi)
          for (int l = 0; l < kLanes; ++l) m[xi][l] = l < lanes ? mt[(xi * s.c + c) * s.co + k0 + l] : 0.0f;
        for (int j = 0; j < 6; ++j) gt6(&m[j], 6, &t[j], 6);          // columns: G^T M (3 x 6)
        for (int r = 0; r < 3; ++r) gt6(&t[r * 6], 1, &o[r * 3], 1);  // rows: (G^T M) G (3 x 3)
        for (int l = 0; l < lanes; ++l)
          for (int tap = 0; tap < 9; ++tap) dw[((k0 + l) * s.c + c) * 9 + tap] = o[tap][l];
      }
    });
}

}  // namespace

bool applies(const ConvShape& s) {
  return !s.nhwc && s.groups == 1 && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.pad_top == 1 && s.pad_bottom == 1 && s.pad_left == 1 && s.pad_right == 1 && s.oh == s.h && s.ow == s.w;
}

std::int64_t workspace_floats(const ConvShape& s, int threads) {
  const int team = std::max(1, gemm_team(threads));
  const std::int64_t tiles = s.n * ((s.h + 3) / 4) * ((s.w + 3) / 4);
  const std::int64_t chunk = chunk_for(std::max<std::int64_t>(tiles, 1), team);
  const std::int64_t own = shared_chunks(std::max<std::int64_t>(tiles, 1), team)
                               ? slot_floats(s.c, s.co, step_chunk(tiles))
                               : team * slot_floats(s.c, s.co, chunk);
  return std::max(aligned(kPoints * s.c * s.co) + own, dw_floats(s));
}

void forward(const ConvShape& s, int threads, const float* x, const float* w, const float* b, float* y,
             float* workspace, std::int64_t have) {
  float* ws = memory_for(winograd::workspace_floats(s, threads), workspace, have);
  transform_filters(s, threads, w, false, ws);
  const Conv cv{.n = s.n, .cin = s.c, .cout = s.co, .h = s.h, .w = s.w, .u = ws, .transposed = false, .bias = b,
                .accumulate = false};
  run(cv, threads, x, y, ws + aligned(kPoints * s.c * s.co));
}

void backward_data(const ConvShape& s, int threads, const float* w, const float* dy, float* dx, bool accumulate,
                   float* workspace, std::int64_t have) {
  float* ws = memory_for(winograd::workspace_floats(s, threads), workspace, have);
  transform_filters(s, threads, w, true, ws);
  const Conv cv{.n = s.n, .cin = s.co, .cout = s.c, .h = s.h, .w = s.w, .u = ws, .transposed = true, .bias = nullptr,
                .accumulate = accumulate};
  run(cv, threads, dy, dx, ws + aligned(kPoints * s.c * s.co));
}

}  // namespace kiln::detail::winograd

namespace kiln::detail::winograd {

void backward_weights(const ConvShape& s, int threads, const float* x, const float* dy, float* dw, float* workspace,
                      std::int64_t have) {
  backward_weights_impl(s, threads, x, dy, dw, memory_for(winograd::workspace_floats(s, threads), workspace, have));
}

}  // namespace kiln::detail::winograd
