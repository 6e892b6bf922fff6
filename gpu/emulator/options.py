"""Emulator settings: how launches run and which re-run checks they get.

    GPU_EMULATOR_MODE=auto|simple|fiber     auto (default): simple, re-run with fibers when a
                                            kernel reaches a barrier or warp shuffle
    GPU_EMULATOR_CHECKS=order,one_block     re-run every launch and compare (also: all, none)
    GPU_EMULATOR_SANITIZE=1                 build kernels with -fsanitize=address,undefined
                                            (the process needs LD_PRELOAD of libasan, see build.py)
In code: `with emulator.mode("fiber"):` and `with emulator.checks("order", "one_block"):`.
"""
import contextlib
import os

MODES = ("auto", "simple", "fiber")
CHECKS = ("order", "one_block")


def _parse_checks(text):
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    names = list(CHECKS) if names == ["all"] else names
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"GPU_EMULATOR_CHECKS: unknown checks {unknown}; choose from {CHECKS}, "
                         f"all or none")
    return tuple(names)


def _parse_mode(name):
    if name not in MODES:
        raise ValueError(f"emulator mode must be one of {MODES}, got {name!r}")
    return name


current = {
    "mode": _parse_mode(os.environ.get("GPU_EMULATOR_MODE", "auto")),
    "checks": _parse_checks(os.environ.get("GPU_EMULATOR_CHECKS", "")),
    "sanitize": os.environ.get("GPU_EMULATOR_SANITIZE", "0") not in ("", "0"),
}


@contextlib.contextmanager
def _setting(key, value):
    previous, current[key] = current[key], value
    try:
        yield
    finally:
        current[key] = previous


def mode(name):
    """Context manager: run launches in mode `name` ("auto", "simple" or "fiber")."""
    return _setting("mode", _parse_mode(name))


def checks(*names):
    """Context manager: re-run every launch with the named checks ("order", "one_block")."""
    return _setting("checks", _parse_checks(",".join(names)))
