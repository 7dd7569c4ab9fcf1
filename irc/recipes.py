"""Training recipes: one TOML file per model we ship, typed and checked before anything runs.

A recipe says everything a training run needs: the method and its config, the data and how it
is degraded, steps, batch, optimisers and schedules per loss group, EMA, checkpoints,
validation and export. ``irc train RECIPE.toml --set key=value ...`` loads it with
:func:`load_recipe`: defaults < the file < ``--set`` overrides (dotted keys such as
``data.crop=64`` or ``optimizers.default.lr=2e-4``). Every value is checked against its field's
type with :func:`irc.config.build_config` (so ``--set steps=1.5`` is an error, not a silent
truncation); an unknown key is an error that lists the valid ones; the method's ``config`` table
is checked against the method's own ``Config`` dataclass. The fully resolved recipe (every
default filled in) is written into the run directory as ``resolved_recipe.toml``
(:func:`dumps_toml`), which is itself a valid recipe.

Schema (``recipes/README.md`` has a commented example)::

    method = "name"            # a registered method (irc methods), trainable
    steps = 1000               # optimiser steps in total
    batch = 16                 # images per process per micro-batch
    grad_accum = 1             # micro-batches per optimiser step
    seed = 0
    mixed_precision = "no"     # "no" | "fp16" | "bf16"
    clip_grad = "none"         # max gradient norm per group, or "none"
    log_every = 100
    max_nonfinite = 20         # consecutive NaN/inf steps before the run aborts
    [config]                   # the method's Config fields
    [data]                     # DataSpec
    [ema]                      # EMASpec
    [optimizers.default]       # OptimSpec for every group without its own table
    [optimizers.d]             # e.g. the discriminator of a GAN (inherits from default)
    [checkpoint]               # CkptSpec
    [validation]               # ValSpec, with [validation.options] and [validation.knobs]
    [export]                   # ExportSpec

This module imports no torch: building a recipe only imports the method's class to check its
config (which does import torch, inside :func:`build_recipe`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from irc.config import (
    build_config,
    check_keys,
    config_to_dict,
    field_names,
    parse_set_options,
)
from irc.errors import UsageError

try:  # Python >= 3.11
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

__all__ = [
    "CkptSpec",
    "DataSpec",
    "DegradationSpec",
    "EMASpec",
    "ExportSpec",
    "OptimSpec",
    "Recipe",
    "ValSpec",
    "apply_overrides",
    "build_recipe",
    "dumps_toml",
    "load_recipe",
    "parse_degradation",
    "recipe_to_dict",
]

MixedPrecision = Literal["no", "fp16", "bf16"]


@dataclass(frozen=True)
class DataSpec:
    """Training data: clean crops from folders or named sets, degraded on the device.

    Attributes:
        train: training-set names (``train400``, ``t91``, ``bsd200``, ``div2k-crops``, see
            ``irc.data.registry.TRAINING_SETS``) or folders / image files. Relative paths are
            looked up in the current directory, then beside the recipe file.
        root: data root for the named sets (default: ``$IRC_DATA_ROOT``, else the cache).
        crop: edge of the square training crops, in pixels.
        grey: train on one luma channel instead of RGB.
        augment: random flips and 90-degree rotations.
        repeat: virtual copies of the file list per epoch (small sets, long epochs).
        degradation: how the input is made from the clean crop, on the device (see
            :func:`parse_degradation`): ``none``, ``noise:25``, ``noise:15-50``, ``jpeg:10``,
            ``jpeg:30-95``, ``bicubic:4``, ``mixture:mio7``, ``mixture:three``, ``mixture:photo``,
            ``realesrgan``.
        workers: DataLoader worker processes per training process (0 = load in the main one).
        cache: keep decoded images in memory (each worker holds its own copy).
        pairs: real degraded/clean pairs added to the stream, each ``[task, pair_set]`` for a named
            set under the data root (``polyu-train``, see ``irc.data.registry.PAIR_SETS``),
            ``[task, lq_folder, gt_folder]`` or ``[task, lq_folder, gt_folder, pairing]`` (e.g. ``["rain", "Rain100L/train/rainy",
            "Rain100L/train/norain", "rain"]``): files pair by name (``pairing``: ``stem``, the
            default, ``rain`` or ``reside``, see ``irc.data.registry.PAIRING_RULES``), crops are
            aligned, the input is used as is (no synthetic degradation) and the sample carries
            the ``task`` label (use the mixture's names, ``rain``, ``haze``, ``dark``, ``blur``,
            to share a task group with synthetic samples). Relative folders are looked up under
            the data root, then the current directory, then beside the recipe.
        pair_repeat: virtual copies of every pair list per epoch (e.g. PromptIR repeats
            Rain100L 120 times), so that small real sets weigh against the clean images.
        task_probs: ``mixture:`` degradations only: the share of each of the mixture's tasks,
            in its order (``photo``: clean, noise, jpeg, blur, sr; normalised); empty for the
            mixture's own shares.
        strong_jpeg: ``mixture:photo`` only: the fraction of its ``jpeg`` samples compressed at
            quality 10-30 instead of 10-95 (0 by default; the photo model's second stage).
        grey_prob: ``mixture:photo`` only: the fraction of samples made grey (luma replicated to
            RGB) before they are degraded; unset for the mixture's own 0.1. Grey photos (the
            cameraman, classic5) carry luma-only JPEG blocks and texture; the photo model's third
            stage raises it.
    """

    train: tuple[str, ...] = ()
    pairs: tuple[tuple[str, ...], ...] = ()
    pair_repeat: int = 1
    root: str | None = None
    crop: int = 64
    grey: bool = False
    augment: bool = True
    repeat: int = 1
    degradation: str = "none"
    workers: int = 0
    cache: bool = False
    task_probs: tuple[float, ...] = ()
    strong_jpeg: float = 0.0
    grey_prob: float | None = None

    def mixture_options(self) -> dict[str, Any]:
        """The options that adjust a ``mixture:`` degradation, as
        :func:`irc.operators.presets.training_degradation` takes them."""
        return {"task_probs": self.task_probs, "strong_jpeg": self.strong_jpeg, "grey_prob": self.grey_prob}


@dataclass(frozen=True)
class OptimSpec:
    """Optimiser and learning-rate schedule of one loss group.

    Attributes:
        name: ``adam`` or ``adamw`` (decoupled weight decay).
        lr: peak learning rate.
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: L2 (adam) or decoupled (adamw) weight decay.
        schedule: ``constant``, ``cosine`` (from ``lr`` to ``min_lr`` over the steps after
            warm-up) or ``multistep`` (times ``gamma`` at each of ``milestones``).
        warmup: linear warm-up steps from ``lr / warmup`` to ``lr``.
        min_lr: floor of the cosine schedule.
        milestones: steps at which ``multistep`` multiplies the rate by ``gamma``.
        gamma: ``multistep`` factor.
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "multistep"] = "constant"
    warmup: int = 0
    min_lr: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5


@dataclass(frozen=True)
class EMASpec:
    """Exponential moving average of the weights (the released weights are the EMA's).

    Attributes:
        decay: ``shadow = decay * shadow + (1 - decay) * weights``; ``0`` turns EMA off.
        every: update every this many optimiser steps.
        start: until this step the shadow simply copies the weights (no averaging of the
            random initialisation).
    """

    decay: float = 0.999
    every: int = 1
    start: int = 0


@dataclass(frozen=True)
class CkptSpec:
    """Training checkpoints (safetensors + JSON with checksums, :mod:`irc.train.checkpoints`) in ``RUN_DIR/checkpoints``.

    Attributes:
        every: save every this many steps (a final one is always saved).
        keep: keep this many most recent checkpoints (``0`` keeps all).
    """

    every: int = 1000
    keep: int = 3


@dataclass(frozen=True)
class ValSpec:
    """Validation through the ``irc eval`` engine (PSNR / SSIM under the dataset's protocol).

    Attributes:
        dataset: a benchmark name (``irc eval --help``), or ``none`` for no validation.
        every: validate every this many steps (and after the last step).
        limit: only the first N images.
        options: ``open_benchmark`` options: ``scale``, ``noise``, ``quality``, ``kernel``,
            ``task``, ``seed``, ``root``.
        knobs: method options for ``restore`` (as ``irc eval -O key=value``).
    """

    dataset: str | None = None
    every: int = 1000
    limit: int | None = None
    options: dict = field(default_factory=dict)
    knobs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExportSpec:
    """Release weights written at the end of training (``--export`` overrides ``path``).

    Attributes:
        name: manifest name of the weights (default: the recipe file's stem).
        path: ``.safetensors`` file to write after training, or ``none``.
    """

    name: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class _TopLevel:
    """The plain (non-table) fields of :class:`Recipe`, built with the same type checks."""

    method: str
    steps: int = 1000
    batch: int = 16
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: MixedPrecision = "no"
    clip_grad: float | None = None
    log_every: int = 100
    max_nonfinite: int = 20
    description: str = ""


@dataclass(frozen=True)
class Recipe(_TopLevel):
    """A resolved training recipe; see the module docstring for the TOML layout.

    The plain values come from :class:`_TopLevel` (one place for their types and defaults); the
    tables are added here.
    """

    config: dict = field(default_factory=dict)
    data: DataSpec = DataSpec()
    ema: EMASpec = EMASpec()
    optimizers: dict = field(default_factory=lambda: {"default": OptimSpec()})
    checkpoint: CkptSpec = CkptSpec()
    validation: ValSpec = ValSpec()
    export: ExportSpec = ExportSpec()

    def optimizer(self, group: str) -> OptimSpec:
        """The optimiser spec of loss group ``group`` (its own table, else ``default``)."""
        return self.optimizers.get(group, self.optimizers["default"])


_SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "ema": EMASpec,
    "checkpoint": CkptSpec,
    "validation": ValSpec,
    "export": ExportSpec,
}
# Tables whose keys are free (checked elsewhere or passed through): the method's config, and
# the validation's benchmark options and method knobs.
_FREE_TABLES = {("config",), ("validation", "options"), ("validation", "knobs")}


# --------------------------------------------------------------------------------------------
# degradation specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DegradationSpec:
    """A parsed ``data.degradation`` string.

    Attributes:
        kind: ``none``, ``noise``, ``jpeg``, ``bicubic``, ``mixture``, ``task`` or ``realesrgan``.
        low, high: the range of ``noise`` (sigma, 0-255) or ``jpeg`` (quality); equal for a
            fixed value. ``bicubic`` keeps its factor in ``low``.
        name: the mixture's name (``mio7``, ``three`` or ``photo``) or the single task's
            (``haze``, ``shadow``, ... see :data:`SINGLE_TASKS`).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    name: str | None = None


MIXTURES = ("mio7", "three", "photo")
#: ``task:NAME``: one task on every sample, MiOIR's ranges (:mod:`irc.operators.mixtures`) or
#: irc's shadow generator (:mod:`irc.operators.shadow`).
SINGLE_TASKS = ("sr", "blur", "noise", "jpeg", "rain", "haze", "dark", "shadow")
DEGRADATIONS = ("none", "noise:S|A-B", "jpeg:Q|A-B", "bicubic:S", "mixture:mio7|three|photo", f"task:{'|'.join(SINGLE_TASKS)}", "realesrgan")
_RANGE_RE = re.compile(r"^\s*([0-9.]+)\s*(?:-\s*([0-9.]+)\s*)?$")


def parse_degradation(text: str) -> DegradationSpec:
    """Parse ``data.degradation`` (see :class:`DataSpec`); errors name the accepted forms."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.strip().lower()
    valid = f"expected one of {', '.join(DEGRADATIONS)}"
    if kind in ("none", "realesrgan"):
        if arg:
            raise UsageError(f"data.degradation {text!r}: {kind} takes no argument; {valid}")
        return DegradationSpec(kind)
    if kind == "mixture":
        if arg not in MIXTURES:
            raise UsageError(f"data.degradation {text!r}: unknown mixture; expected mixture:{' or mixture:'.join(MIXTURES)}")
        return DegradationSpec(kind, name=arg)
    if kind == "task":
        if arg not in SINGLE_TASKS:
            raise UsageError(f"data.degradation {text!r}: unknown task; expected task:{' or task:'.join(SINGLE_TASKS)}")
        return DegradationSpec(kind, name=arg)
    if kind in ("noise", "jpeg", "bicubic"):
        match = _RANGE_RE.match(arg)
        if match is None:
            raise UsageError(f"data.degradation {text!r}: expected {kind}:VALUE" + ("" if kind == "bicubic" else f" or {kind}:LOW-HIGH"))
        low = float(match.group(1))
        high = float(match.group(2)) if match.group(2) else low
        if high < low or not math.isfinite(high):
            raise UsageError(f"data.degradation {text!r}: the range must go from low to high")
        if kind == "jpeg" and not (1 <= low and high <= 100 and low.is_integer() and high.is_integer()):
            raise UsageError(f"data.degradation {text!r}: JPEG quality is a whole number 1-100")
        if kind == "bicubic" and (high != low or not low.is_integer() or low < 2):
            raise UsageError(f"data.degradation {text!r}: bicubic takes one whole factor >= 2")
        return DegradationSpec(kind, low, high)
    raise UsageError(f"data.degradation {text!r}: {valid}")


# --------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------


def _literal(text: str) -> Any:
    """A ``--set`` value for a free table: a TOML literal when it parses as one, else the text."""
    try:
        return _toml.loads(f"v = {text}")["v"]
    except _toml.TOMLDecodeError:
        return text


def _valid_keys(path: tuple[str, ...]) -> list[str] | None:
    """Valid keys of the table at ``path``, or ``None`` when the table's keys are free."""
    if not path:
        return field_names(Recipe)
    if path in _FREE_TABLES:
        return None
    if path == ("optimizers",):
        return None  # group names are checked against the method once it is built
    if len(path) == 2 and path[0] == "optimizers":
        return field_names(OptimSpec)
    if len(path) == 1 and path[0] in _SECTIONS:
        return field_names(_SECTIONS[path[0]])
    return []


def _table_name(path: tuple[str, ...]) -> str:
    return "top level" if not path else f"[{'.'.join(path)}]"


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, str] | list[str] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``--set`` overrides applied (values still text).

    Args:
        raw: the recipe as parsed from TOML.
        overrides: ``{"data.crop": "64"}`` or ``["data.crop=64", ...]``.

    Raises:
        UsageError: a key that no table of the schema has (listing the valid ones), or a dotted
            path through a plain value.
    """
    if isinstance(overrides, list):
        overrides = parse_set_options(overrides)
    result = json.loads(json.dumps(raw, default=list))
    for key, value in (overrides or {}).items():
        parts = tuple(p.strip() for p in key.split("."))
        if not all(parts):
            raise UsageError(f"--set {key}={value}: empty part in the key")
        table = result
        for depth, part in enumerate(parts[:-1]):
            path = parts[:depth]
            valid = _valid_keys(path)
            if valid is not None and part not in valid:
                raise UsageError(f"--set {key}: unknown key {part!r} in the {_table_name(path)} of the recipe; valid: {', '.join(valid)}")
            child_path = parts[: depth + 1]
            if _valid_keys(child_path) == [] and child_path not in _FREE_TABLES:
                raise UsageError(f"--set {key}: {'.'.join(child_path)} is a value, not a table")
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UsageError(f"--set {key}: {'.'.join(child_path)} is a value, not a table")
            table = nxt
        path, last = parts[:-1], parts[-1]
        valid = _valid_keys(path)
        if valid is not None and last not in valid:
            raise UsageError(f"--set {key}: unknown key {last!r} in the {_table_name(path)} of the recipe; valid: {', '.join(valid)}")
        if path in _FREE_TABLES and path != ("config",):
            table[last] = _literal(value)
        else:
            table[last] = value
    return result


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise UsageError(f"recipe [{name}] must be a table, got {raw!r}")
    try:
        return build_config(cls, raw, what=f"key in the [{name}] table of the recipe")
    except UsageError as err:
        text = str(err)
        raise UsageError(text if text.startswith("unknown") else f"recipe [{name}] {text}") from None


def _optimizers(raw: Any) -> dict[str, OptimSpec]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise UsageError("recipe [optimizers] must hold one table per loss group, e.g. [optimizers.default]")
    default_raw = dict(raw.get("default") or {})
    result = {"default": _section(OptimSpec, default_raw, "optimizers.default")}
    for group, table in raw.items():
        if group == "default":
            continue
        check_keys(table, field_names(OptimSpec), f"key in the [optimizers.{group}] table of the recipe")
        result[group] = _section(OptimSpec, {**default_raw, **table}, f"optimizers.{group}")
    return result


def _find_relative(path: Path, folders: tuple[Path | None, ...]) -> Path | None:
    """``folder / path`` resolved, for the first of ``folders`` where it exists (``None``: nowhere)."""
    for folder in folders:
        if folder is not None and (folder / path).exists():
            return (folder / path).resolve()
    return None


def _resolve_pair_paths(pairs: tuple[tuple[str, ...], ...], base: Path | None, root: str | None) -> tuple[tuple[str, ...], ...]:
    """Relative ``data.pairs`` folders: under the data root, else the current directory, else
    beside the recipe (the first that exists; left as given when none does, for a clear error later)."""
    from irc.data import data_root

    def resolve(entry: str) -> str:
        if not entry.strip():
            return entry  # rejected by the range checks; Path("") would be "."
        path = Path(entry).expanduser()
        if path.is_absolute():
            return str(path)
        found = _find_relative(path, (data_root(root), Path.cwd(), base))
        return entry if found is None else str(found)

    return tuple((e[0].strip(), *(resolve(f) for f in e[1:3]), *e[3:]) if len(e) >= 3 else tuple(e) for e in pairs)


def _resolve_train_paths(entries: tuple[str, ...], base: Path | None) -> tuple[str, ...]:
    """Named training sets stay names; existing relative paths become absolute."""
    from irc.data.registry import TRAINING_SETS

    resolved = []
    for entry in entries:
        key = entry.strip().lower().replace("_", "-")
        if key in TRAINING_SETS:
            resolved.append(key)
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = _find_relative(path, (Path.cwd(), base)) or path
        resolved.append(str(path))
    return tuple(resolved)


def _is_local_weights_path(value: str) -> bool:
    """Whether a weights argument in a recipe names a local file (not a manifest name, URL or ``hf:`` id)."""
    from irc.weights import find_entry, load_manifest

    if not value or value.startswith("hf:") or "://" in value or find_entry(value, load_manifest()) is not None:
        return False
    return "/" in value or "\\" in value or Path(value).suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def _resolve_recipe_paths(raw: Mapping[str, Any], base_dir: Path | None) -> Mapping[str, Any]:
    """Weights paths written in a recipe (``config.init_from``, ``export.path``) resolved against
    the recipe's folder, so that a recipe trains the same from any working directory and a
    missing file is reported as a missing file rather than looked up on the hub. ``--set``
    values are applied afterwards and stay relative to the working directory, like every other
    command-line path."""
    if base_dir is None:
        return raw
    out = dict(raw)
    for table, key in (("config", "init_from"), ("export", "path")):
        section = out.get(table)
        if isinstance(section, Mapping) and isinstance(section.get(key), str):
            value = section[key]
            if _is_local_weights_path(value) and not Path(value).expanduser().is_absolute():
                out[table] = {**section, key: str((base_dir / Path(value).expanduser()).resolve())}
    return out


def build_recipe(raw: Mapping[str, Any], overrides: Mapping[str, str] | list[str] | None = None, *, base_dir: Path | None = None) -> Recipe:
    """Build and check a :class:`Recipe` from a parsed TOML dict and ``--set`` overrides.

    Args:
        raw: the recipe's tables (``tomllib.load`` output).
        overrides: dotted ``--set`` overrides (see :func:`apply_overrides`).
        base_dir: the recipe file's folder, where relative ``data.train`` paths are also looked up.

    Raises:
        UsageError: unknown keys, values of the wrong type, an unknown or untrainable method, a
            config that does not fit the method, an invalid degradation or out-of-range numbers.
    """
    from irc.methods import get_method

    raw = apply_overrides(_resolve_recipe_paths(raw, base_dir), overrides)
    check_keys(raw, field_names(Recipe), "key at the top level of the recipe")
    if "method" not in raw:
        raise UsageError("the recipe names no method (method = \"...\")")
    top = {k: v for k, v in raw.items() if k not in _SECTIONS and k not in ("config", "optimizers")}
    try:
        plain = build_config(_TopLevel, top, what="key at the top level of the recipe")
    except UsageError as err:
        raise UsageError(f"recipe: {err}") from None
    cls = get_method(plain.method)
    if not getattr(cls, "trainable", False):
        raise UsageError(f"method {plain.method!r} is not trainable")
    config_raw = raw.get("config") or {}
    if not isinstance(config_raw, Mapping):
        raise UsageError("recipe [config] must be a table of the method's config keys")
    config = build_config(cls.Config, config_raw, what=f"config key of {plain.method}")
    sections = {name: _section(cls_, raw.get(name), name) for name, cls_ in _SECTIONS.items()}
    data = sections["data"]
    data = dataclasses.replace(data, train=_resolve_train_paths(data.train, base_dir), pairs=_resolve_pair_paths(data.pairs, base_dir, data.root))
    sections["data"] = data
    validation = sections["validation"]
    if validation.dataset is not None and validation.dataset.lower() == "none":
        sections["validation"] = validation = dataclasses.replace(validation, dataset=None)
    recipe = Recipe(
        config=config_to_dict(config),
        optimizers=_optimizers(raw.get("optimizers")),
        **{f.name: getattr(plain, f.name) for f in dataclasses.fields(_TopLevel)},
        **sections,
    )
    _check_ranges(recipe)
    return recipe


def _check_mixture_options(d: DataSpec, spec: DegradationSpec) -> None:
    """``data.task_probs``, ``data.strong_jpeg`` and ``data.grey_prob`` fit the recipe's degradation."""
    if d.task_probs:
        if spec.kind != "mixture":
            raise UsageError(f"recipe data.task_probs needs a mixture: degradation, not {d.degradation!r}")
        from irc.operators.presets import mixture_tasks

        tasks = mixture_tasks(str(spec.name))
        if len(d.task_probs) != len(tasks) or not all(math.isfinite(p) and p >= 0 for p in d.task_probs) or sum(d.task_probs) <= 0:
            raise UsageError(f"recipe data.task_probs needs {len(tasks)} shares >= 0, not all zero, for the tasks {', '.join(tasks)}; got {list(d.task_probs)}")
    for name, value in (("strong_jpeg", d.strong_jpeg or None), ("grey_prob", d.grey_prob)):
        if value is None:
            continue
        if spec.kind != "mixture" or spec.name != "photo":
            raise UsageError(f"recipe data.{name} is for degradation = \"mixture:photo\", not {d.degradation!r}")
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"recipe data.{name} must be in [0, 1], got {value}")


def _check_ranges(recipe: Recipe) -> None:
    def positive(value: float | None, name: str, *, zero: bool = False) -> None:
        if value is not None and (value < 0 or (value == 0 and not zero)):
            raise UsageError(f"recipe {name} must be {'>= 0' if zero else '> 0'}, got {value}")

    for name in ("steps", "batch", "grad_accum", "log_every", "max_nonfinite"):
        positive(getattr(recipe, name), name)
    positive(recipe.seed, "seed", zero=True)
    positive(recipe.clip_grad, "clip_grad")
    d = recipe.data
    positive(d.crop, "data.crop")
    positive(d.repeat, "data.repeat")
    positive(d.workers, "data.workers", zero=True)
    positive(d.pair_repeat, "data.pair_repeat")
    spec = parse_degradation(d.degradation)
    _check_mixture_options(d, spec)
    if d.pairs and spec.kind not in ("none", "noise", "jpeg", "mixture", "task"):
        raise UsageError(
            f"recipe data.pairs need a degradation that keeps the image size and the target "
            f"(none, noise, jpeg, mixture or task), not {d.degradation!r}"
        )
    from irc.data.registry import PAIRING_RULES

    from irc.data.registry import PAIR_SETS

    for entry in d.pairs:
        named = len(entry) == 2 and entry[1].strip().lower() in PAIR_SETS
        if not named and (len(entry) not in (3, 4) or not all(part.strip() for part in entry)):
            raise UsageError(
                f"recipe data.pairs entry {list(entry)} needs a task and a named pair set ({', '.join(PAIR_SETS)}), or "
                f"a task, a degraded folder, a clean folder and optionally a pairing rule, "
                f"e.g. --set 'data.pairs=[[\"rain\", \"rainy\", \"norain\", \"rain\"]]'"
            )
        if len(entry) == 4 and entry[3] not in PAIRING_RULES:
            raise UsageError(f"recipe data.pairs pairing {entry[3]!r} is not one of {', '.join(PAIRING_RULES)}")
    if d.degradation.startswith("bicubic"):
        factor = int(parse_degradation(d.degradation).low)
        if d.crop % factor:
            raise UsageError(f"recipe data.crop {d.crop} must be a multiple of the bicubic factor {factor}")
    if not 0.0 <= recipe.ema.decay < 1.0:
        raise UsageError(f"recipe ema.decay must be in [0, 1), got {recipe.ema.decay}")
    positive(recipe.ema.every, "ema.every")
    positive(recipe.ema.start, "ema.start", zero=True)
    positive(recipe.checkpoint.every, "checkpoint.every")
    positive(recipe.checkpoint.keep, "checkpoint.keep", zero=True)
    positive(recipe.validation.every, "validation.every")
    positive(recipe.validation.limit, "validation.limit")
    for group, spec in recipe.optimizers.items():
        where = f"optimizers.{group}"
        positive(spec.lr, f"{where}.lr", zero=True)
        positive(spec.warmup, f"{where}.warmup", zero=True)
        positive(spec.min_lr, f"{where}.min_lr", zero=True)
        positive(spec.weight_decay, f"{where}.weight_decay", zero=True)
        if not all(0.0 <= b < 1.0 for b in spec.betas):
            raise UsageError(f"recipe {where}.betas must be in [0, 1), got {spec.betas}")
        if list(spec.milestones) != sorted(spec.milestones):
            raise UsageError(f"recipe {where}.milestones must be increasing, got {spec.milestones}")
    if recipe.export.path is not None and not recipe.export.path.endswith(".safetensors"):
        raise UsageError(f"recipe export.path must end in .safetensors, got {recipe.export.path!r}")


def load_recipe(path: str | Path, overrides: Mapping[str, str] | list[str] | None = None) -> Recipe:
    """Read a TOML recipe, apply ``--set`` overrides and check everything.

    Raises:
        UsageError: a missing or unreadable file, invalid TOML (with the parser's position), or
            anything :func:`build_recipe` rejects.
    """
    path = Path(path)
    if path.suffix.lower() != ".toml":
        raise UsageError(f"{path}: recipes are TOML files (.toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"recipe not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read recipe {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        raw = _toml.loads(text)
    except _toml.TOMLDecodeError as err:
        raise UsageError(f"{path}: invalid TOML: {err}") from None
    return build_recipe(raw, overrides, base_dir=path.resolve().parent)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain JSON-able values (tuples become lists); round-trips through TOML."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if value is None:
        return '"none"'  # TOML has no null; the "none" string reads back as None (irc.config.coerce)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: Mapping[str, Any], *, header: str = "") -> str:
    """Serialise nested dicts of plain values as TOML (tables for nested dicts).

    ``None`` is written as the string ``"none"``, which typed recipe fields read back as
    ``None``. Enough for recipes; not a general TOML writer.
    """
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(d: Mapping[str, Any], path: tuple[str, ...]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in d.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_key(str(k))} = {_value(v)}")
        for k, v in tables:
            table(v, (*path, str(k)))

    table(data, ())
    return "\n".join(lines) + "\n"
