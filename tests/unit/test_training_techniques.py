"""The training loop with the techniques switched on: resume, noise, routing, penalties,
self-modeling, reconstruction, synthetic tasks."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lambdascope import modules
from lambdascope.training import datasets
from lambdascope.training.loop import NoiseConfig, Schedule, TrainConfig, TrainState, train
from lambdascope.training.self_modeling import self_modeling_loss
from lambdascope.v1 import models_pb2, trainer_pb2
from services.trainer import resume, translate
from services.trainer.translate import (
    self_modeling_architecture,
    task_architecture,
    task_state_dict,
)



@pytest.fixture(scope="module")
def digits():
    x, y = datasets.load_digits_dataset()
    return datasets.split(x[:600], y[:600], 0.2, seed=0)


def mlp(*widths: int) -> models_pb2.Architecture:
    return models_pb2.Architecture(mlp=models_pb2.MLPArchitecture(widths=list(widths)))


def config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, lr=0.05, optimizer="sgd", loss="cross_entropy",
                task_outputs=10, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def run(data, cfg, arch=None, seed=0, **kw):
    module = modules.build_module(arch or mlp(64, 16, 10), seed=seed)
    result = train(module, data.x_train, data.y_train, data.x_test, data.y_test, cfg,
                   rows_train=data.rows_train, **kw)
    return module, result


def test_resume_from_a_checkpoint_reaches_the_same_weights_bit_for_bit(digits, tmp_path):
    cfg = config(epochs=3, momentum=0.9, nesterov=True, checkpoints=4,
                 noise=NoiseConfig(kind="anti_pgd", sigma=0.01, stop_step=50),
                 schedule=Schedule(kind="cosine", warmup_steps=5))
    states: list[TrainState] = []
    full, _ = run(digits, cfg, on_checkpoint=lambda step, w, state: states.append(state))
    assert len(states) == 4
    for state in states[1:3]:  # one mid-epoch checkpoint and one later
        path = tmp_path / f"state-{state.step}.safetensors"
        resume.write_state(path, state, versions=["v1"])
        loaded, versions = resume.read_state(path)
        assert versions == ["v1"] and loaded.step == state.step
        resumed, result = run(digits, cfg, resume=loaded)
        for name, tensor in full.state_dict().items():
            assert torch.equal(resumed.state_dict()[name], tensor), (state.step, name)
    # Kept by the registry for the job's worker: tests/integration/test_job_state.py


def test_resume_state_is_not_a_pickle(digits, tmp_path):
    cfg = config(epochs=1, optimizer="adam", lr=1e-3, checkpoints=2)
    states = []
    run(digits, cfg, on_checkpoint=lambda step, w, state: states.append(state))
    resume.write_state(tmp_path / resume.STATE_FILE, states[0], versions=[])
    raw = (tmp_path / resume.STATE_FILE).read_bytes()
    assert b"\x80\x04" not in raw[:64] and raw[8:9] == b"{"  # safetensors: length + JSON header
    loaded, _ = resume.read_state(tmp_path / resume.STATE_FILE)
    assert loaded.optimizer["state"].keys() == states[0].optimizer["state"].keys()


def test_noise_that_stops_at_step_one_is_no_noise_and_noise_changes_the_run(digits):
    plain, _ = run(digits, config())
    stopped, _ = run(digits, config(noise=NoiseConfig(kind="anti_pgd", sigma=0.5, stop_step=1)))
    noisy, _ = run(digits, config(noise=NoiseConfig(kind="anti_pgd", sigma=0.01)))
    for name, tensor in plain.state_dict().items():
        assert torch.equal(stopped.state_dict()[name], tensor)
    assert any(not torch.equal(noisy.state_dict()[n], t) for n, t in plain.state_dict().items())


def test_anti_pgd_checkpoints_hold_the_clean_weights(digits):
    """With lr so small that the gradient barely moves z, Anti-PGD's saved weights stay at the
    initial clean weights (within the gradient's tiny effect) even though σ is large, while
    PGD's saved weights carry the accumulated noise."""
    cfg = dict(epochs=1, lr=1e-9, checkpoints=3)
    init = modules.build_module(mlp(64, 16, 10), seed=0).state_dict()
    for kind, far in (("anti_pgd", False), ("pgd", True)):
        saved = []
        run(digits, config(noise=NoiseConfig(kind=kind, sigma=0.1), **cfg),
            on_checkpoint=lambda step, w, state: saved.append(w))
        drift = max(float((saved[-1][n] - t).abs().max()) for n, t in init.items())
        assert (drift > 0.1) == far, (kind, drift)


def test_routing_with_zero_masks_freezes_everything_below_the_site(digits):
    init = modules.build_module(mlp(64, 16, 10), seed=0).state_dict()
    zero = trainer_pb2.GradientRoutingSpec(rules=[trainer_pb2.RoutingRule(
        site="hidden.1", groups=[trainer_pb2.RouteGroup(
            labels=trainer_pb2.LabelSet(labels=list(range(10))),
            values=trainer_pb2.MaskValues(values=[0.0] * 16))])])
    rules = translate.compile_routing(zero, {"hidden.1": (16,)}, num_rows=600, num_classes=10)
    module, _ = run(digits, config(routing=tuple(rules)))
    state = module.state_dict()
    assert torch.equal(state["layers.0.weight"], init["layers.0.weight"])
    assert torch.equal(state["layers.0.bias"], init["layers.0.bias"])
    assert not torch.equal(state["layers.1.weight"], init["layers.1.weight"])


def test_penalty_is_added_and_reported(digits):
    from lambdascope.training.penalties import CompiledPenalty

    progress = []
    module, result = run(digits, config(penalties=(CompiledPenalty("hidden.1", "l2", 0.5),)),
                         on_progress=lambda s, t, m: progress.append(m))
    last = progress[-1]
    assert {"loss", "task_loss", "penalty", "lr", "steps_per_second", "epoch"} <= set(last)
    assert last["loss"] == pytest.approx(last["task_loss"] + last["penalty"], rel=1e-5)  # weighted
    plain, _ = run(digits, config())
    with torch.no_grad():
        h_pen = torch.relu(module.layers[0](digits.x_train)).pow(2).mean()
        h_plain = torch.relu(plain.layers[0](digits.x_train)).pow(2).mean()
    assert h_pen < h_plain  # the L2 control shrinks the activations


def test_self_model_target_is_detached():
    hidden = torch.randn(5, 3, requires_grad=True)
    outputs = torch.randn(5, 4 + 3, requires_grad=True)
    r = self_modeling_loss(outputs, hidden, torch.randint(0, 4, (5,)), 4, 10.0)
    r.self_model.backward()
    assert hidden.grad is None  # no gradient reaches h through the target
    assert outputs.grad is not None and outputs.grad[:, 4:].abs().sum() > 0
    assert torch.equal(outputs.grad[:, :4], torch.zeros(5, 4))


def test_self_modeling_trains_and_extra_outputs_are_removed_for_audits(digits):
    arch = self_modeling_architecture(mlp(64, 16, 10), 1)
    assert list(arch.mlp.widths) == [64, 16, 26]
    progress = []
    module, result = run(digits, config(epochs=15, momentum=0.9, self_model_site="hidden.1",
                                        self_model_weight=5.0),
                         arch=arch, on_progress=lambda s, t, m: progress.append(m))
    assert {"task_loss", "self_model_loss"} <= set(progress[-1])
    assert progress[-1]["self_model_loss"] < progress[0]["self_model_loss"]
    assert result.metrics["test_accuracy"] > 0.8
    base = task_architecture(arch, 10)
    assert base == mlp(64, 16, 10)
    cut = modules.build_module(base)
    modules.load_weights(cut, task_state_dict(module.state_dict(), arch, 10))
    with torch.no_grad():  # equal up to the summation order of a narrower matmul
        assert torch.allclose(cut(digits.x_test), module(digits.x_test)[:, :10], atol=1e-5)


def test_autoencoder_reconstructs_its_input(digits):
    arch = models_pb2.Architecture(autoencoder=models_pb2.AutoencoderArchitecture(
        encoder_widths=[64, 32, 8]))
    cfg = config(epochs=10, optimizer="adam", lr=3e-3, loss="mae", task_outputs=64,
                 reconstruct=True)
    _, result = run(digits, cfg, arch=arch)
    baseline = float((digits.x_test - digits.x_train.mean(0)).abs().mean())
    assert result.metrics["test_loss"] < 0.75 * baseline
    assert "test_accuracy" not in result.metrics


def test_quadratic_model_small_init_recovers_the_sparse_solution_large_init_does_not():
    """Implicit bias of the quadratic parametrisation (HaoChen et al.): from a small init, GD
    interpolates with the sparse w*; from init 1 it interpolates far from it."""
    data = datasets.quadratic_regression(seed=0)
    errors = {}
    for init in (0.01, 1.0):
        arch = models_pb2.Architecture(quadratic=models_pb2.QuadraticArchitecture(
            dim=100, init_scale=init))
        cfg = config(epochs=0, steps=4000, batch_size=1000, lr=0.05 if init < 1 else 0.01,
                     loss="mse", task_outputs=1)
        module, result = run(data, cfg, arch=arch)
        assert result.metrics["train_loss"] < 1e-3
        w_star = torch.zeros(100)
        w_star[:5] = 1.0
        errors[init] = float(((module.v.detach() ** 2 - w_star) ** 2).sum())
        # on x ~ N(0, I) the test MSE estimates ||v*v - w*||^2
        assert result.metrics["test_loss"] == pytest.approx(errors[init], rel=0.25)
    assert errors[0.01] < 0.01 and errors[1.0] > 10.0


def test_dln_teacher_and_modular_addition_data():
    spec = trainer_pb2.DLNTeacherData(widths=[6, 5, 4], rank=2, examples=200, seed=3)
    # the library's generator, and the same through the trainer's message translation
    a = datasets.dln_teacher([6, 5, 4], rank=2, examples=200, seed=3)
    b = translate.dln_teacher(spec)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (200, 6) and a.y_train.shape == (200, 4)
    assert a.x_test.shape == (1000, 6) and a.info["teacher_rank"] == 2
    assert float(a.x_train.abs().max()) <= 10.0
    assert int(torch.linalg.matrix_rank(a.y_train.double(), rtol=1e-5)) == 2  # float32 data
    with pytest.raises(ValueError, match="dln_teacher.rank"):
        datasets.dln_teacher([6, 5, 4], rank=5)
    x, y = datasets.modular_addition(7)
    assert x.shape == (49, 14) and torch.equal(x.sum(1), torch.full((49,), 2.0))
    a_, b_ = x[:, :7].argmax(1), x[:, 7:].argmax(1)
    assert torch.equal(y, (a_ + b_) % 7)
    tokens, y_tokens = translate.modular_addition(trainer_pb2.ModularAdditionData(modulus=7),
                                                  tokens=True)
    assert tokens.dtype == torch.int64 and tokens.shape == (49, 2)
    assert torch.equal(tokens, torch.stack([a_, b_], dim=1)) and torch.equal(y_tokens, y)


def test_a_transformer_trains_on_token_ids_and_bad_ids_are_refused():
    arch = models_pb2.Architecture(transformer=models_pb2.TransformerArchitecture(
        vocab_size=7, context=2, width=16, heads=1, layers=1, outputs=7))
    x, y = datasets.modular_addition(7, tokens=True)
    data = datasets.split(x, y, 0.0, seed=0)
    cfg = config(epochs=0, steps=400, batch_size=49, optimizer="adam", lr=0.01, task_outputs=7)
    _, result = run(data, cfg, arch)
    assert result.metrics["train_accuracy"] == 1.0  # all 49 sums memorised
    bad = dataclasses.replace(data, x_train=data.x_train - 1)
    with pytest.raises(ValueError, match="token ids in x must be non-negative, found -1"):
        run(bad, cfg, arch)
    beyond = dataclasses.replace(data, x_train=data.x_train.flip(0) + 7)  # ids 7..13
    with pytest.raises(ValueError, match="does not fit the model"):
        run(beyond, cfg, arch)


def test_explicit_checkpoint_steps_and_step_budget(digits):
    saved = []
    _, result = run(digits, config(epochs=0, steps=25, checkpoint_at=(3, 10, 99)),
                    on_checkpoint=lambda step, w, state: saved.append(step))
    assert result.steps == 25 and saved == [3, 10, 25]


def test_step_schedule_and_warmup_rates():
    s = Schedule(kind="step", warmup_steps=2, step_every=3, gamma=0.5)
    assert [s.factor(t, 10) for t in (1, 2, 3, 5, 6, 9)] == [0.5, 1.0, 1.0, 1.0, 0.5, 0.25]
    c = Schedule(kind="cosine")
    # decays towards 0 at the end of the run: the last step still has a small positive rate
    assert c.factor(1, 11) == 1.0 and c.factor(6, 11) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 11)))
    assert 0 < c.factor(11, 11) < 0.03


def test_bad_config_fields_are_named():
    for change, field in [(dict(noise=NoiseConfig(kind="pgd", sigma=-1.0)), "noise.sigma"),
                          (dict(noise=NoiseConfig(kind="x", sigma=1.0)), "noise.kind"),
                          (dict(schedule=Schedule(kind="step")), "schedule.step_every"),
                          (dict(epochs=0), "epochs"),
                          (dict(self_model_weight=1.0), "self_model_weight")]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(config(), **change).validate()


def test_paired_init_gives_the_self_model_network_the_plain_networks_initial_weights():
    from services.trainer.translate import paired_init

    arch = self_modeling_architecture(mlp(64, 16, 10), 1)
    plain = modules.build_module(mlp(64, 16, 10), seed=5).state_dict()
    widened = modules.build_module(arch, seed=5)
    before = widened.state_dict()  # unpaired: the output bias is drawn after more weight rows
    assert any(not torch.equal(before[n][: len(t)], t) for n, t in plain.items())
    head = widened.state_dict()["layers.1.weight"][10:].clone()
    paired_init(widened, arch, 10, seed=5)
    state = widened.state_dict()
    for name, tensor in plain.items():
        assert torch.equal(state[name][: len(tensor)], tensor), name
    assert torch.equal(state["layers.1.weight"][10:], head)  # the self-model rows keep theirs
