// Fused multi-step IF/LIF neuron for the CPU: forward and hand-derived BPTT backward in one pass over time per
// element (see spikeforge/neuron/functional.py for the equations). Elements are independent, so the work is split
// into blocks of contiguous elements across threads; inside a block the loop runs over time, then over elements
// (vectorizable, cache friendly). Arithmetic mirrors the PyTorch reference op for op (no FMA contraction).
// The element loops are specialised at compile time (ordering, reset, keep-P, surrogate) and run over runs of
// elements that share one channel, so threshold and leak are scalars there and the loops vectorize; per-block state
// lives in fixed-size stack buffers (no allocation in the hot path).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 1024;
constexpr double kNever = -999.0;  // NEVER_SPIKED in neuron/surrogate.py (dt = t + 999)

template <typename T, int CODE>
inline T surrogate_grad(T z, T dt, T p1, T p2) {
  if constexpr (CODE == 0) {  // piecewise linear: gamma * max(0, 1 - |z|)
    T v = T(1) - std::abs(z);
    return v > T(0) ? p1 * v : T(0);
  } else if constexpr (CODE == 1) {  // STDB: alpha * exp(-beta * dt)
    return p1 * std::exp(-p2 * dt);
  } else if constexpr (CODE == 2) {  // fast sigmoid: 1 / (1 + slope |z|)^2
    T d = T(1) + p1 * std::abs(z);
    return T(1) / (d * d);
  } else if constexpr (CODE == 3) {  // atan: (alpha / 2) / (1 + (pi/2 alpha z)^2)
    T w = T(M_PI / 2.0) * p1 * z;
    return (p1 / T(2)) / (T(1) + w * w);
  } else {  // exponential: scale * exp(-decay |z|)
    return p1 * std::exp(-p2 * std::abs(z));
  }
}

// Calls fn(j, m, c) for the runs [j, j + m) of a block of `len` elements starting at element `b0` that share one
// channel c = (i / inner) % C, so threshold and leak are scalars inside each run (one run per block when C == 1).
template <typename F>
inline void for_channel_runs(int64_t b0, int64_t len, int64_t C, int64_t inner, F&& fn) {
  if (C == 1) {
    fn(int64_t(0), len, int64_t(0));
    return;
  }
  for (int64_t j = 0; j < len;) {
    const int64_t i = b0 + j;
    const int64_t m = std::min(len - j, inner - i % inner);
    fn(j, m, (i / inner) % C);
    j += m;
  }
}

// One step over a run of elements with scalar threshold th and leak lam (vectorizable: no aliasing, no branches
// beyond the template flags). U is the membrane, updated in place.
template <typename T, bool IF, bool SOFT, bool KEEP>
inline void step_run(const T* __restrict I, T* __restrict S, T* __restrict P, T* __restrict U, int64_t m, T th,
                     T lam) {
  for (int64_t j = 0; j < m; ++j) {
    const T u = U[j];
    T p, un;
    if constexpr (IF) {
      const T lu = lam * u;
      p = lu + I[j];
      const T s = p >= th ? T(1) : T(0);
      un = SOFT ? p - th * s : p * (T(1) - s);
      S[j] = s;
    } else {
      p = u;
      const T s = p >= th ? T(1) : T(0);
      const T lu = lam * u;
      if constexpr (SOFT) {
        const T a = lu + I[j];
        un = a - th * s;
      } else {
        const T b = lu * (T(1) - s);
        un = b + I[j];
      }
      S[j] = s;
    }
    U[j] = un;
    if constexpr (KEEP) P[j] = p;
  }
}

// currents: [T, N] with time stride `cur_stride` (0 for a current repeated over time); thr/leak: [C]; element i has
// channel (i / inner) % C.  Writes spikes [T, N] and, if keep_pre, the pre-fire potentials [T, N]; returns U[T-1].
template <typename T, bool IF, bool SOFT, bool KEEP>
void forward_impl(const T* cur, int64_t cur_stride, const T* thr, const T* lk, int64_t C, int64_t inner,
                  int64_t steps, int64_t n, const T* u0, T* spk, T* pre, T* u_out) {
  at::parallel_for(0, n, kBlock, [&](int64_t begin, int64_t end) {
    T u[kBlock];
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {  // single-threaded, parallel_for hands over the whole range
      const int64_t len = std::min(kBlock, end - b0);
      for (int64_t j = 0; j < len; ++j) u[j] = u0 ? u0[b0 + j] : T(0);
      for (int64_t t = 0; t < steps; ++t) {
        const T* I = cur + t * cur_stride + b0;
        T* S = spk + t * n + b0;
        T* P = KEEP ? pre + t * n + b0 : nullptr;
        for_channel_runs(b0, len, C, inner, [&](int64_t j, int64_t m, int64_t c) {
          step_run<T, IF, SOFT, KEEP>(I + j, S + j, KEEP ? P + j : nullptr, u + j, m, thr[c], lk[c]);
        });
      }
      for (int64_t j = 0; j < len; ++j) u_out[b0 + j] = u[j];
    }
  });
}

// One reverse step over a run with scalar th/lam: q[t] = c q[t+1] + a[t] (Q holds q[t+1] on entry, q[t] on exit),
// grad_in, and the per-element threshold / leak gradient sums (ATH / ALK, when requested).
template <typename T, bool IF, bool SOFT, int CODE>
inline void reverse_run(const T* __restrict P, const T* __restrict G, const T* __restrict DT, T* __restrict GI,
                        T* __restrict Q, T* __restrict ATH, T* __restrict ALK, int64_t m, T th, T lam, T p1, T p2,
                        bool need_th, bool need_lk, bool last) {
  for (int64_t j = 0; j < m; ++j) {
    const T p = P[j];
    const T s = p >= th ? T(1) : T(0);
    const T z = p / th - T(1);
    const T g = surrogate_grad<T, CODE>(z, CODE == 1 ? DT[j] : T(0), p1, p2);
    const T a = G[j] * g / th;
    const T qn = Q[j];  // q[t+1]
    if (need_th) ATH[j] -= a * p / th;
    const T coef = SOFT ? lam : lam * (T(1) - s);
    const T qt = coef * qn + a;
    if constexpr (IF) {
      GI[j] = qt;
      if (!last) {
        const T u_t = SOFT ? p - th * s : p * (T(1) - s);
        if (need_lk) ALK[j] += qn * u_t;
        if (SOFT && need_th) ATH[j] -= qn * s * lam;
      }
    } else {
      GI[j] = qn;
      if (need_lk) ALK[j] += qn * (SOFT ? p : p * (T(1) - s));
      if (SOFT && need_th) ATH[j] -= qn * s;
    }
    Q[j] = qt;
  }
}

// Backward: grad_in [T, N]; per-element sums over time of the threshold and leak gradients (reduced by the caller).
template <typename T, bool IF, bool SOFT, int CODE>
void backward_impl(const T* gs, const T* pre, const T* thr, const T* lk, int64_t C, int64_t inner, int64_t steps,
                   int64_t n, T p1, T p2, bool need_th, bool need_lk, T* gin, T* gth, T* glk) {
  at::parallel_for(0, n, kBlock, [&](int64_t begin, int64_t end) {
    T q[kBlock], ath[kBlock], alk[kBlock];
    std::vector<T> dt;
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
      const int64_t len = std::min(kBlock, end - b0);
      for (int64_t j = 0; j < len; ++j) q[j] = ath[j] = alk[j] = T(0);
      if constexpr (CODE == 1) {  // STDB: time since the previous spike, for every step (forward sweep)
        dt.assign(steps * len, T(0));
        T last[kBlock];
        for (int64_t j = 0; j < len; ++j) last[j] = T(kNever);
        for (int64_t t = 0; t < steps; ++t) {
          const T* P = pre + t * n + b0;
          T* D = dt.data() + t * len;
          for_channel_runs(b0, len, C, inner, [&](int64_t j0, int64_t m, int64_t c) {
            const T th = thr[c];
            for (int64_t j = j0; j < j0 + m; ++j) {
              D[j] = T(t) - last[j];
              if (P[j] >= th) last[j] = T(t);
            }
          });
        }
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        const T* P = pre + t * n + b0;
        const T* G = gs + t * n + b0;
        T* GI = gin + t * n + b0;
        const T* D = CODE == 1 ? dt.data() + t * len : nullptr;
        for_channel_runs(b0, len, C, inner, [&](int64_t j, int64_t m, int64_t c) {
          reverse_run<T, IF, SOFT, CODE>(P + j, G + j, D ? D + j : nullptr, GI + j, q + j, ath + j, alk + j, m,
                                         thr[c], lk[c], p1, p2, need_th, need_lk, t == steps - 1);
        });
      }
      for (int64_t j = 0; j < len; ++j) {
        if (need_th) gth[b0 + j] = ath[j];
        if (need_lk) glk[b0 + j] = alk[j];
      }
    }
  });
}

template <typename T, bool IF, bool SOFT>
void backward_code(int code, const T* gs, const T* pre, const T* thr, const T* lk, int64_t C, int64_t inner,
                   int64_t steps, int64_t n, T p1, T p2, bool need_th, bool need_lk, T* gin, T* gth, T* glk) {
  switch (code) {
    case 0: return backward_impl<T, IF, SOFT, 0>(gs, pre, thr, lk, C, inner, steps, n, p1, p2, need_th, need_lk, gin, gth, glk);
    case 1: return backward_impl<T, IF, SOFT, 1>(gs, pre, thr, lk, C, inner, steps, n, p1, p2, need_th, need_lk, gin, gth, glk);
    case 2: return backward_impl<T, IF, SOFT, 2>(gs, pre, thr, lk, C, inner, steps, n, p1, p2, need_th, need_lk, gin, gth, glk);
    case 3: return backward_impl<T, IF, SOFT, 3>(gs, pre, thr, lk, C, inner, steps, n, p1, p2, need_th, need_lk, gin, gth, glk);
    default: return backward_impl<T, IF, SOFT, 4>(gs, pre, thr, lk, C, inner, steps, n, p1, p2, need_th, need_lk, gin, gth, glk);
  }
}

// Runtime flags -> compile-time specialisations.
template <typename T>
void forward_dispatch(bool integrate_first, bool soft, bool keep, const T* cur, int64_t cur_stride, const T* thr,
                      const T* lk, int64_t C, int64_t inner, int64_t steps, int64_t n, const T* u0, T* spk, T* pre,
                      T* u_out) {
  auto run = [&](auto IF, auto SOFT, auto KEEP) {
    forward_impl<T, decltype(IF)::value, decltype(SOFT)::value, decltype(KEEP)::value>(
        cur, cur_stride, thr, lk, C, inner, steps, n, u0, spk, pre, u_out);
  };
  auto with_keep = [&](auto IF, auto SOFT) {
    if (keep) run(IF, SOFT, std::true_type{}); else run(IF, SOFT, std::false_type{});
  };
  auto with_soft = [&](auto IF) {
    if (soft) with_keep(IF, std::true_type{}); else with_keep(IF, std::false_type{});
  };
  if (integrate_first) with_soft(std::true_type{}); else with_soft(std::false_type{});
}

template <typename T>
void backward_dispatch(bool integrate_first, bool soft, int code, const T* gs, const T* pre, const T* thr,
                       const T* lk, int64_t C, int64_t inner, int64_t steps, int64_t n, T p1, T p2, bool need_th,
                       bool need_lk, T* gin, T* gth, T* glk) {
  auto run = [&](auto IF, auto SOFT) {
    backward_code<T, decltype(IF)::value, decltype(SOFT)::value>(code, gs, pre, thr, lk, C, inner, steps, n, p1, p2,
                                                                 need_th, need_lk, gin, gth, glk);
  };
  auto with_soft = [&](auto IF) {
    if (soft) run(IF, std::true_type{}); else run(IF, std::false_type{});
  };
  if (integrate_first) with_soft(std::true_type{}); else with_soft(std::false_type{});
}

}  // namespace

std::vector<torch::Tensor> neuron_forward(torch::Tensor currents, torch::Tensor thr, torch::Tensor leak,
                                          int64_t inner, bool integrate_first, bool soft, bool keep_pre,
                                          c10::optional<torch::Tensor> u0) {
  TORCH_CHECK(currents.dim() >= 2, "currents must be [T, ...]");
  const int64_t steps = currents.size(0);
  const int64_t n = currents[0].numel();
  TORCH_CHECK(currents[0].is_contiguous(), "each step of the currents must be contiguous");
  const int64_t cur_stride = steps > 1 ? currents.stride(0) : n;
  auto spk = torch::empty(currents.sizes(), currents.options());
  auto pre = keep_pre ? torch::empty(currents.sizes(), currents.options()) : torch::Tensor();
  auto u_out = torch::empty(currents[0].sizes(), currents.options());
  torch::Tensor u0c;
  if (u0.has_value()) u0c = u0->contiguous();
  AT_DISPATCH_FLOATING_TYPES(currents.scalar_type(), "neuron_forward", [&] {
    forward_dispatch<scalar_t>(integrate_first, soft, keep_pre, currents.data_ptr<scalar_t>(), cur_stride,
                               thr.data_ptr<scalar_t>(), leak.data_ptr<scalar_t>(), thr.numel(), inner, steps, n,
                               u0.has_value() ? u0c.data_ptr<scalar_t>() : nullptr, spk.data_ptr<scalar_t>(),
                               keep_pre ? pre.data_ptr<scalar_t>() : nullptr, u_out.data_ptr<scalar_t>());
  });
  return {spk, pre, u_out};
}

std::vector<torch::Tensor> neuron_backward(torch::Tensor grad_spikes, torch::Tensor pre, torch::Tensor thr,
                                           torch::Tensor leak, int64_t inner, bool integrate_first, bool soft,
                                           int64_t code, double p1, double p2, bool need_th, bool need_lk) {
  const int64_t steps = pre.size(0);
  const int64_t n = pre[0].numel();
  auto gs = grad_spikes.contiguous();
  auto gin = torch::empty(pre.sizes(), pre.options());
  auto gth = need_th ? torch::empty(pre[0].sizes(), pre.options()) : torch::Tensor();
  auto glk = need_lk ? torch::empty(pre[0].sizes(), pre.options()) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "neuron_backward", [&] {
    backward_dispatch<scalar_t>(integrate_first, soft, static_cast<int>(code), gs.data_ptr<scalar_t>(),
                                pre.data_ptr<scalar_t>(), thr.data_ptr<scalar_t>(), leak.data_ptr<scalar_t>(),
                                thr.numel(), inner, steps, n, static_cast<scalar_t>(p1), static_cast<scalar_t>(p2),
                                need_th, need_lk, gin.data_ptr<scalar_t>(),
                                need_th ? gth.data_ptr<scalar_t>() : nullptr,
                                need_lk ? glk.data_ptr<scalar_t>() : nullptr);
  });
  return {gin, gth, glk};
}
