"""Activation sites: read or rewrite a named submodule's output during a forward pass.

A site is a name from `model.named_modules()`; the module's output is the activation there.
Gradient routing (Cloud et al. 2024, arXiv 2410.04332) rewrites it (`intercept`) while
activation penalties and self-modeling read it (`capture`), possibly at the same site in
the same forward. Both use forward hooks that are removed when the block exits.

Hook order: capture hooks are prepended and intercept hooks appended, so at any site every
capture runs before any transform, whichever block was entered first: a capture records the
module's own output (still part of the graph), not a routed version of it. That is what the
gradient-routing reference does: penalties on the code act on the raw code, so their gradients
are not masked along with the task's. Two intercepts on the same site compose in the order
their blocks were entered: the outer block's transform sees the raw output.
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
            lambda _mod, _inp, out, f=transform: f(out)
        )
        for name, transform in transforms.items()
    ]
    with hooked(handles):
        yield


@contextmanager
def capture(module: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Yields a dict that maps each name to the latest forward output of that submodule in
    the block (before any `intercept` transform at that site; not detached). The dict keeps
    its entries after the block; the hooks are removed."""
    subs = resolve_sites(module, names)
    captured: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, object, Tensor], None]:
        def record(_mod: nn.Module, _inp: object, out: Tensor) -> None:
            captured[name] = out

        return record

    handles = [sub.register_forward_hook(recorder(name), prepend=True)
               for name, sub in subs.items()]
    with hooked(handles):
        yield captured
