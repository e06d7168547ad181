"""Energy per operation: presets from Horowitz ("Computing's energy problem (and what we can do about it)", ISSCC
2014, 45 nm CMOS) and custom costs.

============  =====================  =================  ====================
preset        MAC = mult + add       AC = add           precision
============  =====================  =================  ====================
45nm-fp32     3.7 + 0.9 = 4.6 pJ     0.9 pJ             fp32
45nm-fp16     1.1 + 0.4 = 1.5 pJ     0.4 pJ             fp16
45nm-int32    3.1 + 0.1 = 3.2 pJ     0.1 pJ             int32
45nm-int8     0.2 + 0.03 = 0.23 pJ   0.03 pJ            int8
============  =====================  =================  ====================

fp32 is the setting of the SNN energy comparisons of Rathi & Roy (DIET-SNN, IEEE TNNLS 2021) and Kim & Panda
(BNTT, Frontiers in Neuroscience 2021). ``E_mem`` defaults to 10 pJ, Horowitz's 8 KB SRAM access (quoted for a 64-bit
cache access, so for a 32-bit membrane potential it is an upper estimate). Custom values: an :class:`EnergyCosts`,
a dict ``{"e_mac": J, "e_ac": J[, "e_mem": J]}``, or ``custom:MAC_PJ,AC_PJ[,MEM_PJ]`` in picojoules.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from spikeforge.config import NonNegFloat, config
from spikeforge.errors import ConfigError

__all__ = ["DEFAULT_E_MEM", "PJ", "PRESETS", "EnergyCosts", "get_costs"]

PJ = 1e-12
DEFAULT_E_MEM = 10 * PJ
_MAX_JOULES = 1e-6  # per operation: anything larger is a unit mistake (picojoules passed as joules)


@config
class EnergyCosts:
    """Energy per operation in joules: ``e_mac`` (multiply-accumulate), ``e_ac`` (accumulate), ``e_mem`` (one
    membrane-potential read or write); each ``>= 0`` and at most 1 uJ (a larger value is a unit mistake)."""

    name: str
    e_mac: NonNegFloat
    e_ac: NonNegFloat
    e_mem: NonNegFloat = DEFAULT_E_MEM
    source: str = "custom"

    def __post_init__(self):
        for key in ("e_mac", "e_ac", "e_mem"):
            v = getattr(self, key)
            if v > _MAX_JOULES:
                raise ConfigError(f"energy cost {key}={v!r} J per operation is implausibly large; costs are in "
                                  f"joules (4.6 pJ is 4.6e-12)")

    @classmethod
    def from_pj(cls, mac: float, ac: float, mem: float = 10.0, name: str = "custom", source: str = "custom"):
        """Costs given in picojoules."""
        return cls(name=name, e_mac=float(mac) * PJ, e_ac=float(ac) * PJ, e_mem=float(mem) * PJ, source=source)

    def to_dict(self) -> dict:
        return asdict(self)


_HZ = "Horowitz, ISSCC 2014, 45 nm"
PRESETS: dict[str, EnergyCosts] = {
    "45nm-fp32": EnergyCosts.from_pj(3.7 + 0.9, 0.9, name="45nm-fp32", source=f"{_HZ}: fp32 mult 3.7 pJ, add 0.9 pJ"),
    "45nm-fp16": EnergyCosts.from_pj(1.1 + 0.4, 0.4, name="45nm-fp16", source=f"{_HZ}: fp16 mult 1.1 pJ, add 0.4 pJ"),
    "45nm-int32": EnergyCosts.from_pj(3.1 + 0.1, 0.1, name="45nm-int32",
                                      source=f"{_HZ}: int32 mult 3.1 pJ, add 0.1 pJ"),
    "45nm-int8": EnergyCosts.from_pj(0.2 + 0.03, 0.03, name="45nm-int8",
                                     source=f"{_HZ}: int8 mult 0.2 pJ, add 0.03 pJ"),
}


def _from_dict(preset: dict) -> EnergyCosts:
    unknown = set(preset) - {"e_mac", "e_ac", "e_mem", "name", "source"}
    if unknown or not {"e_mac", "e_ac"} <= set(preset):
        raise ConfigError(f"a custom energy preset needs keys 'e_mac' and 'e_ac' (joules; optional 'e_mem', "
                          f"'name'), got {sorted(preset)}")
    return EnergyCosts(**{"name": "custom", **preset})


def _from_custom_string(preset: str) -> EnergyCosts:
    try:
        vals = [float(v) for v in preset[len("custom:"):].split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (2, 3):
        raise ConfigError(f"bad preset {preset!r}; write custom:MAC_PJ,AC_PJ[,MEM_PJ] in picojoules, "
                          "e.g. custom:4.6,0.9")
    return EnergyCosts.from_pj(*vals, name=preset)


def get_costs(preset: str | dict | EnergyCosts = "45nm-fp32", e_mem: float | None = None) -> EnergyCosts:
    """Resolve a preset name (``45nm-fp32``, ``45nm-fp16``, ``45nm-int32``, ``45nm-int8``), ``custom:MAC,AC[,MEM]``
    (picojoules), a dict ``{"e_mac", "e_ac"[, "e_mem"]}`` (joules) or an :class:`EnergyCosts`; ``e_mem`` (joules)
    overrides the membrane access energy."""
    if isinstance(preset, EnergyCosts):
        costs = preset
    elif isinstance(preset, dict):
        costs = _from_dict(preset)
    elif isinstance(preset, str) and preset.startswith("custom:"):
        costs = _from_custom_string(preset)
    elif isinstance(preset, str) and preset in PRESETS:
        costs = PRESETS[preset]
    else:
        raise ConfigError(f"unknown energy preset {preset!r}; use one of {sorted(PRESETS)} or "
                          "custom:MAC_PJ,AC_PJ (picojoules)")
    if e_mem is not None:
        costs = replace(costs, e_mem=float(e_mem))
    return costs
