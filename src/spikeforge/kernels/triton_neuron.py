"""Fused multi-step IF/LIF neuron as Triton kernels (forward and hand-derived BPTT backward); used automatically on
CUDA.

The equations are those of :mod:`spikeforge.neuron.functional`; the arithmetic mirrors ``neuron_cpu.cpp`` op for op
(FMA contraction off, so the spikes are bit-identical to the PyTorch reference). Symbols: input current ``I[t]``,
threshold ``V_th``, multiplicative leak ``lambda``, membrane ``U``, pre-fire potential ``P`` (the membrane the spike
decision looks at), spike ``s = H(P / V_th - 1)`` decided as ``P >= V_th``, surrogate ``g(z, dt)`` with
``z = P / V_th - 1``.

* ``integrate-fire``: ``P[t] = lambda U[t-1] + I[t]``; ``s[t] = P[t] >= V_th``; ``U[t] = P[t] - V_th s[t]`` (soft) or
  ``P[t] (1 - s[t])`` (hard).
* ``fire-integrate``: ``P[t] = U[t-1]``; ``s[t] = P[t] >= V_th``; ``U[t] = lambda U[t-1] + I[t] - V_th s[t]`` (soft) or
  ``lambda U[t-1] (1 - s[t]) + I[t]`` (hard).

Backward, with ``a[t] = dL/ds[t] g[t] / V_th``: ``q[t] = c[t] q[t+1] + a[t]`` with ``c = lambda`` (soft) or
``lambda (1 - s)`` (hard); ``dL/dI[t] = q[t]`` (integrate-fire) or ``q[t+1]`` (fire-integrate). The kernel also
returns, per element, the sums over time of the threshold and leak gradients; the caller reduces them to the
parameter's shape. STDB's time since the previous spike is computed by a forward sweep over ``P`` that parks ``dt``
in the ``grad_in`` buffer, which the reverse sweep reads just before overwriting it (no extra memory).

Each program owns ``BLOCK`` contiguous elements of one step and loops over ``T`` (each step's load is coalesced);
threshold and leak come per element from the channel ``(i // inner) % C`` (scalar parameters: ``C = 1``).
float16/bfloat16 inputs are computed (and ``P`` is saved) in float32, float64 in float64.

The kernels are exposed as the torch custom ops ``spikeforge::neuron_multistep_fwd`` and
``spikeforge::neuron_multistep_bwd`` (with fake implementations, so they trace under ``torch.compile``).
``FusedMultiStep`` and ``run_steps`` use them for CUDA tensors with ``T >= 2``; the compiled C++ kernel (CPU) and the
pure-PyTorch fused path remain the fallbacks (and at ``T = 1`` the PyTorch path is faster on CUDA, see
``spikeforge.neuron.functional``). Set ``SPIKEFORGE_NO_TRITON=1`` to switch the Triton path off. Triton is not a
dependency of spikeforge (CUDA builds of PyTorch ship it): this module imports it inside a guard, and
:func:`triton_available` is False when it is missing or broken.

Testing without a GPU: with ``TRITON_INTERPRET=1`` set before triton is imported, the ops also run on CPU tensors
(Triton's interpreter). ``FusedMultiStep`` uses them for CPU tensors only on the explicit opt-in
``SPIKEFORGE_TRITON_INTERPRET=1``.
"""

import contextlib
import math
import os
import warnings
from typing import Optional

import torch

_IMPORT_ERROR: Optional[str] = None
try:
    import triton
    import triton.language as tl
except Exception as exc:  # missing, or a broken install
    triton = tl = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

#: Whether the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK = 512
NUM_WARPS = 4
_CHECKED: dict = {}  # device type -> bool (smoke test result)


def _compute_dtypes(currents: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """``(output dtype, compute dtype)``: spikes take the promoted dtype (as the reference); math in float32/64."""
    out = torch.promote_types(currents.dtype, threshold.dtype)
    return out, (torch.float64 if out == torch.float64 else torch.float32)


if triton is not None:
    try:
        @triton.jit
        def _div(x, y):
            # IEEE-rounded division like the C++ (``/`` is approximate in float32; float64 ``/`` is already IEEE)
            if y.dtype == tl.float32:
                r = tl.fdiv(x, y, ieee_rounding=True)
            else:
                r = x / y
            return r

        @triton.jit
        def _surrogate(z, dt, p1, p2, CODE: tl.constexpr):
            if CODE == 0:  # piecewise linear: gamma * max(0, 1 - |z|)
                v = 1.0 - tl.abs(z)
                g = tl.where(v > 0.0, p1 * v, 0.0)
            elif CODE == 1:  # STDB: alpha * exp(-beta * dt)
                g = p1 * tl.exp(-p2 * dt)
            elif CODE == 2:  # fast sigmoid: 1 / (1 + slope |z|)^2
                d = 1.0 + p1 * tl.abs(z)
                g = _div(1.0, d * d)
            elif CODE == 3:  # atan: (alpha / 2) / (1 + (pi/2 alpha z)^2)
                w = 1.5707963267948966 * p1 * z
                g = _div(p1 * 0.5, 1.0 + w * w)
            else:  # exponential: scale * exp(-decay |z|)
                g = p1 * tl.exp(-p2 * tl.abs(z))
            return g

        @triton.jit
        def _block_params(thr_ptr, lk_ptr, n, C, inner, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
            # this program's elements, their mask, and each one's threshold and leak (channel (i // inner) % C)
            offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n
            ch = (offs // inner) % C
            th = tl.load(thr_ptr + ch, mask=mask, other=1.0).to(COMPUTE)
            lam = tl.load(lk_ptr + ch, mask=mask, other=1.0).to(COMPUTE)
            return offs, mask, th, lam

        @triton.jit
        def _forward_kernel(cur_ptr, thr_ptr, lk_ptr, u0_ptr, spk_ptr, pre_ptr, u_out_ptr, n, cur_stride, C, inner,
                            steps, INTEGRATE_FIRST: tl.constexpr, SOFT: tl.constexpr, KEEP_PRE: tl.constexpr,
                            HAS_U0: tl.constexpr, BLOCK: tl.constexpr):
            COMPUTE: tl.constexpr = pre_ptr.dtype.element_ty
            offs, mask, th, lam = _block_params(thr_ptr, lk_ptr, n, C, inner, COMPUTE, BLOCK)
            if HAS_U0:
                u = tl.load(u0_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
            else:
                u = tl.zeros([BLOCK], dtype=COMPUTE)
            cur_p = cur_ptr + offs
            spk_p = spk_ptr + offs
            pre_p = pre_ptr + offs
            for _t in range(steps):
                i = tl.load(cur_p, mask=mask, other=0.0).to(COMPUTE)
                if INTEGRATE_FIRST:
                    lu = lam * u
                    p = lu + i
                    s = (p >= th).to(COMPUTE)
                    if SOFT:
                        u = p - th * s
                    else:
                        u = p * (1.0 - s)
                else:
                    p = u
                    s = (p >= th).to(COMPUTE)
                    lu = lam * u
                    if SOFT:
                        a = lu + i
                        u = a - th * s
                    else:
                        b = lu * (1.0 - s)
                        u = b + i
                tl.store(spk_p, s.to(spk_ptr.dtype.element_ty), mask=mask)
                if KEEP_PRE:
                    tl.store(pre_p, p, mask=mask)
                cur_p += cur_stride
                spk_p += n
                pre_p += n
            tl.store(u_out_ptr + offs, u.to(u_out_ptr.dtype.element_ty), mask=mask)

        @triton.jit
        def _backward_kernel(gs_ptr, pre_ptr, thr_ptr, lk_ptr, prm_ptr, gin_ptr, gth_ptr, glk_ptr, n, C, inner,
                             steps, tail, INTEGRATE_FIRST: tl.constexpr, SOFT: tl.constexpr, CODE: tl.constexpr,
                             NEED_TH: tl.constexpr, NEED_LK: tl.constexpr, BLOCK: tl.constexpr):
            COMPUTE: tl.constexpr = gin_ptr.dtype.element_ty
            offs, mask, th, lam = _block_params(thr_ptr, lk_ptr, n, C, inner, COMPUTE, BLOCK)
            p1 = tl.load(prm_ptr)
            p2 = tl.load(prm_ptr + 1)
            if CODE == 1:  # STDB: dt[t] = t - (last spike before t), parked in grad_in[t] (forward sweep)
                last = tl.full([BLOCK], -999.0, COMPUTE)  # NEVER_SPIKED: dt = t + 999
                tt = tl.zeros([BLOCK], dtype=COMPUTE)
                pre_p = pre_ptr + offs
                gi_p = gin_ptr + offs
                for _t in range(steps):
                    p = tl.load(pre_p, mask=mask, other=0.0)
                    tl.store(gi_p, tt - last, mask=mask)
                    last = tl.where(p >= th, tt, last)
                    tt += 1.0
                    pre_p += n
                    gi_p += n
            q = tl.zeros([BLOCK], dtype=COMPUTE)  # q[t+1]
            acc_th = tl.zeros([BLOCK], dtype=COMPUTE)
            acc_lk = tl.zeros([BLOCK], dtype=COMPUTE)
            pre_p = pre_ptr + tail + offs
            gs_p = gs_ptr + tail + offs
            gi_p = gin_ptr + tail + offs
            for k in range(steps):  # t = steps - 1 - k
                p = tl.load(pre_p, mask=mask, other=0.0)
                s = (p >= th).to(COMPUTE)
                z = _div(p, th) - 1.0
                if CODE == 1:
                    dt = tl.load(gi_p, mask=mask, other=0.0)
                else:
                    dt = z  # unused
                g = _surrogate(z, dt, p1, p2, CODE)
                a = _div(tl.load(gs_p, mask=mask, other=0.0).to(COMPUTE) * g, th)
                qn = q
                if NEED_TH:
                    acc_th -= _div(a * p, th)
                if SOFT:
                    coef = lam
                else:
                    coef = lam * (1.0 - s)
                qt = coef * qn + a
                if INTEGRATE_FIRST:
                    tl.store(gi_p, qt, mask=mask)
                    if k > 0:
                        if SOFT:
                            u_t = p - th * s
                        else:
                            u_t = p * (1.0 - s)
                        if NEED_LK:
                            acc_lk += qn * u_t
                        if NEED_TH:
                            if SOFT:
                                acc_th -= qn * s * lam
                else:
                    tl.store(gi_p, qn, mask=mask)
                    if SOFT:
                        v = p
                    else:
                        v = p * (1.0 - s)
                    if NEED_LK:
                        acc_lk += qn * v
                    if NEED_TH:
                        if SOFT:
                            acc_th -= qn * s
                q = qt
                pre_p -= n
                gs_p -= n
                gi_p -= n
            if NEED_TH:
                tl.store(gth_ptr + offs, acc_th, mask=mask)
            if NEED_LK:
                tl.store(glk_ptr + offs, acc_lk, mask=mask)
    except Exception as exc:  # a broken install can fail at decoration time
        triton = tl = None
        _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


def _check_device(t: torch.Tensor) -> None:
    if t.device.type == "cpu" and not INTERPRET:
        raise RuntimeError("spikeforge Triton neuron kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                           "(set before triton is imported)")


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


def _on(device: torch.device):
    """Launch on the tensors' GPU (Triton launches on the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _forward_impl(currents, threshold, leak, inner, integrate_first, soft, keep_pre, u0=None):
    _check_device(currents)
    steps, step_shape = currents.shape[0], currents.shape[1:]
    n = math.prod(step_shape)
    out_dtype, compute = _compute_dtypes(currents, threshold)
    dev = currents.device
    spikes = torch.empty(currents.shape, dtype=out_dtype, device=dev)
    pre = torch.empty(currents.shape if keep_pre else (0,), dtype=compute, device=dev)
    u_out = torch.empty(step_shape, dtype=out_dtype, device=dev)
    if n == 0:
        return spikes, pre, u_out
    if steps and not currents[0].is_contiguous():
        currents = currents.contiguous()
    cur_stride = currents.stride(0) if steps > 1 else n  # 0 for a current repeated over time (expand)
    u0 = u0.contiguous() if u0 is not None else None
    with _on(dev):
        _forward_kernel[_grid(n)](
            currents, threshold.contiguous(), leak.contiguous(), u_out if u0 is None else u0, spikes, pre, u_out,
            n, cur_stride, threshold.numel(), inner, steps, INTEGRATE_FIRST=integrate_first, SOFT=soft,
            KEEP_PRE=keep_pre, HAS_U0=u0 is not None, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False)
    return spikes, pre, u_out


def _backward_impl(grad_spikes, pre, threshold, leak, inner, integrate_first, soft, code, p1, p2, need_th, need_lk):
    _check_device(pre)
    steps, step_shape = pre.shape[0], pre.shape[1:]
    n = math.prod(step_shape)
    dev, compute = pre.device, pre.dtype
    gin = torch.empty(pre.shape, dtype=compute, device=dev)
    gth = torch.zeros(step_shape if need_th else (0,), dtype=compute, device=dev)
    glk = torch.zeros(step_shape if need_lk else (0,), dtype=compute, device=dev)
    if n == 0 or steps == 0:
        return gin, gth, glk
    prm = torch.tensor([p1, p2], dtype=compute, device=dev)
    with _on(dev):
        _backward_kernel[_grid(n)](
            grad_spikes.contiguous(), pre.contiguous(), threshold.contiguous(), leak.contiguous(), prm, gin,
            gth if need_th else gin, glk if need_lk else gin, n, threshold.numel(), inner, steps, (steps - 1) * n,
            INTEGRATE_FIRST=integrate_first, SOFT=soft, CODE=int(code), NEED_TH=need_th, NEED_LK=need_lk,
            BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False)
    return gin, gth, glk


if triton is not None:
    @torch.library.custom_op("spikeforge::neuron_multistep_fwd", mutates_args=())
    def neuron_multistep_fwd(currents: torch.Tensor, threshold: torch.Tensor, leak: torch.Tensor, inner: int,
                             integrate_first: bool, soft: bool, keep_pre: bool,
                             u0: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward over ``currents [T, ...]``; threshold/leak flat ``[C]``. Returns ``(spikes, P, U[T-1])``.

        ``P`` is in the compute dtype (float32, or float64) and empty unless ``keep_pre``; ``u0`` is the initial
        membrane (zero if None).
        """
        return _forward_impl(currents, threshold, leak, inner, integrate_first, soft, keep_pre, u0)

    @neuron_multistep_fwd.register_fake
    def _(currents, threshold, leak, inner, integrate_first, soft, keep_pre, u0=None):
        out_dtype, compute = _compute_dtypes(currents, threshold)
        return (currents.new_empty(currents.shape, dtype=out_dtype),
                currents.new_empty(currents.shape if keep_pre else (0,), dtype=compute),
                currents.new_empty(currents.shape[1:], dtype=out_dtype))

    @torch.library.custom_op("spikeforge::neuron_multistep_bwd", mutates_args=())
    def neuron_multistep_bwd(grad_spikes: torch.Tensor, pre: torch.Tensor, threshold: torch.Tensor,
                             leak: torch.Tensor, inner: int, integrate_first: bool, soft: bool, code: int, p1: float,
                             p2: float, need_th: bool,
                             need_lk: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BPTT from the saved ``P``: ``(grad_in, per-element threshold grad, per-element leak grad)``.

        The last two have one step's shape (summed over time) or are empty when not needed; all in ``P``'s dtype.
        ``code, p1, p2`` are the surrogate's ``kernel_spec()`` (``code``: an id of ``kernels.SURROGATE_KERNELS``).
        """
        return _backward_impl(grad_spikes, pre, threshold, leak, inner, integrate_first, soft, code, p1, p2,
                              need_th, need_lk)

    @neuron_multistep_bwd.register_fake
    def _(grad_spikes, pre, threshold, leak, inner, integrate_first, soft, code, p1, p2, need_th, need_lk):
        return (pre.new_empty(pre.shape), pre.new_empty(pre.shape[1:] if need_th else (0,)),
                pre.new_empty(pre.shape[1:] if need_lk else (0,)))


def _smoke_test(device: str) -> bool:
    """One tiny launch (compiles a kernel): catches installs where triton imports but cannot build or launch."""
    try:
        x = torch.full((3, 1), 0.625, device=device)
        one = torch.ones(1, device=device)
        spikes, _, _ = torch.ops.spikeforge.neuron_multistep_fwd(x, one, one, 1, True, True, False, None)
        ok = spikes.view(-1).tolist() == [0.0, 1.0, 0.0]
        if not ok:
            warnings.warn("spikeforge: the Triton neuron kernel gave wrong results; using the fallback path",
                          RuntimeWarning, stacklevel=3)
        return ok
    except Exception as exc:
        warnings.warn(f"spikeforge: Triton neuron kernel unavailable on {device} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the fallback path",
                      RuntimeWarning, stacklevel=3)
        return False


def triton_available(device: "torch.device | str | None" = None) -> bool:
    """True if triton imports and the kernels are defined; with ``device``, also whether they run there.

    CUDA devices qualify after a one-time smoke launch; CPU only when the kernels were built for the interpreter
    (``TRITON_INTERPRET=1`` before import).
    """
    if triton is None:
        return False
    if device is None:
        return True
    kind = torch.device(device).type
    if kind not in ("cuda", "cpu") or (kind == "cpu" and not INTERPRET):
        return False
    if kind not in _CHECKED:
        _CHECKED[kind] = _smoke_test(kind)
    return _CHECKED[kind]


def unavailable_reason() -> Optional[str]:
    """Why triton could not be imported (None if it was)."""
    return _IMPORT_ERROR
