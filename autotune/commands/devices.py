"""List the device profiles and whether each is usable here (and why not)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also show what each backend measures and makes real"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def profile_rows() -> list[dict[str, Any]]:
    """One row per device profile: name, backend, usable, why not, capability warnings."""
    from autotune.devices import BACKENDS
    from autotune.errors import UserError
    from autotune.knobs import LAYER_KNOBS
    from autotune.space import available_profiles, load_profile

    rows = []
    for name in available_profiles():
        row: dict[str, Any] = {"name": name, "backend": None, "usable": False, "reason": "", "warnings": []}
        try:
            profile = load_profile(name)
        except UserError as exc:
            row["reason"] = f"profile does not load: {exc}"
            rows.append(row)
            continue
        row.update(backend=profile.backend, description=profile.description, knobs=profile.knobs)
        cls = BACKENDS.get(profile.backend)
        if cls is None:
            row["reason"] = f"unknown backend {profile.backend!r} (known: {', '.join(BACKENDS)})"
            rows.append(row)
            continue
        try:
            ok, why = cls.available()
        except Exception as exc:  # noqa: BLE001 - a probe must never take the listing down
            ok, why = False, f"probe failed: {type(exc).__name__}: {exc}"
        row.update(usable=ok, reason=why, capabilities=cls.capabilities.to_dict())
        caps = cls.capabilities
        for knob in LAYER_KNOBS.values():
            real = knob.real_on(caps)
            if real is None:  # pays on every backend
                continue
            extra = [v for v in profile.knobs.get(knob.name, []) if v not in real]
            if extra and profile.backend != "remote":
                row["warnings"].append(
                    f"{knob.name} {extra} listed, but {profile.backend} does not make them real"
                )
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    rows = profile_rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max([len(r["name"]) for r in rows] + [7])
    bwidth = max([len(str(r["backend"])) for r in rows] + [7])
    print(f"{'profile':<{width}}  {'backend':<{bwidth}}  usable  details")
    for r in rows:
        usable = "yes" if r["usable"] else "no"
        details = r.get("description", "") if r["usable"] else r["reason"]
        print(f"{r['name']:<{width}}  {r['backend'] or '?':<{bwidth}}  {usable:<6}  {details}")
        pad = " " * (width + bwidth + 12)
        for warning in r["warnings"]:
            print(f"{pad}warning: {warning}")
        if args.verbose and "capabilities" in r:
            caps = r["capabilities"]
            print(f"{pad}measures: {caps['measures']}")
            print(
                f"{pad}real: bits {caps['bits']}, sparsity {caps['sparsity']}, precision {caps['precisions']}"
            )
    usable = sum(r["usable"] for r in rows)
    print(f"\n{usable} of {len(rows)} profiles usable here; pick one with --device NAME")
    return 0
