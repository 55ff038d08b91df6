"""Stage detection on a training run whose stages theory gives exactly (the fast version of
bench/stages.py): a deep linear network learning a rank-2 teacher one mode at a time. The flat
stages after the first rise must be the plateaus of ranks 1 and 2, each with λ̂ within 10% of
Aoyagi's λ for its rank (lambdascope.llc.theory), with the checkpoints audited against their
own outputs (AuditSettings.model_targets)."""
from __future__ import annotations

import pytest

from bench import saddles
from lambdascope.llc.llc import SGLDConfig
from lambdascope.llc.theory import dln_learning_coefficient

SINGULAR_VALUES = (10.0, 3.5)


@pytest.fixture(scope="module")
def run():
    checkpoints, x = saddles.train(0, 8000, saddles.log_spaced(8000, 5, first=300),
                                   singular_values=SINGULAR_VALUES)
    saddles.audit(checkpoints, x, SGLDConfig(seed=0, draws=1000, burnin=500))
    return checkpoints, saddles.plateaus(checkpoints)


def test_training_goes_through_one_plateau_per_rank(run):
    checkpoints, _ = run
    ranks = [c.rank for c in checkpoints]
    assert ranks == sorted(ranks) and set(ranks) == {0, 1, 2}
    assert sum(r == 1 for r in ranks) >= 2 and sum(r == 2 for r in ranks) >= 2


def test_stages_find_the_plateaus_with_the_theory_for_their_rank(run):
    checkpoints, (found, plateaus) = run
    assert [st.llc for st in found] == ["flat", "up", "flat", "up", "flat"], found
    learned = [p for p in plateaus if p.stage.first > 0]
    assert [p.rank for p in learned] == [1, 2]  # as many as the teacher's rank
    for p in learned:
        assert p.theory == dln_learning_coefficient(saddles.WIDTHS, p.rank)
        assert abs(p.rel_err) <= 0.10, (p.rank, p.llc, p.theory)
    # the rises are where the loss falls: what the stage labels say
    assert all(st.loss == "down" for st in found if st.llc == "up")


def test_model_targets_are_the_models_own_outputs_and_need_a_regression_loss():
    import torch

    from lambdascope.llc.audit import own_outputs
    from lambdascope.v1 import audit_pb2, models_pb2
    from services.estimator import audit_spec

    model = torch.nn.Linear(3, 2).eval()
    x = torch.randn(1000, 3)
    with torch.no_grad():
        assert torch.equal(own_outputs(model, x, batch_size=256), model(x))  # in batches, same numbers
    config = audit_pb2.AuditConfig(loss=models_pb2.LOSS_KIND_CROSS_ENTROPY, model_targets=True)
    with pytest.raises(audit_spec.SpecError, match="model_targets needs a regression loss"):
        audit_spec.audit_settings(config, 10_000_000)
    config.loss = models_pb2.LOSS_KIND_MSE
    assert audit_spec.audit_settings(config, 10_000_000).model_targets
