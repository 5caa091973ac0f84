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
// vectorized across groups. For float with AVX-512: a group sum is one 16-lane load per group
// (lanes past the group zeroed), 16 of them folded into one vector of 16 sums; per-group values
// reach the nodes inside the per-node passes, one permute per 16 nodes (at most 16 groups meet
// 16 consecutive nodes); exp is an inline polynomial. The forward's top-down step stays scalar,
// over groups by depth (no step waits on the one before). The backward's bottom-up step goes over
// a level layout, deepest level first, each level padded to whole chunks of 16 groups: a chunk's
// sums of (a G + cs) in one vector, then cs[parent] = S as one scatter (a node has one child
// group: no conflicts). On this hardware a gather or scatter costs about 16 loads, so they are
// used once per 16 groups, never per node. Otherwise (double, no AVX-512): the same algorithm
// with scalar loops per group.
#include <math.h>
#include <sys/mman.h>

// Only the ATen headers used, and the op registered with the dispatcher (TORCH_LIBRARY) rather
// than as a pybind11 module: <torch/extension.h> alone takes ~20 s of the first-use compile.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
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
  int32_t N = 0, G = 0, Gp = 0, L = 0;
  std::vector<int32_t> off;     // Gp + 1: group g is [off[g], off[g + 1])
  std::vector<int32_t> par;     // Gp: parent node of group g, -1 for a root group
  std::vector<int32_t> parx;    // Gp: parent node, or N (a slot that holds 1 or is ignored)
  std::vector<int32_t> pgx;     // Gp: group of the parent node, or G (a slot that holds 1 or 0)
  std::vector<int32_t> big;     // groups of more than 16 nodes
  std::vector<int32_t> down;    // G: the groups by depth (then index): a group's parent group is a level up
  // The spread of per-group values over nodes: node j's group is base[j / 16] + loc[j] (loc < 16).
  std::vector<int32_t> base;    // (N + 15) / 16
  std::vector<uint8_t> loc;     // N rounded up to 16 (0 past N)
  // The level layout (backward): L slots, `down` with each level padded to a multiple of 16 slots
  // with empty groups (offset N, size 0, no parent, group G).
  std::vector<int32_t> loff, lsize, lparx, lgrp;  // L: offset, size, parent node (N for none), group
  std::vector<uint16_t> lbig;                     // L / 16: per chunk, the lanes of groups of more than 16 nodes
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
  const auto pad = [&t] {
    while (t.loff.size() % 16) t.loff.push_back(t.N), t.lsize.push_back(0), t.lparx.push_back(t.N), t.lgrp.push_back(t.G);
  };
  for (int32_t i = 0; i < t.G; ++i) {
    const int32_t g = t.down[i];
    if (i && depth[g] != depth[t.down[i - 1]]) pad();  // a chunk never spans two levels
    t.loff.push_back(t.off[g]), t.lsize.push_back(static_cast<int32_t>(S[g])), t.lparx.push_back(t.parx[g]);
    t.lgrp.push_back(g);
  }
  pad();
  t.L = static_cast<int32_t>(t.loff.size());
  t.lbig.assign(t.L / 16, 0);
  for (int32_t i = 0; i < t.L; ++i)
    if (t.lsize[i] > 16) t.lbig[i / 16] |= uint16_t(1u << (i % 16));
  t.base.resize((t.N + 15) / 16);
  t.loc.assign(t.base.size() * 16, 0);
  for (int32_t g = 0; g < t.G; ++g)
    for (int32_t j = t.off[g]; j < t.off[g + 1]; ++j) {
      if (j % 16 == 0) t.base[j / 16] = g;
      t.loc[j] = static_cast<uint8_t>(g - t.base[j / 16]);
    }
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

// Per-thread row buffers, 16 longer than needed: the SIMD path reads 16 lanes from any group's start.
template <typename T>
struct Scratch {
  std::vector<T> e, child, gsum, gval;
  explicit Scratch(const TreeIndex& t)
      : e(t.N + 16), child(t.N + 16, T(0)), gsum(t.Gp + 16), gval(t.Gp + 16) {}
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

// exp(x) for x <= 0 (a row-maximum shift), as accurate as glibc's vector expf (~2 ulp) in fewer
// instructions: n = round(x / ln 2), a degree-6 polynomial on the rest, scaled by 2^n. Below
// -104 (and -inf) it is 0, as expf's is; NaN stays NaN (max returns its second operand then).
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2 in two parts (Cody-Waite)
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// sums[g] = sum of v over group g, for every group. load(at): 16 lanes of v from node at,
// unmasked (a masked load costs more): reads up to 16 past a group's end, zeroed here.
// Inlined, as chunk_sums: a call keeps the loader's pointers in memory (~10% of the forward).
template <typename Load>
__attribute__((always_inline)) static inline void group_sums(float* sums, const TreeIndex& t, Load load) {
  const int32_t* off = t.off.data();
  for (int32_t g0 = 0; g0 < t.Gp; g0 += 16) {
    __m512 v[16];  // kept in registers: the loops here and in sum16 must be unrolled
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_mov_ps(lanes(off[g0 + i + 1] - off[g0 + i]), load(off[g0 + i]));
    _mm512_storeu_ps(sums + g0, sum16(v));
  }
  for (const int32_t g : t.big)
    for (int32_t c = off[g] + 16; c < off[g + 1]; c += 16)
      sums[g] += _mm512_reduce_add_ps(_mm512_maskz_mov_ps(lanes(off[g + 1] - c), load(c)));
}

// The same for the 16 slots of the level layout at c, returned.
template <typename Load>
__attribute__((always_inline)) static inline __m512 chunk_sums(const TreeIndex& t, int32_t c, Load load) {
  const int32_t *off = t.loff.data() + c, *size = t.lsize.data() + c;
  __m512 v[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_mov_ps(lanes(size[i]), load(off[i]));
  __m512 s = sum16(v);
  for (uint32_t big = t.lbig[c / 16]; big; big &= big - 1) {
    const int i = __builtin_ctz(big);
    float rest = 0;
    for (int32_t k = 16; k < size[i]; k += 16)
      rest += _mm512_reduce_add_ps(_mm512_maskz_mov_ps(lanes(size[i] - k), load(off[i] + k)));
    s = _mm512_mask_add_ps(s, __mmask16(1u << i), s, _mm512_set1_ps(rest));
  }
  return s;
}

// For every 16 nodes from j: body(j, val[group of each node], lanes inside the row: all but at
// the row's end, where the row's tail goes masked). val must be readable 15 past its last group.
template <typename Body>
static inline void each_spread(const float* val, const TreeIndex& t, Body body) {
  const auto at = [&](int32_t j) {
    const __m512i loc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t.loc.data() + j)));
    return _mm512_permutexvar_ps(loc, _mm512_loadu_ps(val + t.base[j / 16]));
  };
  int32_t j = 0;
  for (; j + 16 <= t.N; j += 16) body(j, at(j), std::true_type());
  if (j < t.N) body(j, at(j), lanes(t.N - j));
}

// 16 lanes at p: unmasked where `in` is std::true_type (all lanes), else masked.
static inline __m512 load16(const float* p, std::true_type) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const float* p, __mmask16 in) { return _mm512_maskz_loadu_ps(in, p); }
static inline void store16(float* p, __m512 v, std::true_type) { _mm512_storeu_ps(p, v); }
static inline void store16(float* p, __m512 v, __mmask16 in) { _mm512_mask_storeu_ps(p, in, v); }

static void forward_row(const float* xr, float* ar, Scratch<float>& w, const TreeIndex& t, float tiny) {
  const int32_t N = t.N, *off = t.off.data(), *parx = t.parx.data(), *pgx = t.pgx.data();
  float *e = w.e.data(), *sums = w.gsum.data(), *scale = w.gval.data();
  const __m512 m = _mm512_set1_ps(row_max(xr, N));
  int32_t j = 0;
  for (; j + 16 <= N; j += 16) _mm512_storeu_ps(e + j, exp16(_mm512_sub_ps(_mm512_loadu_ps(xr + j), m)));
  _mm512_storeu_ps(e + j, exp16(_mm512_sub_ps(load16(xr + j, lanes(N - j)), m)));  // into e's padding
  group_sums(sums, t, [&](int32_t at) { return _mm512_loadu_ps(e + at); });
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
  each_spread(scale, t, [&](int32_t j, __m512 sc, auto in) { store16(ar + j, _mm512_mul_ps(_mm512_loadu_ps(e + j), sc), in); });
}

static void backward_row(const float* ar, const float* gar, float* gxr, Scratch<float>& w, const TreeIndex& t) {
  const int32_t N = t.N;
  float *q = w.gval.data(), *cs = w.child.data(), *ag = w.e.data();
  // a * grad first, in one plain pass: the rows come from memory at full speed (the per-group
  // loads below would wait on it), and stay in cache for the last pass.
#pragma omp simd
  for (int32_t j = 0; j < N; ++j) ag[j] = ar[j] * gar[j];
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  const __m512i vN = _mm512_set1_epi32(N), vG = _mm512_set1_epi32(t.G);
  for (int32_t c = t.L - 16; c >= 0; c -= 16) {  // deepest level first: cs of this chunk's nodes is final
    // S = sum over the group of (a G + cs); cs[k] = S[child group of k], 0 for a leaf (never written)
    const __m512 s =
        chunk_sums(t, c, [&](int32_t at) { return _mm512_add_ps(_mm512_loadu_ps(ag + at), _mm512_loadu_ps(cs + at)); });
    const __m512i p = _mm512_loadu_si512(t.lparx.data() + c), g = _mm512_loadu_si512(t.lgrp.data() + c);
    const __mmask16 has_parent = _mm512_cmplt_epi32_mask(p, vN);
    _mm512_mask_i32scatter_ps(cs, has_parent, p, s, 4);
    // q = S / up, up = a[parent] (1 for a root group; q = 0 where up = 0), into group order
    const __m512 up = _mm512_mask_i32gather_ps(one, has_parent, p, ar, 4);
    const __m512 qc = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(up, zero, _CMP_GT_OQ), s, up);
    _mm512_mask_i32scatter_ps(q, _mm512_cmplt_epi32_mask(g, vG), g, qc, 4);
  }
  each_spread(q, t, [&](int32_t j, __m512 qj, auto in) {
    const __m512 a = load16(ar + j, in), g = load16(gar + j, in);
    store16(gxr + j, _mm512_fmadd_ps(a, _mm512_sub_ps(g, qj), _mm512_loadu_ps(cs + j)), in);
  });
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

// torch.ops.y9k_tree_kernels.forward: group softmax + absolute probabilities (CPU);
// torch.ops.y9k_tree_kernels.backward: its backward, from a alone.
TORCH_LIBRARY(y9k_tree_kernels, m) {
  m.def("forward", &absolute_softmax_forward);
  m.def("backward", &absolute_softmax_backward);
}
