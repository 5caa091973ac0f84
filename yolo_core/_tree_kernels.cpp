// Fused WordTree kernels for CPU: group softmax + absolute probabilities, forward and backward.
// One row (one prediction: N node scores, contiguous) at a time, so the row stays in cache;
// rows run in parallel (at::parallel_for). Node order is darknet's: the nodes of a sibling group
// are contiguous and a parent's group precedes its children's groups.
//
// Forward: e = exp(x - row max) (one SIMD pass); per group g, inv[g] = 1 / sum(e in g) and
// up[g] = P(parent of g) (one step per group, top-down); then p = e * inv[group],
// a = p * up[group] (one pass). Backward, for d loss / d a = G: T[g] = sum_{k in g} p_k acc_k
// with acc_k = G_k + T[child group of k] (bottom-up, one step per group), and
// d loss / d x_k = a_k (acc_k - T[group of k]) (one pass).
#include <math.h>

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <vector>

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
  for (int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

struct TreeIndex {
  const int64_t *off, *size, *gparent, *group, *child;
  int64_t G;
};

static TreeIndex index_of(const at::Tensor& offsets, const at::Tensor& sizes, const at::Tensor& gparents,
                          const at::Tensor& group, const at::Tensor& child_group) {
  return {offsets.data_ptr<int64_t>(), sizes.data_ptr<int64_t>(), gparents.data_ptr<int64_t>(),
          group.data_ptr<int64_t>(), child_group.data_ptr<int64_t>(), offsets.size(0)};
}

std::vector<at::Tensor> absolute_softmax_forward(at::Tensor x, at::Tensor offsets, at::Tensor sizes,
                                                 at::Tensor gparents, at::Tensor group, at::Tensor child_group) {
  auto p = at::empty_like(x);
  auto a = at::empty_like(x);
  const int64_t R = x.size(0), N = x.size(1);
  const TreeIndex t = index_of(offsets, sizes, gparents, group, child_group);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "absolute_softmax_forward", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    scalar_t* P = p.data_ptr<scalar_t>();
    scalar_t* A = a.data_ptr<scalar_t>();
    // Below this a group's sum has lost precision to the row-maximum shift.
    const scalar_t tiny = std::numeric_limits<scalar_t>::min() * scalar_t(1e6);
    at::parallel_for(0, R, 8, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> inv(t.G), up(t.G);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = X + r * N;
        scalar_t* pr = P + r * N;
        scalar_t* ar = A + r * N;
        shifted_exp(xr, pr, row_max(xr, N), N);
        for (int64_t g = 0; g < t.G; ++g) {
          const int64_t s0 = t.off[g], n = t.size[g];
          scalar_t sum = 0;
          for (int64_t k = 0; k < n; ++k) sum += pr[s0 + k];
          if (!(sum > tiny)) {  // far below the row maximum: redo with the group's own maximum
            scalar_t m = xr[s0];
            for (int64_t k = 1; k < n; ++k) m = std::max(m, xr[s0 + k]);
            sum = 0;
            for (int64_t k = 0; k < n; ++k) sum += (pr[s0 + k] = exp(xr[s0 + k] - m));
          }
          inv[g] = scalar_t(1) / sum;
          const int64_t par = t.gparent[g];
          up[g] = par >= 0 ? pr[par] * inv[t.group[par]] * up[t.group[par]] : scalar_t(1);
        }
        for (int64_t j = 0; j < N; ++j) {
          const int64_t q = t.group[j];
          pr[j] *= inv[q];
          ar[j] = pr[j] * up[q];
        }
      }
    });
  });
  return {p, a};
}

at::Tensor absolute_softmax_backward(at::Tensor grad_a, at::Tensor p, at::Tensor a, at::Tensor offsets,
                                     at::Tensor sizes, at::Tensor gparents, at::Tensor group,
                                     at::Tensor child_group) {
  auto gx = at::empty_like(p);
  const int64_t R = p.size(0), N = p.size(1);
  const TreeIndex t = index_of(offsets, sizes, gparents, group, child_group);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "absolute_softmax_backward", [&] {
    const scalar_t* GA = grad_a.data_ptr<scalar_t>();
    const scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* A = a.data_ptr<scalar_t>();
    scalar_t* GX = gx.data_ptr<scalar_t>();
    at::parallel_for(0, R, 8, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> T(t.G);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* gar = GA + r * N;
        const scalar_t* pr = P + r * N;
        const scalar_t* ar = A + r * N;
        scalar_t* gxr = GX + r * N;
        for (int64_t g = 0; g < t.G; ++g) {
          const int64_t s0 = t.off[g], n = t.size[g];
          scalar_t s = 0;
          for (int64_t k = 0; k < n; ++k) s += pr[s0 + k] * gar[s0 + k];
          T[g] = s;
        }
        for (int64_t g = t.G - 1; g > 0; --g) {  // child groups come after their parent's group
          const int64_t par = t.gparent[g];
          if (par >= 0) T[t.group[par]] += pr[par] * T[g];
        }
        for (int64_t j = 0; j < N; ++j) {
          const int64_t c = t.child[j];
          gxr[j] = ar[j] * (gar[j] + (c >= 0 ? T[c] : scalar_t(0)) - T[t.group[j]]);
        }
      }
    });
  });
  return gx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &absolute_softmax_forward, "group softmax + absolute probabilities (CPU)");
  m.def("backward", &absolute_softmax_backward, "backward of absolute_softmax_forward (CPU)");
}
