// Fused WordTree kernels for CPU: group softmax + absolute probabilities, forward and backward.
// One row (one prediction: N node scores, contiguous) at a time, so the row stays in cache while
// it is worked on; rows run in parallel (at::parallel_for). Node order is darknet's: the nodes of
// a sibling group are contiguous and a parent's group precedes its children's groups.
//
// Memory traffic is a flat softmax's: forward reads x and writes a, and keeps nothing else (the
// backward needs only a); backward reads a and grad and writes grad x, once each.
//
// Forward: e = exp(x - row max); per group, sum[g] = sum(e in g) (redone with the group's own
// maximum where it underflows), then top-down scale[g] = up[g] / sum[g] with up[g] = P(parent of
// g) = e[parent] * scale[parent's group] (1 for a root group); a = e * scale[group].
// Backward, with G = d loss / d a and p = a / up (the conditional probabilities):
//   S[g] = sum_{k in g} (a_k G_k + S[child group of k])        (bottom-up, no division)
//   d loss / d x_k = a_k G_k + S[child group of k] - p_k S[g]
//                  = a_k (G_k - S[g] / up[g]) + S[child group of k]
// One division per group, never by a node's probability: where up[g] == 0 every a in and below
// g is 0, so is S[g], and the term is 0.
//
// Groups are small (5 nodes on average for the 9k tree), so per-group work dominates unless it is
// vectorized across groups. For float with AVX-512: the group sums are 16 masked loads (one per
// group) folded into one vector of 16 sums; per-group values are spread over a per-node buffer
// with one unmasked 16-lane store per group (in order, so each group overwrites the spill of the
// one before); the per-node passes are then plain SIMD loops. Otherwise (double, no AVX-512): the
// same algorithm with scalar loops per group.
#include <math.h>
#include <sys/mman.h>

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// The C functions expf / exp (not std::exp): with -ffast-math glibc declares SIMD versions.
static inline void shifted_exp(const float* x, float* out, float shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = expf(x[j] - shift);
}

static inline void shifted_exp(const double* x, double* out, double shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = exp(x[j] - shift);
}

template <typename T>
static inline T row_max(const T* x, int64_t n) {
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// The tree as compact int32 arrays (built once per call; ~40 KB for the 9k tree). Group arrays
// are padded to Gp (a multiple of 16) with empty groups (offset N, no parent).
struct TreeIndex {
  int32_t N = 0, G = 0, Gp = 0;
  std::vector<int32_t> off;     // Gp + 1: group g is [off[g], off[g + 1])
  std::vector<int32_t> par;     // Gp: parent node of group g, -1 for a root group
  std::vector<int32_t> parx;    // Gp: parent node, or N (a slot that holds 1 or is ignored)
  std::vector<int32_t> pgx;     // Gp: group of the parent node, or G (a slot that holds 1 or 0)
  std::vector<int32_t> big;     // groups of more than 16 nodes
  std::vector<int32_t> down;    // G: the groups by depth (then index): a group's parent group is a level up
};

static TreeIndex index_of(const at::Tensor& offsets, const at::Tensor& sizes, const at::Tensor& gparents,
                          const at::Tensor& group) {
  TORCH_CHECK(offsets.scalar_type() == at::kLong && sizes.scalar_type() == at::kLong &&
                  gparents.scalar_type() == at::kLong && group.scalar_type() == at::kLong,
              "tree index tensors must be int64");
  auto o = offsets.contiguous(), s = sizes.contiguous(), gp = gparents.contiguous(), gr = group.contiguous();
  TORCH_CHECK(gr.numel() < std::numeric_limits<int32_t>::max() - 32, "tree too large for int32 indices");
  TreeIndex t;
  t.G = static_cast<int32_t>(o.numel());
  t.N = static_cast<int32_t>(gr.numel());
  t.Gp = (t.G + 15) / 16 * 16;
  const int64_t *O = o.data_ptr<int64_t>(), *S = s.data_ptr<int64_t>(), *GP = gp.data_ptr<int64_t>();
  const int64_t* GR = gr.data_ptr<int64_t>();
  t.off.assign(t.Gp + 1, t.N);
  t.par.assign(t.Gp, -1);
  t.parx.assign(t.Gp, t.N);
  t.pgx.assign(t.Gp, t.G);
  for (int32_t g = 0; g < t.G; ++g) {
    TORCH_CHECK(S[g] > 0 && O[g] == (g ? O[g - 1] + S[g - 1] : 0), "tree groups must be contiguous and in order");
    TORCH_CHECK(GP[g] < 0 || GR[GP[g]] < g, "a parent's group must precede its children's group");
    t.off[g] = static_cast<int32_t>(O[g]);
    if (GP[g] >= 0) {
      t.par[g] = t.parx[g] = static_cast<int32_t>(GP[g]);
      t.pgx[g] = static_cast<int32_t>(GR[GP[g]]);
    }
    if (S[g] > 16) t.big.push_back(g);
  }
  TORCH_CHECK(t.G == 0 || O[t.G - 1] + S[t.G - 1] == t.N, "tree groups must cover every node");
  // The top-down / bottom-up steps go level by level: within a level no step needs another's
  // result, so they do not wait on each other through memory.
  std::vector<int32_t> depth(t.G);
  for (int32_t g = 0; g < t.G; ++g) depth[g] = t.pgx[g] < t.G ? depth[t.pgx[g]] + 1 : 0;
  t.down.resize(t.G);
  for (int32_t g = 0; g < t.G; ++g) t.down[g] = g;
  std::stable_sort(t.down.begin(), t.down.end(), [&](int32_t i, int32_t j) { return depth[i] < depth[j]; });
  return t;
}

static void check_input(const at::Tensor& x, const TreeIndex& t, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(), what, " must be a contiguous 2-D CPU tensor");
  TORCH_CHECK(x.size(1) == t.N, what, " has ", x.size(1), " columns, the tree has ", t.N, " nodes");
}

// Rows in blocks handed out on demand (not a fixed half per thread): on a shared machine a thread
// that loses its core for a while does not hold the other one up.
template <typename F>
static void parallel_rows(int64_t R, const F& body) {
  constexpr int64_t block = 32;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (R + block - 1) / block)), 1,
                   [&](int64_t b0, int64_t b1) {
                     for (int64_t i = b0; i < b1; ++i) body([&](auto&& rows) {
                       for (int64_t r0; (r0 = next.fetch_add(block)) < R;) rows(r0, std::min(r0 + block, R));
                     });
                   });
}

// A fresh output tensor, optionally backed by transparent huge pages where the OS offers them on
// request (THP "madvise" mode): a 13x13x3x64 x 9418 float output is 1.2 GB, and first-touch faults
// on 4 KiB pages then cost more than the arithmetic. Advice only: nothing changes where refused.
static at::Tensor empty_output(const at::Tensor& like, bool huge_pages) {
  auto out = at::empty_like(like, at::MemoryFormat::Contiguous);
#if defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t p = reinterpret_cast<uintptr_t>(out.data_ptr()), n = out.nbytes();
  const uintptr_t b = (p + huge - 1) & ~(huge - 1), e = (p + n) & ~(huge - 1);
  if (huge_pages && n >= (uintptr_t(64) << 20) && e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#endif
  return out;
}

// Per-thread row buffers (N + 16 per node buffer: the SIMD spreads spill up to 16 past the end).
template <typename T>
struct Scratch {
  std::vector<T> e, spread, child, gsum, gval;
  explicit Scratch(const TreeIndex& t)
      : e(t.N + 16), spread(t.N + 16), child(t.N + 16, T(0)), gsum(t.Gp + 1), gval(t.Gp + 1) {}
};

// A group whose sum underflowed under the row-maximum shift: exp with its own maximum instead.
template <typename T>
static inline T redo_group(const T* xr, T* e, int32_t s0, int32_t s1) {
  T m = xr[s0];
  for (int32_t k = s0 + 1; k < s1; ++k) m = std::max(m, xr[k]);
  T sum = 0;
  for (int32_t k = s0; k < s1; ++k) sum += (e[k] = exp(xr[k] - m));
  return sum;
}

// ---- scalar path (any type) ----
template <typename T>
static void forward_row(const T* xr, T* ar, Scratch<T>& w, const TreeIndex& t, T tiny) {
  const int32_t *off = t.off.data(), *parx = t.parx.data(), *pgx = t.pgx.data();
  T *e = w.e.data(), *scale = w.gval.data();
  shifted_exp(xr, e, row_max(xr, t.N), t.N);
  e[t.N] = T(1);
  scale[t.G] = T(1);  // a root group's parent: probability 1
  for (int32_t g = 0; g < t.G; ++g) {
    const int32_t s0 = off[g], s1 = off[g + 1];
    T sum = 0;
    for (int32_t k = s0; k < s1; ++k) sum += e[k];
    if (!(sum > tiny)) sum = redo_group(xr, e, s0, s1);
    const T sc = scale[g] = e[parx[g]] * scale[pgx[g]] / sum;
    for (int32_t k = s0; k < s1; ++k) ar[k] = e[k] * sc;
  }
}

template <typename T>
static void backward_row(const T* ar, const T* gar, T* gxr, Scratch<T>& w, const TreeIndex& t) {
  const int32_t *off = t.off.data(), *par = t.par.data(), *parx = t.parx.data(), *pgx = t.pgx.data();
  T *S = w.gsum.data(), *cs = w.child.data();
  for (int32_t g = 0; g < t.G; ++g) {
    T s = 0;
    for (int32_t k = off[g]; k < off[g + 1]; ++k) s += ar[k] * gar[k];
    S[g] = s;
  }
  for (int32_t g = t.G - 1; g > 0; --g) S[pgx[g]] += S[g];  // child groups come after their parent's
  for (int32_t g = 0; g < t.G; ++g) cs[parx[g]] = S[g];      // cs[k] = S[child group of k]; 0 for a leaf
  for (int32_t g = 0; g < t.G; ++g) {
    const T up = par[g] >= 0 ? ar[par[g]] : T(1);
    const T q = up > 0 ? S[g] / up : T(0);
    for (int32_t k = off[g]; k < off[g + 1]; ++k) gxr[k] = ar[k] * (gar[k] - q) + cs[k];
  }
}

#if defined(__AVX512F__)
static inline __mmask16 lanes(int32_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// out[i] = sum of the 16 lanes of v[i]: a transpose-and-add tree, 15 adds for 16 vectors.
__attribute__((always_inline)) static inline __m512 sum16(const __m512* v) {
  __m512 w[8], u[4], s[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // lanes 0-1: v[i], lanes 2-3: v[i + 8]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44), _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
#pragma GCC unroll 8
  for (int i = 0; i < 4; ++i)  // lane 0: v[i], 1: v[i + 8], 2: v[i + 4], 3: v[i + 12]
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[i], w[i + 4], 0x88), _mm512_shuffle_f32x4(w[i], w[i + 4], 0xDD));
#pragma GCC unroll 8
  for (int i = 0; i < 2; ++i)  // per lane, elements 0-1: u[i], 2-3: u[i + 2]
    s[i] = _mm512_add_ps(_mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
  // per lane L, element p: v[{0, 8, 4, 12}[L] + {0, 2, 1, 3}[p]]
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15), r);
}

// sums[g] = sum of v over group g, for every group (v: a per-node row, 16 readable past the end).
template <typename Load>
static inline void group_sums(float* sums, const TreeIndex& t, Load load) {
  const int32_t* off = t.off.data();
  for (int32_t g0 = 0; g0 < t.Gp; g0 += 16) {
    __m512 v[16];  // kept in registers: the loops here and in sum16 must be unrolled
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) v[i] = load(lanes(off[g0 + i + 1] - off[g0 + i]), off[g0 + i]);
    _mm512_storeu_ps(sums + g0, sum16(v));
  }
  for (const int32_t g : t.big)
    for (int32_t c = off[g] + 16; c < off[g + 1]; c += 16) sums[g] += _mm512_reduce_add_ps(load(lanes(off[g + 1] - c), c));
}

// spread[k] = val[group of k] for every node: one unmasked store per 16 nodes of a group, in order.
static inline void spread_groups(float* spread, const float* val, const TreeIndex& t) {
  const int32_t* off = t.off.data();
  for (int32_t g = 0; g < t.G; ++g) {
    const __m512 v = _mm512_set1_ps(val[g]);
    int32_t c = off[g];
    do {
      _mm512_storeu_ps(spread + c, v);
      c += 16;
    } while (c < off[g + 1]);
  }
}

static void forward_row(const float* xr, float* ar, Scratch<float>& w, const TreeIndex& t, float tiny) {
  const int32_t N = t.N, *off = t.off.data(), *parx = t.parx.data(), *pgx = t.pgx.data();
  float *e = w.e.data(), *sums = w.gsum.data(), *scale = w.gval.data(), *sp = w.spread.data();
  shifted_exp(xr, e, row_max(xr, N), N);
  group_sums(sums, t, [&](__mmask16 k, int32_t at) { return _mm512_maskz_loadu_ps(k, e + at); });
  const __m512 vtiny = _mm512_set1_ps(tiny);
  for (int32_t g0 = 0; g0 < t.G; g0 += 16) {
    const __m512 s = _mm512_loadu_ps(sums + g0);
    __mmask16 low = _mm512_cmp_ps_mask(s, vtiny, _CMP_NGT_UQ) & lanes(t.G - g0);
    _mm512_storeu_ps(scale + g0, _mm512_div_ps(_mm512_set1_ps(1.0f), s));  // 1 / sum for now
    while (low) {  // rare: a group far below the row maximum
      const int32_t g = g0 + __builtin_ctz(low);
      low &= low - 1;
      scale[g] = 1.0f / redo_group(xr, e, off[g], off[g + 1]);
    }
  }
  e[N] = 1.0f;
  scale[t.G] = 1.0f;  // a root group's parent: probability 1
  for (const int32_t g : t.down) scale[g] *= e[parx[g]] * scale[pgx[g]];  // top-down
  spread_groups(sp, scale, t);
#pragma omp simd
  for (int32_t j = 0; j < N; ++j) ar[j] = e[j] * sp[j];
}

static void backward_row(const float* ar, const float* gar, float* gxr, Scratch<float>& w, const TreeIndex& t) {
  const int32_t N = t.N, *par = t.par.data(), *parx = t.parx.data(), *pgx = t.pgx.data();
  float *S = w.gsum.data(), *q = w.gval.data(), *sp = w.spread.data(), *cs = w.child.data(), *ag = w.e.data();
  // a * grad first, in one plain pass: the rows come from memory at full speed (the per-group
  // masked loads below would wait on it), and stay in cache for the last pass.
#pragma omp simd
  for (int32_t j = 0; j < N; ++j) ag[j] = ar[j] * gar[j];
  group_sums(S, t, [&](__mmask16 k, int32_t at) { return _mm512_maskz_loadu_ps(k, ag + at); });
  for (int32_t i = t.G - 1; i > 0; --i) S[pgx[t.down[i]]] += S[t.down[i]];  // bottom-up
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  for (int32_t g0 = 0; g0 < t.G; g0 += 16) {  // q = S / up, up = a[parent] (1 for a root group)
    const __m512i p = _mm512_loadu_si512(par + g0);
    const __m512 up = _mm512_mask_i32gather_ps(one, _mm512_cmpge_epi32_mask(p, _mm512_setzero_si512()), p, ar, 4);
    const __m512 s = _mm512_loadu_ps(S + g0);
    _mm512_storeu_ps(q + g0, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(up, zero, _CMP_GT_OQ), s, up));
  }
  spread_groups(sp, q, t);
  for (int32_t g = 0; g < t.G; ++g) cs[parx[g]] = S[g];  // cs[k] = S[child group of k]; 0 for a leaf
#pragma omp simd
  for (int32_t j = 0; j < N; ++j) gxr[j] = ar[j] * (gar[j] - sp[j]) + cs[j];
}
#endif

at::Tensor absolute_softmax_forward(at::Tensor x, at::Tensor offsets, at::Tensor sizes, at::Tensor gparents,
                                    at::Tensor group, bool huge_pages) {
  const TreeIndex t = index_of(offsets, sizes, gparents, group);
  check_input(x, t, "x");
  auto a = empty_output(x, huge_pages);
  const int64_t R = x.size(0), N = t.N;
  if (R == 0 || N == 0) return a;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "absolute_softmax_forward", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    scalar_t* A = a.data_ptr<scalar_t>();
    // Below this a group's sum has lost precision to the row-maximum shift.
    const scalar_t tiny = std::numeric_limits<scalar_t>::min() * scalar_t(1e6);
    parallel_rows(R, [&](auto&& each_block) {
      Scratch<scalar_t> w(t);
      each_block([&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) forward_row(X + r * N, A + r * N, w, t, tiny);
      });
    });
  });
  return a;
}

at::Tensor absolute_softmax_backward(at::Tensor grad_a, at::Tensor a, at::Tensor offsets, at::Tensor sizes,
                                     at::Tensor gparents, at::Tensor group, bool huge_pages) {
  const TreeIndex t = index_of(offsets, sizes, gparents, group);
  check_input(a, t, "a");
  check_input(grad_a, t, "grad");
  TORCH_CHECK(grad_a.sizes() == a.sizes() && grad_a.scalar_type() == a.scalar_type(), "grad does not match a");
  auto gx = empty_output(a, huge_pages);
  const int64_t R = a.size(0), N = t.N;
  if (R == 0 || N == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "absolute_softmax_backward", [&] {
    const scalar_t* GA = grad_a.data_ptr<scalar_t>();
    const scalar_t* A = a.data_ptr<scalar_t>();
    scalar_t* GX = gx.data_ptr<scalar_t>();
    parallel_rows(R, [&](auto&& each_block) {
      Scratch<scalar_t> w(t);
      each_block([&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) backward_row(A + r * N, GA + r * N, GX + r * N, w, t);
      });
    });
  });
  return gx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &absolute_softmax_forward, "group softmax + absolute probabilities (CPU)");
  m.def("backward", &absolute_softmax_backward, "backward of absolute_softmax_forward, from a alone (CPU)");
}
