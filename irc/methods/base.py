"""The Method contract every restoration backend implements.

A method is a set of named **components** around a typed config, run through the **stage
runner**, fed its **declared input**, and driven by **declared options**:

* ``Config`` — a frozen dataclass with every architectural choice, typed. It is stored in the
  weights' metadata, so :meth:`Method.from_weights` rebuilds the exact network before loading.
  ``tiny_config`` is a small variant the contract tests build offline, with no data pack.
* **Components** (:class:`Component`, :meth:`Method.components`) — the named parts: TUR's
  ``backbone`` and training-only ``head``; LoRun's shared ``base`` denoiser, its per-stage
  ``stages`` (LoRA adapters, step sizes, gates) and its ``operator`` (the CS matrix or CASSI
  mask); HYPIR's frozen ``unet``, ``vae`` and ``text_encoder`` from a diffusers repository and
  its shipped, trainable ``lora``. Each is *shipped* (in our weights files), *frozen* (loaded
  from elsewhere, never saved by us) or *training* (trained, never exported), and trainable or
  not. What is saved, checkpointed, averaged (EMA), hashed across replicas and exported follows
  from that: :meth:`Method.state_dict` is the shipped state, :meth:`Method.trainable_state` the
  trained one, so a LoRA on a frozen 865 M-parameter UNet checkpoints megabytes. A component is
  a module plus an optional key filter, so a LoRA living inside a UNet is a component of its own.
  :meth:`Method.to` casts each component to the run's dtype unless it asks to stay fp32.
* **Stages** — :meth:`Method.restore` hands its work to a :class:`~irc.runner.StageRunner`,
  one call per stage, each with a :class:`~irc.tiling.TileSpec`. The runner owns tiling, the
  overlap, the blend window, ``--tile auto`` and out-of-memory halving, and the per-image random
  generators; no method tiles on its own. The default :meth:`Method.run_stages` is one stage
  of :meth:`Method.forward`; multi-stage methods override it.
* **Declared input** (:attr:`Method.input_kind`, per task through :meth:`task_profile`):
  ``rgb`` (grey images are replicated and averaged back), ``luma`` (the method sees BT.601 Y of a
  colour image, its chroma is kept), ``cube`` (spectral cubes), ``any`` (1 or 3 channels as they
  come). :func:`irc.pipeline.restore_tensor` does the conversions, once, for every method. A
  method that reconstructs measurement files (``--measurement``) implements
  :meth:`Method.restore_measurement`.
* **Declared options** — :data:`knobs` (from :mod:`irc.methods.options` for the built-in
  methods) become the typed flags of ``irc restore`` / ``eval`` / ``bench``, their help, ``irc
  methods`` and the completions. :meth:`check_knobs` validates names and types; an instance's
  :meth:`knob_values` also checks them against the loaded weights (a CS ratio the weights do
  not have fails before any image).
* **Default weights follow the task** — :attr:`default_task`, ``--task``, or the benchmark
  protocol's task choose the manifest default (:meth:`default_weights`).
* :meth:`Method.training_step` returns named loss groups (``{"g": ..., "d": ...}`` for a GAN);
  the training loop owns optimisers (one per group, from :meth:`parameter_groups`), accumulation,
  clipping, mixed precision, EMA, checkpoints and resume.

Images are ``(B, C, H, W)`` float tensors in ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor, nn

from irc.config import build_config, check_keys, coerce, config_to_dict
from irc.errors import UsageError, WeightsError
from irc.methods.options import Knob, knob_choices
from irc.runner import StageRunner
from irc.tiling import TileSpec

__all__ = ["Component", "EmptyConfig", "InputKind", "Knob", "Method", "TrainBatch"]

InputKind = Literal["rgb", "luma", "cube", "any"]
Role = Literal["shipped", "frozen", "training"]


@dataclass(frozen=True)
class Component:
    """A named part of a method (see the module docstring).

    Attributes:
        name: e.g. ``backbone``, ``lora``, ``vae``.
        module: the module holding it.
        role: ``shipped`` (in irc's weights files), ``frozen`` (loaded from a base model, never
            saved by irc) or ``training`` (trained, checkpointed, never exported).
        trainable: optimised by ``irc train`` (then also averaged by EMA and checkpointed).
        select: which entries of ``module.state_dict()`` belong to it (``None``: all of them).
        prefix: prepended to its keys in the method's state dicts.
        group: the loss group its parameters train in.
        keep_fp32: stay fp32 when the method runs in bf16/fp16 (e.g. a VAE).
        averaged: trainable components the training loop keeps an EMA of (not a GAN's
            discriminator heads, for instance).
    """

    name: str
    module: nn.Module
    role: Role = "shipped"
    trainable: bool = True
    select: Callable[[str], bool] | None = None
    prefix: str = ""
    group: str = "main"
    keep_fp32: bool = False
    averaged: bool = True

    def owns(self, key: str) -> bool:
        return self.select is None or self.select(key)

    def state(self) -> dict[str, Tensor]:
        """This component's live tensors (they share storage with the module), prefixed."""
        return {self.prefix + k: v for k, v in self.module.state_dict().items() if self.owns(k)}

    def parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.module.named_parameters():
            if self.owns(name):
                yield p

    def tensors(self) -> Iterator[Tensor]:
        yield from self.parameters()
        for name, b in self.module.named_buffers():
            if self.owns(name):
                yield b


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


_CHANNELS: dict[str, tuple[int, ...]] = {"rgb": (3,), "luma": (1,), "any": (1, 3)}


class Method:
    """Base class of every restoration backend. Subclasses set the class attributes below."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig
    #: Config overrides of a small network for the offline contract tests.
    tiny_config: ClassVar[dict[str, Any]] = {}
    tasks: ClassVar[tuple[str, ...]] = ("restore",)
    #: The task whose default weights ``irc restore`` / ``irc bench`` use when none is given.
    default_task: ClassVar[str | None] = None
    knobs: ClassVar[tuple[Knob, ...]] = ()
    #: The single stage of :meth:`run_stages` (methods with several stages declare their own).
    tile_spec: ClassVar[TileSpec] = TileSpec()
    input_kind: ClassVar[InputKind] = "rgb"
    needs_weights: ClassVar[bool] = True
    trainable: ClassVar[bool] = True
    #: Precisions this method runs in (``fp16`` only on accelerators).
    dtypes: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")
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
        self.weights_sha256: str | None = None
        self.to(self.device, self.dtype)

    # ----------------------------------------------------------------- construction
    def build_network(self) -> nn.Module | None:
        """Build the network from ``self.config`` (``None`` for classical methods)."""
        return None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any = None, **kwargs) -> Method:
        """Build an untrained method from a config dataclass or a dict (unknown keys are errors)."""
        if config is None or isinstance(config, Mapping):
            config = build_config(cls.Config, config or {}, what=f"config key of {cls.name}")
        return cls(config, **kwargs)

    @classmethod
    def tiny(cls, **kwargs) -> Method:
        """The small network of :attr:`tiny_config` (contract tests; random weights)."""
        return cls.from_config(dict(cls.tiny_config), **kwargs)

    @classmethod
    def config_from_weights(cls, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        """The config dict stored in weights metadata (hook for methods that migrate old files)."""
        config = metadata.get("config") or {}
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as err:
                raise WeightsError(f"the weights' config metadata is not JSON ({err.msg})") from None
        if not isinstance(config, Mapping):
            raise WeightsError(f"the weights' config metadata is a {type(config).__name__}, not an object of config keys")
        return config

    @classmethod
    def from_weights(
        cls, weights: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, offline: bool | None = None, base_model: str | None = None
    ) -> Method:
        """Build the network from the config stored in ``weights`` and load it strictly.

        Args:
            weights: a manifest name, a file path, a hub id or a URL (see :mod:`irc.weights`).
            base_model: another base model (folder or hub id) for methods built on one (HYPIR).
        """
        from irc.weights import load_weights, resolve_weights

        if base_model is not None:
            raise UsageError(f"method {cls.name!r} has no base model (--base-model is for methods built on one, e.g. hypir)")

        resolved = resolve_weights(weights, method=cls.name, offline=offline)
        state, metadata = load_weights(resolved.path)
        stored = metadata.get("method")
        if stored is not None and stored != cls.name:
            raise WeightsError(f"{resolved.path}: weights are for method {stored!r}, not {cls.name!r}")
        try:
            method = cls.from_config(cls.config_from_weights(metadata), device=device, dtype=dtype, **cls._loading_kwargs())
        except (WeightsError, UsageError) as err:
            raise WeightsError(f"{resolved.path}: {err}") from None
        try:
            method.load_state_dict(cls.migrate_state(dict(state), metadata))
        except WeightsError as err:
            raise WeightsError(f"{resolved.path}: {err}") from None
        method.to(method.device, method.dtype)  # loading may replace buffers
        method.weights_sha256 = resolved.sha256
        return method

    @classmethod
    def migrate_state(cls, state: dict[str, Tensor], metadata: Mapping[str, Any]) -> dict[str, Tensor]:
        """Convert tensors of files written by older irc versions (default: unchanged)."""
        return state

    @classmethod
    def _loading_kwargs(cls) -> dict[str, Any]:
        """Constructor keywords used when the tensors come from a file (e.g. skip data-driven init)."""
        return {}

    @classmethod
    def default_weights(cls, task: str | None = None) -> str | None:
        """Name of the shipped default weights for ``task`` (``None`` when there are none)."""
        from irc.weights import default_entry

        entry = default_entry(cls.name, task)
        return entry.name if entry else None

    @classmethod
    def tasks_with_default_weights(cls) -> list[str]:
        """Tasks for which the manifest names default weights of this method."""
        from irc.weights import load_manifest

        found: list[str] = []
        for entry in load_manifest():
            if entry.method == cls.name and entry.default:
                found.extend(entry.all_tasks or ("(any)",))
        return found

    # ----------------------------------------------------------------- components and state
    def components(self) -> list[Component]:
        """The method's components; by default its whole network, shipped and trainable."""
        return [] if self.network is None else [Component("network", self.network)]

    def component(self, name: str) -> Component:
        for c in self.components():
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no component {name!r}")

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to ship: the shipped components (never frozen bases or training-only parts)."""
        return {k: v for c in self.components() if c.role == "shipped" for k, v in c.state().items()}

    def trainable_state(self) -> dict[str, Tensor]:
        """Live tensors of the trainable components: what checkpoints, EMA and replica hashes cover."""
        return {k: v for c in self.components() if c.trainable for k, v in c.state().items()}

    def load_state_dict(self, state: Mapping[str, Tensor], *, roles: tuple[Role, ...] = ("shipped",)) -> None:
        """Load the components of ``roles`` from ``state`` strictly (keys, shapes, dtypes).

        ``training`` components may be present or absent as a whole (a training checkpoint
        exported with them, or release weights without them); anything else missing or left
        over is an error naming the keys.
        """
        state = dict(state)
        comps = [c for c in self.components() if c.role in roles or c.role == "training"]
        used: set[str] = set()
        problems: list[str] = []
        for comp in comps:
            own = comp.state()
            given = {k: state[k] for k in own if k in state}
            if comp.role == "training" and "training" not in roles and not given:
                continue
            missing = [k for k in own if k not in given]
            if missing:
                problems.append(f"{comp.name}: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
                continue
            with torch.no_grad():
                for key, value in given.items():
                    target = own[key]
                    if not isinstance(value, Tensor):
                        problems.append(f"{key}: not a tensor")
                    elif tuple(value.shape) != tuple(target.shape):
                        problems.append(f"{key}: shape {tuple(value.shape)}, expected {tuple(target.shape)}")
                    elif value.is_floating_point() != target.is_floating_point() or (value.is_floating_point() and value.dtype not in (torch.float32, target.dtype)):
                        # irc files are float32: anything else is a wrong or tampered file, not a cast to make silently
                        problems.append(f"{key}: dtype {str(value.dtype).replace('torch.', '')}, expected float32")
                    else:
                        target.copy_(value.to(target.dtype))
            used.update(given)
        unexpected = [k for k in state if k not in used]
        if unexpected:
            problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if problems:
            raise WeightsError(f"weights do not fit {self.name} ({self.config}): " + "; ".join(problems))

    def averaged_state(self) -> dict[str, Tensor]:
        """Live tensors of the trainable components the training loop averages (EMA)."""
        return {k: v for c in self.components() if c.trainable and c.averaged for k, v in c.state().items()}

    def load_trainable_state(self, state: Mapping[str, Tensor]) -> None:
        """Load what :meth:`trainable_state` holds (a training checkpoint), strictly."""
        live = self.trainable_state()
        missing = [k for k in live if k not in state]
        unexpected = [k for k in state if k not in live]
        if missing or unexpected:
            raise WeightsError(f"checkpoint does not fit {self.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for key, target in live.items():
                if tuple(state[key].shape) != tuple(target.shape):
                    raise WeightsError(f"checkpoint tensor {key}: shape {tuple(state[key].shape)}, expected {tuple(target.shape)}")
                target.copy_(state[key])

    def metadata(self) -> dict[str, Any]:
        """Metadata stored next to the tensors (config as a dict).

        A config's ``init_from`` (the weights a training run starts from, in TUR, LoRun, LearnIR
        and HYPIR) is training only: saved files keep it empty, so that loading them never looks
        for the file their run started from."""
        config = config_to_dict(self.config)
        if "init_from" in config:
            config["init_from"] = ""
        return {"method": self.name, "config": config}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters per loss group; the training loop makes one optimiser each."""
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for comp in self.components():
            if not comp.trainable:
                continue
            for p in comp.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    groups.setdefault(comp.group, []).append(p)
        return groups

    def lr_scale(self, param: nn.Parameter) -> float:
        """Factor on the recipe's learning rate for ``param`` (default 1)."""
        return 1.0

    def auto_cpu_dtype(self) -> torch.dtype:
        """The dtype ``--dtype auto`` runs these weights in on a CPU (fp32 unless a method measured better)."""
        return torch.float32

    def compiled_modules(self) -> list[nn.Module]:
        """The modules ``--compile`` hands to ``torch.compile`` (default: the network)."""
        return [self.network] if self.network is not None else []

    def compile(self) -> Method:
        """``--compile``: compile :meth:`compiled_modules` in place (``nn.Module.compile``: the
        state-dict keys stay as they are). The first call of each input shape pays the
        compilation; inductor's cache (``TORCHINDUCTOR_CACHE_DIR``, irc's cache folder by default)
        makes later runs start faster."""
        import os

        from irc.download import cache_dir

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torch-compile"))
        for module in self.compiled_modules():
            module.compile()
        return self

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Method:
        """Move every component to ``device`` and cast it to ``dtype`` (unless it keeps fp32)."""
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        modules: dict[int, nn.Module] = {id(c.module): c.module for c in self.components()}
        for module in modules.values():
            module.to(self.device)
        with torch.no_grad():
            for comp in self.components():
                target = torch.float32 if comp.keep_fp32 else self.dtype
                for t in comp.tensors():
                    if t.is_floating_point() and t.dtype != target:
                        t.data = t.data.to(target)
        return self

    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """Losses of one step, one scalar per group in :meth:`parameter_groups`."""
        raise UsageError(f"method {self.name!r} is not trainable")

    def train(self, mode: bool = True) -> Method:
        for module in {id(c.module): c.module for c in self.components()}.values():
            module.train(mode)
        return self

    # ----------------------------------------------------------------- knobs
    @classmethod
    def knob_names(cls) -> list[str]:
        return [k.name for k in cls.knobs]

    @classmethod
    def check_knobs(cls, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and complete run-time knobs: unknown names are errors listing valid ones;
        values are coerced to the knob's type."""
        check_keys(knobs, cls.knob_names(), f"option for method {cls.name}:")
        values = {k.name: k.default for k in cls.knobs}
        by_name = {k.name: k for k in cls.knobs}
        for key, value in knobs.items():
            values[key] = coerce(value, by_name[key].type, key)
        return values

    def knob_values(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`check_knobs`, then :meth:`validate_knobs` against these weights."""
        values = self.check_knobs(knobs)
        self.validate_knobs(values)
        return values

    def validate_knobs(self, values: dict[str, Any]) -> None:
        """Check knob values against the loaded weights (e.g. a CS ratio); raise :class:`UsageError`."""

    # ----------------------------------------------------------------- inputs and stages
    @classmethod
    def task_profile(cls, task: str | None = None) -> dict[str, Any]:
        """What a task of this method takes and how it runs: ``{"input": InputKind,
        "channels": (...), "stages": {name: TileSpec}}`` (``irc methods --json``)."""
        return {"input": cls.input_kind, "channels": _CHANNELS.get(cls.input_kind, ()), "stages": {"network": cls.tile_spec}}

    @property
    def task(self) -> str | None:
        """The task these weights solve (the config's, for methods whose config fixes it)."""
        return getattr(self.config, "task", None) or self.default_task

    @property
    def input_channels(self) -> tuple[int, ...]:
        return tuple(self.task_profile(self.task)["channels"])

    @property
    def kind(self) -> InputKind:
        return self.task_profile(self.task)["input"]

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        """Output size / input size for these knobs (default: the stage's scale)."""
        return self.tile_spec.scale

    def stage_spec(self, knobs: Mapping[str, Any]) -> TileSpec:
        """The TileSpec of the single stage of :meth:`run_stages`, with the knobs' scale."""
        return dataclasses.replace(self.tile_spec, scale=self.output_scale(knobs))

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        """Restore a tile or a whole image already on ``self.device``, in ``self.dtype``.

        Args:
            x: ``(B, C, H, W)`` in [0, 1], ``H``/``W`` padded to ``tile_spec.multiple_of``.
            knobs: validated knobs.

        Returns:
            ``(B, C', H*s, W*s)`` with ``s = output_scale(knobs)``.
        """
        raise NotImplementedError

    def run_stages(self, x: Tensor, runner: StageRunner, **knobs: Any) -> Tensor:
        """All of the method's work on ``x`` through ``runner`` (default: one stage of :meth:`forward`)."""
        return runner.run(lambda t: self.forward(t.to(self.dtype), **knobs).float(), x, self.stage_spec(knobs))

    @torch.no_grad()
    def restore(
        self, x: Tensor, *, runner: StageRunner | None = None, tile: int | str = 0, tile_overlap: int | None = None, seed: int = 0, **knobs: Any
    ) -> Tensor:
        """Restore ``x`` (on any device) through the stage runner.

        Args:
            x: ``(B, C, H, W)`` in [0, 1] with ``C`` the method's input channels (see
                :func:`irc.pipeline.restore_tensor` for the conversions).
            runner: the stage runner (tiling and randomness); built from ``tile``,
                ``tile_overlap`` and ``seed`` when not given.
            knobs: method options (validated; unknown names raise :class:`UsageError`).

        Returns:
            ``(B, C', H', W')`` float32 on ``x.device``, in [0, 1] (``identity`` returns its
            input as it is, even out of range).
        """
        channels = self.input_channels
        if channels and x.shape[1] not in channels:
            raise UsageError(f"{self.name} takes {' or '.join(map(str, channels))}-channel images, got {x.shape[1]}")
        values = self.knob_values(knobs)
        runner = runner or StageRunner(self.device, tile, tile_overlap, seed)
        self.train(False)
        out = self.run_stages(x, runner.for_batch(x.shape[0]), **values).float()
        return out.clamp_(0, 1) if self.clamp_output else out

    #: ``irc bench`` counts FLOPs with one extra untiled run (off for very large networks)
    bench_counts_flops: ClassVar[bool] = True

    def image_options(self, knobs: Mapping[str, Any], key: str) -> dict[str, Any]:
        """Options that take a value per image (e.g. HYPIR's prompt from ``--prompt-dir``), for
        the record written into the image called ``key``; default: none."""
        return {}

    def advice(self, knobs: Mapping[str, Any], image: Any) -> str | None:
        """A suggestion for an input these weights are not the best choice for (``image``: the
        decoded :class:`irc.io.Image`), said once at the end of a restore batch with the number
        of inputs it concerns; ``None`` (the default): nothing to say."""
        return None

    def bench_variants(self) -> dict[str, Any]:
        """Named context managers under which ``irc bench`` measures the method side by side
        (HYPIR: irc's path and the official settings); default: one unnamed variant."""
        import contextlib

        return {"": contextlib.nullcontext()}

    def restore_measurement(self, path: Path, **knobs: Any) -> Tensor:
        """Reconstruct a measurement file (``--measurement``); ``(1, C, H, W)`` on the CPU."""
        raise UsageError(f"method {self.name!r} does not reconstruct measurement files")

    def measurement_kind(self) -> str | None:
        """``"image"`` / ``"cube"`` when these weights reconstruct measurement files, else ``None``."""
        return None

    # ----------------------------------------------------------------- description
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """A JSON-able description for ``irc methods``."""
        profiles = {}
        for task in cls.tasks:
            p = cls.task_profile(task)
            profiles[task] = {"input": p["input"], "channels": list(p["channels"]), "stages": {n: s.describe() for n, s in p["stages"].items()}}
        return {
            "name": cls.name,
            "summary": cls.summary,
            "tasks": list(cls.tasks),
            "default_task": cls.default_task,
            "knobs": [
                {"name": k.name, "flag": k.flag, "default": k.default, "help": k.help, "metavar": k.metavar or "",
                 **({"choices": list(knob_choices(k))} if knob_choices(k) else {})}
                for k in cls.knobs
            ],
            "config": [f.name for f in dataclasses.fields(cls.Config)],
            "profiles": profiles,
            "dtypes": list(cls.dtypes),
            "needs_weights": cls.needs_weights,
            "trainable": cls.trainable,
        }
