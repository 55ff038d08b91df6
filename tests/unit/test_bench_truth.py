"""The DLN benchmarks' ground truth: the Hessian-rank lower bound on the LLC at a teacher, and the
teachers it is computed for (bench/dln.py)."""
from __future__ import annotations

import pytest
import torch

from bench import dln


def _jacobian_rank(mats: list[torch.Tensor]) -> int:
    """The rank of d(W_L ⋯ W_1)/dw by autograd and an SVD: the slow, direct way."""
    shapes = [m.shape for m in mats]
    sizes = [a * b for a, b in shapes]

    def product(flat: torch.Tensor) -> torch.Tensor:
        parts = [p.reshape(s) for p, s in zip(flat.split(sizes), shapes)]
        out = parts[0]
        for w in parts[1:]:
            out = w @ out
        return out.reshape(-1)

    jac = torch.func.jacrev(product)(torch.cat([m.reshape(-1) for m in mats]))
    sv = torch.linalg.svdvals(jac)
    return int((sv > sv[0] * max(jac.shape) * 1e-12).sum())


@pytest.mark.parametrize("widths,seed,teacher", [
    ((6, 9, 5), 3, "cuts"), ((7, 4, 8, 5), 11, "cuts"), ((5, 8, 3, 9, 4), 2, "cuts"),
    ((6, 9, 5), 3, "aligned"), ((7, 4, 8, 5), 11, "aligned"),
])
def test_kronecker_gram_rank_is_the_jacobians(widths, seed, teacher) -> None:
    _, rank = dln.build_teacher(widths, seed)
    mats = dln.teacher_matrices(dln.Case("t", widths, seed, rank, teacher))
    assert dln.hessian_rank(mats) == _jacobian_rank(mats)


def test_one_layer_bound_is_half_the_parameters() -> None:
    case = dln.Case("one", (6, 4), seed=5, rank=dln.build_teacher((6, 4), 5)[1])
    assert case.hessian_bound() == case.num_parameters / 2 == case.theory_lambda()


def test_aligned_teacher_has_rank_r_everywhere_and_does_not_contradict_aoyagi() -> None:
    widths = (37, 57, 33, 13, 12)
    case = dln.Case("a", widths, seed=1, rank=2, teacher="aligned")
    mats = dln.teacher_matrices(case)
    assert [int(torch.linalg.matrix_rank(m)) for m in mats] == [2] * 4
    assert dln.product_rank(mats) == 2
    assert case.hessian_bound() <= case.theory_lambda()


def test_a_cut_teacher_can_sit_above_aoyagis_lambda() -> None:
    """Run 2 of bench/default_audit.py (suite seed 151264383), case R4-L4: Aoyagi's λ = 102 is the
    global coefficient, but the Hessian at this teacher has rank 334, so its LLC there is at least 167."""
    case = dln.Case("R4-L4", (37, 57, 33, 13, 12), seed=1311266450, rank=2)
    assert case.theory_lambda() == 102
    assert case.hessian_bound() == _jacobian_rank(dln.teacher_matrices(case)) / 2 > case.theory_lambda()
