"""The Method contract every restoration backend implements.

A method is a small object around (at most) one ``torch.nn.Module``:

* ``Config`` — a frozen dataclass with every architectural knob, typed. It is stored in the
  weights' metadata so :meth:`Method.from_weights` rebuilds the exact network, then loads the
  tensors strictly.
* ``knobs`` — the run-time options :meth:`Method.restore` accepts (HYPIR's prompt and fidelity,
  LearnIR's step count and resolution schedule, LoRun's sampling ratio or measurement, TUR's task).
  Unknown knobs are errors that list the valid ones.
* ``tile_spec`` — how the shared :mod:`irc.tiling` function may cut the image. ``"supported"``
  methods are wrapped by the generic tiler; ``"internal"`` methods (HYPIR: VAE /8, UNet, decode x8)
  receive the tile options and call the same shared function on each of their stages.
* :meth:`Method.training_step` returns named loss groups (``{"g": ..., "d": ...}`` for a GAN, one
  group otherwise); the generic training loop owns optimisers, accumulation, EMA and checkpoints.
  Training-only parts (TUR's uncertainty head) live in the network but are only used there.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]``; ``C`` is one of ``input_channels``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from irc.config import build_config, check_keys, coerce, config_to_dict
from irc.errors import UsageError, WeightsError
from irc.tiling import TileSpec, auto_tile_size, run_with_oom_fallback, tiled


@dataclass(frozen=True)
class Knob:
    """A run-time option of :meth:`Method.restore`.

    Attributes:
        name: keyword name (the CLI flag is ``--name`` with ``_`` as ``-``).
        type: annotation used to coerce the value (``float``, ``int``, ``str``, ``Literal``...).
        default: value used when the user gives none.
        help: one line for ``irc methods`` and ``--help``.
    """

    name: str
    type: Any
    default: Any
    help: str


@dataclass(frozen=True)
class EmptyConfig:
    """Config of a method with no architectural choices (the classical baselines)."""


@dataclass(frozen=True)
class TrainBatch:
    """One training batch, already on the method's device.

    Attributes:
        lq: degraded input ``(B, C, H, W)`` in [0, 1] (for measurement methods: the clean image the
            method measures itself, see the method's docs).
        gt: ground truth ``(B, C, H', W')`` in [0, 1].
        task: per-sample task labels (all-in-one training), or ``None``.
    """

    lq: Tensor
    gt: Tensor
    task: tuple[str, ...] | None = None


class Method:
    """Base class of every restoration backend. Subclasses set the class attributes below."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig
    tasks: ClassVar[tuple[str, ...]] = ("restore",)
    knobs: ClassVar[tuple[Knob, ...]] = ()
    tile_spec: ClassVar[TileSpec] = TileSpec()
    input_channels: ClassVar[tuple[int, ...]] = (1, 3)
    needs_weights: ClassVar[bool] = True
    trainable: ClassVar[bool] = True
    extras: ClassVar[tuple[str, ...]] = ()
    # Rough activation memory per input pixel at fp32, used by ``--tile auto``.
    bytes_per_pixel: ClassVar[float] = 4096.0
    # Clamp outputs to [0, 1]; only ``identity`` opts out, so that it returns its input unchanged.
    clamp_output: ClassVar[bool] = True
    # What ``--dtype auto`` means on an accelerator; always fp32 on CPU.
    accelerator_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self, config: Any = None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(self.config).__name__}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.network: nn.Module | None = self.build_network()
        if self.network is not None:
            self.network.to(self.device)
        self.weights_sha256: str | None = None

    # ----------------------------------------------------------------- construction
    def build_network(self) -> nn.Module | None:
        """Build the network from ``self.config`` (``None`` for classical methods)."""
        return None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any = None, **kwargs) -> "Method":
        """Build an untrained method from a config dataclass or a dict (unknown keys are errors)."""
        if config is None or isinstance(config, Mapping):
            config = build_config(cls.Config, config or {}, what=f"config key of {cls.name}")
        return cls(config, **kwargs)

    @classmethod
    def from_weights(cls, weights: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, offline: bool | None = None) -> "Method":
        """Build the network from the config stored in ``weights`` and load it strictly.

        Args:
            weights: a manifest name, a file path, a hub id or a URL (see :mod:`irc.weights`).
        """
        from irc.weights import load_weights, resolve_weights

        resolved = resolve_weights(weights, method=cls.name, offline=offline)
        state, metadata = load_weights(resolved.path)
        stored = metadata.get("method")
        if stored is not None and stored != cls.name:
            raise WeightsError(f"{resolved.path}: weights are for method {stored!r}, not {cls.name!r}")
        config = metadata.get("config") or {}
        if isinstance(config, str):
            config = json.loads(config)
        method = cls.from_config(config, device=device, dtype=dtype)
        method.load_state_dict(state)
        method.weights_sha256 = resolved.sha256
        return method

    @classmethod
    def default_weights(cls, task: str | None = None) -> str | None:
        """Name of the shipped default weights for ``task`` (``None`` when there are none)."""
        from irc.weights import default_entry

        entry = default_entry(cls.name, task)
        return entry.name if entry else None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to ship (never optimiser state). Training-only modules are excluded."""
        return {} if self.network is None else dict(self.network.state_dict())

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load tensors strictly: missing or unexpected keys are an error naming them."""
        if self.network is None:
            if state:
                raise WeightsError(f"{self.name} has no trainable parameters but the weights hold {len(state)} tensors")
            return
        result = self.network.load_state_dict(dict(state), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise WeightsError(
                f"weights do not fit {self.name} {self.config}: missing {list(result.missing_keys)[:5]}, "
                f"unexpected {list(result.unexpected_keys)[:5]}"
            )

    def metadata(self) -> dict[str, Any]:
        """Metadata stored next to the tensors (config as a dict)."""
        return {"method": self.name, "config": config_to_dict(self.config)}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per loss group; the training loop makes one optimiser each."""
        if self.network is None:
            return {}
        return {"main": [p for p in self.network.parameters() if p.requires_grad]}

    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """Losses of one step, one scalar per group in :meth:`parameter_groups`."""
        raise UsageError(f"method {self.name!r} is not trainable")

    def train(self, mode: bool = True) -> "Method":
        if self.network is not None:
            self.network.train(mode)
        return self

    # ----------------------------------------------------------------- knobs
    @classmethod
    def knob_names(cls) -> list[str]:
        return [k.name for k in cls.knobs]

    @classmethod
    def check_knobs(cls, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and complete run-time knobs (unknown names are errors listing valid ones)."""
        check_keys(knobs, cls.knob_names(), f"option for method {cls.name}:")
        values = {k.name: k.default for k in cls.knobs}
        by_name = {k.name: k for k in cls.knobs}
        for key, value in knobs.items():
            values[key] = coerce(value, by_name[key].type, key)
        return values

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        """Output size / input size for these knobs (default: the TileSpec's scale)."""
        return self.tile_spec.scale

    # ----------------------------------------------------------------- inference
    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        """Restore a tile or a whole image already on ``self.device``.

        Args:
            x: ``(B, C, H, W)`` in [0, 1], ``H``/``W`` padded to ``tile_spec.multiple_of``.
            knobs: validated knobs (see :meth:`check_knobs`).

        Returns:
            ``(B, C', H*s, W*s)`` in [0, 1] with ``s = output_scale(knobs)``.
        """
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, x: Tensor, *, tile: int | str = 0, tile_overlap: int | None = None, **knobs: Any) -> Tensor:
        """Restore ``x`` (on any device), tiling through :mod:`irc.tiling` per the TileSpec.

        Args:
            x: ``(B, C, H, W)`` in [0, 1].
            tile: tile edge in input pixels, ``0`` for none, ``"auto"`` to size tiles from free
                device memory (halved on out-of-memory).
            tile_overlap: overlap in input pixels (default: the TileSpec's ``min_overlap``).
            knobs: method options (validated; unknown names raise :class:`UsageError`).

        Returns:
            ``(B, C', H', W')`` float32 on ``x.device``, in [0, 1] (``identity`` returns its
            input as it is, even out of range).
        """
        if x.shape[1] not in self.input_channels:
            raise UsageError(f"{self.name} takes {' or '.join(map(str, self.input_channels))}-channel images, got {x.shape[1]}")
        values = self.check_knobs(knobs)
        spec = self.tile_spec
        overlap = spec.min_overlap if tile_overlap is None else int(tile_overlap)
        self.train(False)
        if spec.support == "internal":
            return self._finish(self.forward_internal_tiling(x, tile=tile, tile_overlap=overlap, **values).float())
        if spec.support == "unsupported":
            tile = 0

        scale = self.output_scale(values)

        def run(edge: int) -> Tensor:
            return tiled(
                lambda t: self.forward(t.to(self.dtype), **values).float(),
                x,
                tile=edge,
                overlap=overlap,
                scale=scale,
                multiple_of=spec.multiple_of,
                device=self.device,
            )

        if tile == "auto":
            edge = auto_tile_size(self.device, bytes_per_pixel=self.bytes_per_pixel, channels=x.shape[1], multiple_of=spec.multiple_of)
            out = run_with_oom_fallback(run, edge, multiple_of=spec.multiple_of)
        else:
            out = run(int(tile))
        return self._finish(out)

    def _finish(self, out: Tensor) -> Tensor:
        return out.clamp_(0, 1) if self.clamp_output else out

    def forward_internal_tiling(self, x: Tensor, *, tile: int | str, tile_overlap: int, **knobs: Any) -> Tensor:
        """Restore with the method's own multi-stage tiling (``TileSpec.support == "internal"``)."""
        raise NotImplementedError(f"{self.name} declares internal tiling but does not implement it")

    # ----------------------------------------------------------------- description
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A JSON-able description for ``irc methods``."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "tasks": list(cls.tasks),
            "knobs": [{"name": k.name, "default": k.default, "help": k.help} for k in cls.knobs],
            "config": [f.name for f in dataclasses.fields(cls.Config)],
            "tiling": cls.tile_spec.support,
            "needs_weights": cls.needs_weights,
            "trainable": cls.trainable,
        }
