// Convolutions through oneDNN; see conv_onednn.hpp.
//
// Per shape (and thread count: oneDNN's JIT kernels split their work for the threads they
// were created with) one Prims: the forward, backward-data and backward-weights primitives,
// created once with `format_tag::any` so that oneDNN picks its blocked layouts (nChw8c,
// OIhw8i8o on AVX2), and the reorders between those and kiln's. Each call wraps kiln's
// pointers and the workspace in dnnl::memory objects (no allocation) and runs the reorders
// and the primitive on a single stream, synchronously. Scratchpads are the caller's
// (scratchpad_mode::user), in the workspace too.
//
// Threads: oneDNN (built on OpenMP, as kiln is) runs omp_get_max_threads() threads; each
// call sets the layer's count for its duration. With a fixed count the kernels split the
// work the same way every time and their results repeat to the bit (kiln's test
// `OneDnnConv.RepeatsToTheBit`), so resume stays bit-exact.
#include "layers/conv_onednn.hpp"

#if KILN_HAVE_ONEDNN

#include <fmt/format.h>
#include <omp.h>

#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace kiln::detail::onednn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Sets the OpenMP thread count oneDNN sees, and restores it.
class ThreadCount {
 public:
  explicit ThreadCount(int threads) : saved_(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

constexpr std::int64_t kAlignFloats = 64;  // 256 bytes
std::int64_t floats_of(const memory::desc& d) {
  const auto bytes = static_cast<std::int64_t>(d.get_size());
  return (bytes / 4 + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
}

// A buffer in the workspace: where, and whether it is needed at all (the user's tensor is
// used directly when oneDNN wants kiln's layout).
struct Slot {
  memory::desc desc;
  std::int64_t offset = 0;  // floats into the workspace
  bool used = false;
};

// Lays out one phase's buffers one after another; returns its floats.
std::int64_t place(std::initializer_list<Slot*> slots) {
  std::int64_t at = 0;
  for (Slot* s : slots)
    if (s->used) s->offset = at, at += floats_of(s->desc);
  return at;
}

struct Prims {
  memory::desc x_user, w_user, y_user, b_user;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  // Forward: x, w, y in oneDNN's formats, its scratchpad.
  Slot fx, fw, fy, fscratch;
  // Backward: dy and w for backward data, dx, its scratchpad; x, dy (when its format differs
  // from backward data's), dw for backward weights, and that scratchpad.
  Slot bdy, bw, bdx, bscratch_data, wx, wdy, wdw, bscratch_weights;
  std::int64_t forward_floats = 0, backward_floats = 0;
  // The reorders between kiln's layouts and oneDNN's, made once (empty where not needed):
  // x, w in and y out (forward); dy, w in, dx out (overwriting or adding) for backward data;
  // x, dy in and dw out for backward weights.
  dnnl::reorder x_in, w_in, y_out, dy_in, w_data_in, dx_out, dx_add, x_weights_in, dy_weights_in, dw_out;
};

memory::dims dims4(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) { return {a, b, c, d}; }

std::unique_ptr<Prims> make(const ConvShape& s, int threads) {
  ThreadCount tc(threads);
  auto p = std::make_unique<Prims>();
  const Tag act = s.nhwc ? Tag::nhwc : Tag::nchw;
  const auto f32 = memory::data_type::f32;
  const memory::dims src = dims4(s.n, s.c, s.h, s.w), dst = dims4(s.n, s.co, s.oh, s.ow);
  const memory::dims wei = s.groups == 1 ? dims4(s.co, s.c, s.kh, s.kw)
                                         : memory::dims{s.groups, s.co / s.groups, s.c / s.groups, s.kh, s.kw};
  const memory::dims strides{s.sh, s.sw}, dilates{s.dh - 1, s.dw - 1}, pad_l{s.pad_top, s.pad_left},
      pad_r{s.pad_bottom, s.pad_right};
  p->x_user = memory::desc(src, f32, act);
  p->y_user = memory::desc(dst, f32, act);
  p->w_user = memory::desc(wei, f32, s.groups == 1 ? Tag::oihw : Tag::goihw);
  p->b_user = s.bias ? memory::desc({s.co}, f32, Tag::x) : memory::desc();
  const memory::desc x_any(src, f32, Tag::any), y_any(dst, f32, Tag::any), w_any(wei, f32, Tag::any);

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  using dnnl::algorithm, dnnl::prop_kind;
  p->fwd_pd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, x_any, w_any, p->b_user,
                                      y_any, strides, dilates, pad_l, pad_r),
      attr, engine());
  p->bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(algorithm::convolution_direct, x_any, w_any, y_any, strides, dilates, pad_l, pad_r),
      attr, engine(), p->fwd_pd);
  p->bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(algorithm::convolution_direct, x_any, w_any, y_any, strides, dilates, pad_l,
                                               pad_r),
      attr, engine(), p->fwd_pd);
  p->fwd = dnnl::convolution_forward(p->fwd_pd);
  p->bwd_data = dnnl::convolution_backward_data(p->bwd_data_pd);
  p->bwd_weights = dnnl::convolution_backward_weights(p->bwd_weights_pd);

  auto slot = [](const memory::desc& want, const memory::desc& user) { return Slot{want, 0, want != user}; };
  p->fx = slot(p->fwd_pd.src_desc(), p->x_user);
  p->fw = slot(p->fwd_pd.weights_desc(), p->w_user);
  p->fy = slot(p->fwd_pd.dst_desc(), p->y_user);
  p->fscratch = Slot{p->fwd_pd.scratchpad_desc(), 0, p->fwd_pd.scratchpad_desc().get_size() > 0};
  p->forward_floats = place({&p->fx, &p->fw, &p->fy, &p->fscratch});

  p->bdy = slot(p->bwd_data_pd.diff_dst_desc(), p->y_user);
  p->bw = slot(p->bwd_data_pd.weights_desc(), p->w_user);
  // dx always gets a buffer of its own: an accumulated dx is added from it by a reorder.
  p->bdx = Slot{p->bwd_data_pd.diff_src_desc(), 0, true};
  p->bscratch_data = Slot{p->bwd_data_pd.scratchpad_desc(), 0, p->bwd_data_pd.scratchpad_desc().get_size() > 0};
  p->wx = slot(p->bwd_weights_pd.src_desc(), p->x_user);
  p->wdy = Slot{p->bwd_weights_pd.diff_dst_desc(), 0,
                p->bwd_weights_pd.diff_dst_desc() != p->y_user && p->bwd_weights_pd.diff_dst_desc() != p->bdy.desc};
  p->wdw = slot(p->bwd_weights_pd.diff_weights_desc(), p->w_user);
  p->bscratch_weights = Slot{p->bwd_weights_pd.scratchpad_desc(), 0, p->bwd_weights_pd.scratchpad_desc().get_size() > 0};
  p->backward_floats =
      place({&p->bdy, &p->bw, &p->bdx, &p->bscratch_data, &p->wx, &p->wdy, &p->wdw, &p->bscratch_weights});

  auto reorder = [](const memory::desc& from, const memory::desc& to, bool add = false) {
    dnnl::primitive_attr a;
    if (add) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);  // to += from
      a.set_post_ops(ops);
    }
    return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to, a));
  };
  if (p->fx.used) p->x_in = reorder(p->x_user, p->fx.desc);
  if (p->fw.used) p->w_in = reorder(p->w_user, p->fw.desc);
  if (p->fy.used) p->y_out = reorder(p->fy.desc, p->y_user);
  if (p->bdy.used) p->dy_in = reorder(p->y_user, p->bdy.desc);
  if (p->bw.used) p->w_data_in = reorder(p->w_user, p->bw.desc);
  p->dx_out = reorder(p->bdx.desc, p->x_user);
  p->dx_add = reorder(p->bdx.desc, p->x_user, true);
  if (p->wx.used) p->x_weights_in = reorder(p->x_user, p->wx.desc);
  const memory::desc dy_weights = p->bwd_weights_pd.diff_dst_desc();
  if (dy_weights != p->y_user) p->dy_weights_in = reorder(p->y_user, dy_weights);
  if (p->wdw.used) p->dw_out = reorder(p->wdw.desc, p->w_user);
  return p;
}

struct Key {
  ConvShape shape;
  int threads;
  friend bool operator==(const Key&, const Key&) = default;
};

struct KeyHash {
  std::size_t operator()(const Key& k) const {
    const ConvShape& s = k.shape;
    std::size_t h = static_cast<std::size_t>(k.threads);
    for (std::int64_t v : {s.n, s.c, s.h, s.w, s.co, s.oh, s.ow, s.kh, s.kw, s.sh, s.sw, s.dh, s.dw, s.pad_top, s.pad_bottom,
                           s.pad_left, s.pad_right, s.groups, static_cast<std::int64_t>(s.bias), static_cast<std::int64_t>(s.nhwc)})
      h = h * 1000003u ^ static_cast<std::size_t>(v);
    return h;
  }
};

// The primitives of a shape, made on first use; nullptr where oneDNN refuses the shape.
// Entries live as long as the process (a plan's shapes, a handful per layer: the batch and
// a last, partial one).
Prims* prims(const ConvShape& shape, int threads) {
  static std::mutex mutex;
  static std::unordered_map<Key, std::unique_ptr<Prims>, KeyHash> cache;
  std::lock_guard lock(mutex);
  auto [it, fresh] = cache.try_emplace(Key{shape, threads});
  if (fresh) {
    try {
      it->second = make(shape, threads);
    } catch (const dnnl::error&) {
      it->second = nullptr;  // unsupported: the caller keeps kiln's kernel
    }
  }
  return it->second.get();
}

Prims& prims_or_throw(const ConvShape& shape, int threads) {
  Prims* p = prims(shape, threads);
  if (!p)
    throw std::logic_error(fmt::format("oneDNN does not run this convolution ({}x{}x{} -> {}, kernel {}x{}, groups {})", shape.c,
                                       shape.h, shape.w, shape.co, shape.kh, shape.kw, shape.groups));
  return *p;
}

// The workspace for this call: the caller's, or, where that is too small (a thread count the
// plan did not size it for: its scratchpads grow with the threads), the calling thread's
// own, grown once to the largest need (no allocation per step; Prims are shared between
// plans, so the memory is per thread, not per shape).
float* base_for(std::int64_t need, float* workspace, std::int64_t floats) {
  if (workspace && need <= floats) return workspace;
  thread_local std::vector<float> own;
  if (static_cast<std::int64_t>(own.size()) < need) own.assign(static_cast<std::size_t>(need), 0.0f);
  return own.data();
}

memory at(const Slot& s, float* base) { return memory(s.desc, engine(), base + s.offset); }
memory user(const memory::desc& d, const float* p) { return memory(d, engine(), const_cast<float*>(p)); }

}  // namespace

bool available() { return true; }

bool supports(const ConvShape& shape, int threads) { return prims(shape, threads) != nullptr; }

std::int64_t workspace_floats(const ConvShape& shape, int threads) {
  Prims* p = prims(shape, threads);
  return p ? std::max(p->forward_floats, p->backward_floats) : 0;
}

void forward(const ConvShape& shape, int threads, const float* x, const float* w, const float* b, float* y, float* workspace,
             std::int64_t workspace_floats) {
  Prims& p = prims_or_throw(shape, threads);
  ThreadCount tc(threads);
  dnnl::stream st(engine());
  float* base = base_for(p.forward_floats, workspace, workspace_floats);
  memory xu = user(p.x_user, x), wu = user(p.w_user, w), yu = user(p.y_user, y);
  memory xs = p.fx.used ? at(p.fx, base) : xu, ws = p.fw.used ? at(p.fw, base) : wu, ys = p.fy.used ? at(p.fy, base) : yu;
  if (p.fx.used) p.x_in.execute(st, xu, xs);
  if (p.fw.used) p.w_in.execute(st, wu, ws);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xs}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_DST, ys}};
  if (shape.bias) args.emplace(DNNL_ARG_BIAS, user(p.b_user, b));
  if (p.fscratch.used) args.emplace(DNNL_ARG_SCRATCHPAD, at(p.fscratch, base));
  p.fwd.execute(st, args);
  if (p.fy.used) p.y_out.execute(st, ys, yu);
  st.wait();
}

void backward(const ConvShape& shape, int threads, const float* x, const float* w, const float* dy, float* dw, float* dx,
              bool accumulate, float* workspace, std::int64_t workspace_floats) {
  if (!dw && !dx) return;
  Prims& p = prims_or_throw(shape, threads);
  ThreadCount tc(threads);
  dnnl::stream st(engine());
  float* base = base_for(p.backward_floats, workspace, workspace_floats);
  memory dyu = user(p.y_user, dy);
  memory dy_data = p.bdy.used ? at(p.bdy, base) : dyu;
  bool dy_data_ready = false;
  if (dx) {
    memory wu = user(p.w_user, w);
    memory ws = p.bw.used ? at(p.bw, base) : wu;
    if (p.bdy.used) p.dy_in.execute(st, dyu, dy_data);
    dy_data_ready = true;
    if (p.bw.used) p.w_data_in.execute(st, wu, ws);
    memory dxs = at(p.bdx, base);
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, dy_data}, {DNNL_ARG_WEIGHTS, ws}, {DNNL_ARG_DIFF_SRC, dxs}};
    if (p.bscratch_data.used) args.emplace(DNNL_ARG_SCRATCHPAD, at(p.bscratch_data, base));
    p.bwd_data.execute(st, args);
    memory dxu = user(p.x_user, dx);
    (accumulate ? p.dx_add : p.dx_out).execute(st, dxs, dxu);
  }
  if (dw) {
    memory xu = user(p.x_user, x);
    memory xs = p.wx.used ? at(p.wx, base) : xu;
    if (p.wx.used) p.x_weights_in.execute(st, xu, xs);
    // dy in backward weights' format: kiln's own, backward data's buffer, or a third.
    const memory::desc want = p.bwd_weights_pd.diff_dst_desc();
    memory dys = want == p.y_user ? dyu : p.wdy.used ? at(p.wdy, base) : dy_data;
    if (p.wdy.used || (want != p.y_user && !dy_data_ready)) p.dy_weights_in.execute(st, dyu, dys);
    memory dwu = user(p.w_user, dw);
    memory dws = p.wdw.used ? at(p.wdw, base) : dwu;
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xs}, {DNNL_ARG_DIFF_DST, dys}, {DNNL_ARG_DIFF_WEIGHTS, dws}};
    if (p.bscratch_weights.used) args.emplace(DNNL_ARG_SCRATCHPAD, at(p.bscratch_weights, base));
    p.bwd_weights.execute(st, args);
    if (p.wdw.used) p.dw_out.execute(st, dws, dwu);
  }
  st.wait();
}

std::string describe(const ConvShape& shape, int threads) {
  Prims* p = prims(shape, threads);
  if (!p) return "unsupported";
  return fmt::format("{} / {} / {}", p->fwd_pd.impl_info_str(), p->bwd_data_pd.impl_info_str(),
                     p->bwd_weights_pd.impl_info_str());
}

}  // namespace kiln::detail::onednn

#else  // no oneDNN in this build

#include <stdexcept>

namespace kiln::detail::onednn {

bool available() { return false; }
bool supports(const ConvShape&, int) { return false; }
std::int64_t workspace_floats(const ConvShape&, int) { return 0; }
void forward(const ConvShape&, int, const float*, const float*, const float*, float*, float*, std::int64_t) {
  throw std::logic_error("kiln was built without oneDNN");
}
void backward(const ConvShape&, int, const float*, const float*, const float*, float*, float*, bool, float*, std::int64_t) {
  throw std::logic_error("kiln was built without oneDNN");
}
std::string describe(const ConvShape&, int) { return "not in this build"; }

}  // namespace kiln::detail::onednn

#endif
