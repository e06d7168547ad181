// Fused multi-step IF/LIF neuron for the CPU: forward and hand-derived BPTT backward in one pass over time per
// element (see spikeforge/neuron/functional.py for the equations). Elements are independent, so the work is split
// into blocks of contiguous elements across threads; inside a block the loop runs over time, then over elements
// (vectorizable, cache friendly). Arithmetic mirrors the PyTorch reference op for op (no FMA contraction).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kBlock = 1024;
constexpr double kNever = -1000.0;

template <typename T>
inline T surrogate_grad(int code, T z, T dt, T p1, T p2) {
  switch (code) {
    case 0: {  // piecewise linear: gamma * max(0, 1 - |z|)
      T v = T(1) - std::abs(z);
      return v > T(0) ? p1 * v : T(0);
    }
    case 1:  // STDB: alpha * exp(-beta * dt)
      return p1 * std::exp(-p2 * dt);
    case 2: {  // fast sigmoid: 1 / (1 + slope |z|)^2
      T d = T(1) + p1 * std::abs(z);
      return T(1) / (d * d);
    }
    case 3: {  // atan: (alpha / 2) / (1 + (pi/2 alpha z)^2)
      T w = T(M_PI / 2.0) * p1 * z;
      return (p1 / T(2)) / (T(1) + w * w);
    }
    default:  // exponential: scale * exp(-decay |z|)
      return p1 * std::exp(-p2 * std::abs(z));
  }
}

// Threshold and leak of elements begin..begin+len (channel (i / inner) % C), without a division per element.
template <typename T>
inline void fill_params(const T* thr, const T* lk, int64_t C, int64_t inner, int64_t begin, int64_t len, T* th,
                        T* lam) {
  int64_t c = (begin / inner) % C, r = begin % inner;
  for (int64_t j = 0; j < len; ++j) {
    th[j] = thr[c];
    lam[j] = lk[c];
    if (++r == inner) {
      r = 0;
      if (++c == C) c = 0;
    }
  }
}

// currents: [T, N] with time stride `cur_stride` (0 for a current repeated over time); thr/leak: [C]; element i has
// channel (i / inner) % C.  Writes spikes [T, N] and, if keep_pre, the pre-fire potentials [T, N]; returns U[T-1].
template <typename T>
void forward_impl(const T* cur, int64_t cur_stride, const T* thr, const T* lk, int64_t C, int64_t inner,
                  int64_t steps, int64_t n, bool integrate_first, bool soft, const T* u0, T* spk, T* pre, T* u_out) {
  at::parallel_for(0, n, kBlock, [&](int64_t begin, int64_t end) {
    const int64_t len = end - begin;
    std::vector<T> u(len), th(len), lam(len);
    fill_params(thr, lk, C, inner, begin, len, th.data(), lam.data());
    for (int64_t j = 0; j < len; ++j) u[j] = u0 ? u0[begin + j] : T(0);
    for (int64_t t = 0; t < steps; ++t) {
      const T* I = cur + t * cur_stride + begin;
      T* S = spk + t * n + begin;
      T* P = pre ? pre + t * n + begin : nullptr;
      T* U = u.data();
      const T* TH = th.data();
      const T* LM = lam.data();
      if (integrate_first && soft) {
        for (int64_t j = 0; j < len; ++j) {
          T lu = LM[j] * U[j];
          T p = lu + I[j];
          T s = p >= TH[j] ? T(1) : T(0);
          U[j] = p - TH[j] * s;
          S[j] = s;
          if (P) P[j] = p;
        }
      } else if (integrate_first) {
        for (int64_t j = 0; j < len; ++j) {
          T lu = LM[j] * U[j];
          T p = lu + I[j];
          T s = p >= TH[j] ? T(1) : T(0);
          U[j] = p * (T(1) - s);
          S[j] = s;
          if (P) P[j] = p;
        }
      } else {
        for (int64_t j = 0; j < len; ++j) {
          T p = U[j];
          T s = p >= TH[j] ? T(1) : T(0);
          T lu = LM[j] * U[j];
          if (soft) {
            T a = lu + I[j];
            U[j] = a - TH[j] * s;
          } else {
            T b = lu * (T(1) - s);
            U[j] = b + I[j];
          }
          S[j] = s;
          if (P) P[j] = p;
        }
      }
    }
    for (int64_t j = 0; j < len; ++j) u_out[begin + j] = u[j];
  });
}

// Backward: grad_in [T, N]; per-element sums over time of the threshold and leak gradients (reduced by the caller).
template <typename T>
void backward_impl(const T* gs, const T* pre, const T* thr, const T* lk, int64_t C, int64_t inner, int64_t steps,
                   int64_t n, bool integrate_first, bool soft, int code, T p1, T p2, bool need_th, bool need_lk,
                   T* gin, T* gth, T* glk) {
  const bool stdb = code == 1;
  at::parallel_for(0, n, kBlock, [&](int64_t begin, int64_t end) {
    const int64_t len = end - begin;
    std::vector<T> th(len), lam(len), q(len, T(0)), acc_th(len, T(0)), acc_lk(len, T(0));
    std::vector<T> dt;
    fill_params(thr, lk, C, inner, begin, len, th.data(), lam.data());
    if (stdb) {  // time since the previous spike, for every step (forward sweep)
      dt.assign(steps * len, T(0));
      std::vector<T> last(len, T(kNever));
      for (int64_t t = 0; t < steps; ++t) {
        const T* P = pre + t * n + begin;
        for (int64_t j = 0; j < len; ++j) {
          dt[t * len + j] = T(t) - last[j];
          if (P[j] >= th[j]) last[j] = T(t);
        }
      }
    }
    for (int64_t t = steps - 1; t >= 0; --t) {
      const T* P = pre + t * n + begin;
      const T* G = gs + t * n + begin;
      T* GI = gin + t * n + begin;
      for (int64_t j = 0; j < len; ++j) {
        const T p = P[j];
        const T s = p >= th[j] ? T(1) : T(0);
        const T z = p / th[j] - T(1);
        const T g = surrogate_grad<T>(code, z, stdb ? dt[t * len + j] : T(0), p1, p2);
        const T a = G[j] * g / th[j];
        const T qn = q[j];  // q[t+1]
        if (need_th) acc_th[j] -= a * p / th[j];
        const T coef = soft ? lam[j] : lam[j] * (T(1) - s);
        const T qt = coef * qn + a;
        if (integrate_first) {
          GI[j] = qt;
          if (t < steps - 1) {
            const T u_t = soft ? p - th[j] * s : p * (T(1) - s);
            if (need_lk) acc_lk[j] += qn * u_t;
            if (need_th && soft) acc_th[j] -= qn * s * lam[j];
          }
        } else {
          GI[j] = qn;
          if (need_lk) acc_lk[j] += qn * (soft ? p : p * (T(1) - s));
          if (need_th && soft) acc_th[j] -= qn * s;
        }
        q[j] = qt;
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      if (need_th) gth[begin + j] = acc_th[j];
      if (need_lk) glk[begin + j] = acc_lk[j];
    }
  });
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
    forward_impl<scalar_t>(currents.data_ptr<scalar_t>(), cur_stride, thr.data_ptr<scalar_t>(),
                           leak.data_ptr<scalar_t>(), thr.numel(), inner, steps, n, integrate_first, soft,
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
    backward_impl<scalar_t>(gs.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(), thr.data_ptr<scalar_t>(),
                            leak.data_ptr<scalar_t>(), thr.numel(), inner, steps, n, integrate_first, soft,
                            static_cast<int>(code), static_cast<scalar_t>(p1), static_cast<scalar_t>(p2), need_th,
                            need_lk, gin.data_ptr<scalar_t>(), need_th ? gth.data_ptr<scalar_t>() : nullptr,
                            need_lk ? glk.data_ptr<scalar_t>() : nullptr);
  });
  return {gin, gth, glk};
}
