"""The search space of ``tune.space``: Optuna distributions, suggestions, and trial configs.

A trial's configuration is params.yaml with ``tune.overrides`` and the suggested values written
in at their dotted keys, validated like params.yaml itself: a trial is an ordinary ISIM run.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from isim.config import Config, ConfigError, DistCfg, from_dict, overridden


def distribution(d: DistCfg) -> BaseDistribution:
    if d.type == "categorical":
        return CategoricalDistribution(d.choices)
    assert d.low is not None and d.high is not None
    if d.type == "int":
        return IntDistribution(int(d.low), int(d.high), step=int(d.step or 1))
    return FloatDistribution(d.low, d.high, log=d.type == "log_float", step=d.step)


def suggest(trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
    """One value per key of ``tune.space`` (a rerun trial gets its fixed values back)."""
    out: dict[str, Any] = {}
    for key, d in cfg.tune.space.items():
        dist = distribution(d)
        if isinstance(dist, CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            out[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step)
        else:
            assert isinstance(dist, FloatDistribution)
            out[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return out


def trial_config(cfg: Config, values: dict[str, Any]) -> Config:
    """params.yaml + ``tune.overrides`` + ``values``; the error names the dotted key."""
    try:
        return from_dict(overridden(cfg.to_dict(), {**cfg.tune.overrides, **values}))
    except ConfigError as e:
        keys = ", ".join(f"{k}={v!r}" for k, v in {**cfg.tune.overrides, **values}.items())
        raise ConfigError(f"trial settings {keys}: {e}") from None


def check(cfg: Config) -> None:
    """Before any trial: every override and both ends (or every choice) of every range must
    give a valid configuration, so a bad space fails now, naming its key, not in trial 7."""
    for key, d in cfg.tune.space.items():
        ends = d.choices if d.type == "categorical" else [d.low, d.high]
        for v in ends:
            value = int(v) if d.type == "int" and v is not None else v
            try:
                trial_config(cfg, {key: value})
            except ConfigError as e:
                raise ConfigError(f"tune.space.{key}: {value!r} is not a valid value ({e})") from None


__all__ = ["distribution", "suggest", "trial_config", "check"]
