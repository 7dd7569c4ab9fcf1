"""Run-time options of the built-in methods, declared without importing torch.

Every option of :meth:`irc.methods.base.Method.restore` is a :class:`Knob`. The table
:data:`OPTIONS` lists the built-in methods' knobs so that the command line can turn them into
real, typed flags (``--prompt``, ``--ratio``, ``--steps`` ...) with their help, grouped per
method in ``--help`` and in the completion scripts, without importing a method (``irc --help``
and completion must stay fast). Each method class takes its ``knobs`` from here. Methods added
through ``IRC_EXTRA_METHODS`` declare knobs on their class; they are reachable as
``-O key=value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

__all__ = ["Knob", "OPTIONS", "TUR_TASKS", "knob_choices", "options_of"]


@dataclass(frozen=True)
class Knob:
    """A run-time option of :meth:`Method.restore`.

    Attributes:
        name: keyword name; the CLI flag is ``--name`` with ``_`` written ``-``.
        type: annotation the value is coerced to (``float``, ``int``, ``str``, ``Literal[...]``,
            ``int | str``).
        default: value used when the user gives none.
        help: one line for ``--help``, ``irc methods`` and the completions.
        metavar: how ``--help`` shows the value (default: from the type).
        short: a one-letter flag too (``-s``), for the most used options.
    """

    name: str
    type: Any
    default: Any
    help: str
    metavar: str | None = None
    short: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def knob_choices(knob: Knob) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` knob, else ``None``."""
    return tuple(str(a) for a in get_args(knob.type)) if get_origin(knob.type) is Literal else None


TUR_TASKS = ("auto", "noise", "jpeg", "blur", "sr", "rain", "haze", "dark")

OPTIONS: dict[str, tuple[Knob, ...]] = {
    "identity": (),
    "bicubic": (
        Knob("scale", float, 4.0, "Resize factor (output / input size), 1/64 to 64, e.g. 2, 3, 4 or 0.5.", "FACTOR", short="-s"),
    ),
    "tur": (
        Knob(
            "task", Literal[TUR_TASKS], "auto",  # type: ignore[valid-type]
            "What to restore: auto (the blind photo model), noise, blur or sr (the photo model's branch trained "
            "with the task shown, told what to remove), jpeg (its JPEG specialist tur-photo-jpeg, for strong "
            "compression), rain, haze or dark (the 7-task MiOIR weights).", short="-t",
        ),
    ),
    "lorun": (
        Knob("task", str, "", "LoRun task: cs, cassi or sr; picks the default weights and must match given ones.", "TASK", short="-t"),
        Knob("ratio", float, 0.0, "CS sampling ratio, e.g. 0.1, 0.25, 0.5; must match the weights (0: the weights' ratio).", "RATIO"),
        Knob("scale", float, 0.0, "SR factor; must match the weights (0: the weights' factor).", "FACTOR", short="-s"),
        Knob("kernel", int | str, "", "SR blur of the input: a USRNet kernel index 0-11, gaussian:SIGMA, or a kernel file (.npy, .mat, image); not given: kernel 0, an isotropic Gaussian (said on stderr).", "KERNEL"),
        Knob("mask", str, "", "CASSI coded mask (.mat) of a --measurement taken with another mask than the weights'.", "FILE"),
        Knob("stages", int, 0, "Unfolded stages to run (0: all).", "N"),
    ),
    "hypir": (
        Knob("prompt", str, "", "Text describing the photo, e.g. \"a photo of a cat on a sofa\" (HYPIR works better with one than without).", "TEXT", short="-p"),
        Knob("prompt_file", str, "", "Read one prompt for every image from this text file.", "FILE"),
        Knob("prompt_dir", str, "", "A .txt prompt per image, mirroring the input tree (photos/a/b.jpg -> DIR/a/b.txt).", "DIR"),
        Knob("upscale", float, 1.0, "Enlarge by this factor first (bicubic), 1 to 8; the output has this size.", "FACTOR"),
        Knob("longest_side", int, 0, "Enlarge so that the longest side has this many pixels (instead of --upscale).", "PIXELS"),
        Knob("patch", int | str, 512, "Tile edge in pixels for the VAE and UNet (official: 512), or auto: the whole image at once when it fits.", "PIXELS|auto"),
        Knob("stride", int, 256, "Tile stride in pixels (official: 256; patch - stride is the overlap).", "PIXELS"),
        Knob("model_t", int, 200, "Timestep the UNet is told (100-300; lower with --coeff-t for smoother, more faithful output).", "T"),
        Knob("coeff_t", int, 200, "Timestep whose noise level turns the UNet's prediction into the image (see --model-t).", "T"),
        Knob("texture", float, 1.0, "LoRA strength, 0 (the plain SD2.1 UNet) to about 1.2 (more generated texture); irc's knob, not the paper's.", "SCALE"),
        Knob("latent", Literal["sample", "mode"], "sample", "Encode to a posterior sample (official, seeded) or its mode (deterministic)."),
    ),
    "learnir": (
        Knob("task", str, "", "LearnIR task: noise (real camera noise), haze or shadow; picks the default weights and must match given ones.", "TASK", short="-t"),
        Knob("steps", int, 0, "Diffusion length T of the schedule (0: the weights' T, 12 = 5 sampling steps); more T, more steps.", "T"),
        Knob("drm", Literal["on", "off"], "on", "Dynamic resolution: early steps at reduced size (on, faster) or every step at full size (off)."),
        Knob("drm_schedule", str, "", "Scale exponent per sampling step, first to last, e.g. 2,1,1,0,0 (1/4, 1/2, 1/2, full, full size).", "S,S,..."),
        Knob("dpsc", Literal["on", "off"], "on", "The learned posterior-consistency correction: on, or off for the uncorrected preview sampler."),
    ),
}
"""Knobs of the built-in methods, by method name (see :data:`irc.methods.REGISTRY`)."""


def options_of(method: str) -> tuple[Knob, ...]:
    """The knobs ``method`` declares here (``()`` for methods outside the table)."""
    return OPTIONS.get(method, ())
