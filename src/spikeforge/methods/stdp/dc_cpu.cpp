// Diehl & Cook network, one presentation, for the CPU: the excitatory and inhibitory layers of every image of a batch
// simulated step by step from the resting state, given the input conductance (or current) increments I [T, B, N].
// Images are independent during a presentation, so the work is split over images across threads; inside an image the
// loop runs over time, then over neurons. Arithmetic follows DiehlCook.present's PyTorch loop op for op
// (spikeforge/stdp/network.py), which is the reference and the fallback when no compiler is available.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// p: conductance(0/1), v_rest_e, v_reset_e, a_e, d_ge, d_gi, k_ge, k_gi, e_exc, e_inh_e, ref_e, d_m_e,
//    v_rest_i, v_reset_i, v_thresh_i, a_i, ref_i, d_m_i, w_ei, w_ie, theta_plus, learn(0/1)
torch::Tensor dc_present(torch::Tensor I, torch::Tensor thr, std::vector<double> p) {
  TORCH_CHECK(I.dim() == 3 && I.scalar_type() == torch::kFloat32 && I.is_contiguous(), "I must be float [T,B,N]");
  TORCH_CHECK(thr.dim() == 2 && thr.scalar_type() == torch::kFloat32 && thr.is_contiguous(), "thr must be float [B,N]");
  TORCH_CHECK(p.size() == 22, "dc_present expects 22 parameters");
  const int64_t T = I.size(0), B = I.size(1), N = I.size(2);
  auto out = torch::zeros({T, B, N}, torch::kUInt8);
  const float* Ip = I.data_ptr<float>();
  float* thp = thr.data_ptr<float>();
  uint8_t* op = out.data_ptr<uint8_t>();
  const bool cond = p[0] != 0.0;
  const float v_rest_e = p[1], v_reset_e = p[2], a_e = p[3], d_ge = p[4], d_gi = p[5], k_ge = p[6], k_gi = p[7];
  const float e_exc = p[8], e_inh_e = p[9], ref_e = p[10], d_m_e = p[11];
  const float v_rest_i = p[12], v_reset_i = p[13], v_thresh_i = p[14], a_i = p[15], ref_i = p[16], d_m_i = p[17];
  const float w_ei = p[18], w_ie = p[19], theta_plus = p[20];
  const bool learn = p[21] != 0.0;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> v(N), ge(N), gi(N), ref(N), vi(N), gei(N), refi(N), sfi(N), th(N);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t n = 0; n < N; ++n) {
        v[n] = v_rest_e; ge[n] = 0.f; gi[n] = 0.f; ref[n] = 0.f;
        vi[n] = v_rest_i; gei[n] = 0.f; refi[n] = 0.f; sfi[n] = 0.f; th[n] = thp[b * N + n];
      }
      float tot_i = 0.f;  // inhibitory spikes of the previous step
      for (int64_t t = 0; t < T; ++t) {
        const float* It = Ip + (t * B + b) * N;
        uint8_t* ot = op + (t * B + b) * N;
        float new_tot = 0.f;
        for (int64_t n = 0; n < N; ++n) {
          const float inh = (tot_i - sfi[n]) * w_ie;
          const bool active = ref[n] <= 0.f;
          float vn = v[n];
          if (cond) {
            ge[n] = ge[n] * d_ge + It[n];
            gi[n] = gi[n] * d_gi + inh;
            // exponential Euler: exact for conductances held over the step
            const float G = (ge[n] * k_ge + gi[n] * k_gi) + 1.f;
            const float vinf = ((ge[n] * (k_ge * e_exc) + gi[n] * (k_gi * e_inh_e)) + v_rest_e) / G;
            const float f = std::exp(-a_e * G);
            if (active) vn = vinf + (vn - vinf) * f;
          } else {
            vn = (vn - v_rest_e) * d_m_e + v_rest_e;
            vn = vn + (It[n] - inh) * (active ? 1.f : 0.f);
          }
          const bool spk = vn > th[n];
          if (spk) vn = v_reset_e;
          v[n] = vn;
          ref[n] = spk ? ref_e : ref[n] - 1.f;
          const float sf = spk ? 1.f : 0.f;
          ot[n] = spk ? 1 : 0;
          if (learn && spk) th[n] += theta_plus;
          // inhibitory partner
          const bool active_i = refi[n] <= 0.f;
          float vin = vi[n];
          if (cond) {
            gei[n] = gei[n] * d_ge + sf * w_ei;
            const float G = gei[n] * k_ge + 1.f;
            const float vinf = (gei[n] * (k_ge * e_exc) + v_rest_i) / G;
            const float f = std::exp(-a_i * G);
            if (active_i) vin = vinf + (vin - vinf) * f;
          } else {
            vin = (vin - v_rest_i) * d_m_i + v_rest_i;
            vin = vin + sf * (active_i ? 1.f : 0.f) * w_ei;
          }
          const bool spi = vin > v_thresh_i;
          if (spi) vin = v_reset_i;
          vi[n] = vin;
          refi[n] = spi ? ref_i : refi[n] - 1.f;
          sfi[n] = spi ? 1.f : 0.f;
          new_tot += sfi[n];
        }
        tot_i = new_tot;
      }
      for (int64_t n = 0; n < N; ++n) thp[b * N + n] = th[n];
    }
  });
  return out;
}
