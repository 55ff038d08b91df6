"""Activation sites: read or rewrite a named submodule's output during a forward pass.

A site is a name from `model.named_modules()`; the module's output is the activation there.
Gradient routing (Cloud et al. 2024, arXiv 2410.04332) rewrites it (`intercept`) while
activation penalties and self-modeling read it (`capture`), possibly at the same site in
the same forward. Both use forward hooks that are removed when the block exits.

Hook order: intercept hooks are prepended and capture hooks appended, so at any site every
transform runs before any capture, whichever block was entered first: a capture records the
tensor that flows on (e.g. the routed activation, still part of the graph). Two intercepts
on the same site compose innermost-first: the transform of the block entered last sees the
raw output and the outer block's transform sees its result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def resolve_sites(module: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """The named submodules; ValueError naming the unknown ones and listing the known ones."""
    known = {name: sub for name, sub in module.named_modules() if name}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown activation site(s) {unknown}; known sites: {', '.join(known) or 'none'}"
        )
    return {name: known[name] for name in names}


@contextmanager
def hooked(handles: list[RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def intercept(
    module: nn.Module, transforms: Mapping[str, Callable[[Tensor], Tensor]]
) -> Iterator[None]:
    """Within the block, each named submodule's forward output is replaced by
    `transform(output)`. Hooks are removed on exit, also when the block raises."""
    subs = resolve_sites(module, list(transforms))
    handles = [
        subs[name].register_forward_hook(
            lambda _mod, _inp, out, f=transform: f(out), prepend=True
        )
        for name, transform in transforms.items()
    ]
    with hooked(handles):
        yield


@contextmanager
def capture(module: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Yields a dict that maps each name to the latest forward output of that submodule in
    the block (after every `intercept` transform at that site; not detached). The dict keeps
    its entries after the block; the hooks are removed."""
    subs = resolve_sites(module, names)
    captured: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, Tensor], None]:
        def record(_mod: nn.Module, _inp: object, out: Tensor) -> None:
            captured[name] = out

        return record

    handles = [sub.register_forward_hook(recorder(name)) for name, sub in subs.items()]
    with hooked(handles):
        yield captured
