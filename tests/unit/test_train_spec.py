"""Training specs: what a user writes maps onto the core's config, and bad specs name the field."""
from __future__ import annotations

import pytest
from google.protobuf import json_format

from lambdascope.v1 import trainer_pb2
from services.trainer import train_spec
from services.trainer.train_spec import SpecError


def spec_of(doc: dict) -> trainer_pb2.TrainSpec:
    base = {"model_name": "m", "architecture": {"mlp": {"widths": [64, 16, 10]}},
            "loss": "LOSS_KIND_CROSS_ENTROPY", "dataset": {"builtin": "digits"}}
    base.update(doc)
    return json_format.ParseDict(base, trainer_pb2.TrainSpec())


def test_a_full_spec_maps_onto_the_config():
    config = train_spec.train_config(spec_of({
        "optimizer": {"kind": "sgd", "learning_rate": 0.1, "momentum": 0.9,
                      "schedule": {"kind": "SCHEDULE_KIND_COSINE", "warmup_steps": 5},
                      "noise": {"kind": "NOISE_KIND_ANTI_PGD", "sigma": 0.01,
                                "distribution": "NOISE_DISTRIBUTION_RADEMACHER",
                                "stop_step": 100}},
        "steps": 300, "batch_size": 32, "seed": 4,
        "self_modeling": {"layer": 1, "weight": 5},
        "penalties": [{"site": "hidden.1", "kind": "PENALTY_KIND_L2", "weight": 0.1}],
        "routing": {"rules": [{"site": "hidden.1", "groups": [
            {"labels": {"labels": [0, 1]}, "units": {"start": 0, "stop": 8}},
            {"rows": {"start": 0, "stop": 100}, "values": {"values": [-0.75] * 16}}]}]},
        "checkpoints": {"steps": [10, 100]},
    }))
    assert (config.steps, config.epochs, config.batch_size, config.seed) == (300, 0, 32, 4)
    assert (config.optimizer, config.lr, config.momentum) == ("sgd", 0.1, 0.9)
    assert (config.schedule.kind, config.schedule.warmup_steps) == ("cosine", 5)
    assert config.noise is not None
    assert (config.noise.kind, config.noise.sigma, config.noise.distribution,
            config.noise.stop_step) == ("anti_pgd", 0.01, "rademacher", 100)
    assert (config.self_model_site, config.self_model_weight) == ("hidden.1", 5.0)
    assert [(p.site, p.kind, p.weight) for p in config.penalties] == [("hidden.1", "l2", 0.1)]
    assert [r.site for r in config.routing] == ["hidden.1"]
    assert config.checkpoint_at == (10, 100)
    assert config.task_outputs == 10 and not config.reconstruct


def test_defaults_and_synthetic_sources():
    config = train_spec.train_config(spec_of({}))
    assert (config.epochs, config.batch_size, config.optimizer, config.lr) == (20, 64, "adam", 1e-3)
    assert config.noise is None and config.schedule.kind == "constant"
    ae = train_spec.train_config(spec_of({
        "architecture": {"autoencoder": {"encoder_widths": [64, 32, 8]}},
        "loss": "LOSS_KIND_MAE"}))
    assert ae.reconstruct and ae.loss == "mae"
    quad = train_spec.train_config(spec_of({
        "architecture": {"quadratic": {"dim": 100, "init_scale": 0.1}}, "loss": "LOSS_KIND_MSE",
        "dataset": {"quadratic_regression": {"seed": 1}}, "optimizer": {"kind": "sgd"},
        "steps": 1000, "batch_size": 40}))
    assert quad.steps == 1000 and quad.task_outputs == 1


@pytest.mark.parametrize("doc, field", [
    ({"architecture": {}}, "spec.architecture is not set"),
    ({"architecture": {"mlp": {"widths": [64]}}}, "spec.architecture.mlp.widths"),
    ({"routing": {"rules": [{"site": "hidden.7", "groups": [
        {"labels": {"labels": [1]}, "units": {"start": 0, "stop": 4}}]}]}},
     "spec.routing.rules[0].site"),
    ({"routing": {"rules": [{"site": "hidden.1", "groups": [
        {"labels": {"labels": [12]}, "units": {"start": 0, "stop": 4}}]}]}},
     "spec.routing.rules[0].groups[0]"),
    ({"optimizer": {"kind": "sgd", "noise": {"kind": "NOISE_KIND_PGD", "sigma": -0.1}}},
     "spec.optimizer.noise.sigma"),
    ({"optimizer": {"noise": {"sigma": 0.1}}}, "spec.optimizer.noise"),
    ({"self_modeling": {"layer": 3, "weight": 1}}, "spec.self_modeling.layer"),
    ({"self_modeling": {"weight": 1}}, "spec.self_modeling.weight"),
    ({"architecture": {"mlp": {"widths": [32, 16, 10]}}}, "spec.dataset"),
    ({"architecture": {"mlp": {"widths": [64, 1]}}, "loss": "LOSS_KIND_MSE",
      "dataset": {"quadratic_regression": {}}}, "spec.dataset.quadratic_regression"),
    ({"dataset": {"builtin": "mnist"}}, "spec.dataset.builtin"),
    ({"dataset": {"dln_teacher": {"widths": [64, 10]}, "test_fraction": 0.2},
      "loss": "LOSS_KIND_MSE"}, "spec.dataset.test_fraction"),
    ({"epochs": 5, "steps": 100}, "spec.epochs and spec.steps"),
    ({"penalties": [{"site": "latent", "kind": "PENALTY_KIND_L1", "weight": 1}]},
     "spec.penalties[0].site"),
    ({"penalties": [{"site": "hidden.1", "weight": 1}]}, "spec.penalties[0]"),
    ({"architecture": {"autoencoder": {"encoder_widths": [64, 8]}}}, "spec.loss"),
    ({"optimizer": {"kind": "sgd", "schedule": {"kind": "SCHEDULE_KIND_STEP"}}},
     "spec.optimizer.schedule.step_every"),
    ({"model_name": "no spaces"}, "spec.model_name"),
])
def test_bad_specs_name_the_field(doc, field):
    with pytest.raises(SpecError) as err:
        train_spec.train_config(spec_of(doc))
    assert field in str(err.value)


def test_routing_by_labels_is_refused_for_regression_data():
    spec = spec_of({"architecture": {"mlp": {"widths": [4, 8, 2]}}, "loss": "LOSS_KIND_MSE",
                    "dataset": {"dln_teacher": {"widths": [4, 3, 2]}},
                    "routing": {"rules": [{"site": "hidden.1", "groups": [
                        {"labels": {"labels": [0]}, "units": {"start": 0, "stop": 4}}]}]}})
    with pytest.raises(SpecError, match=r"spec\.routing\.rules\[0\]"):
        train_spec.train_config(spec)


# ---------------------------------------------------------------------------- transformer


def transformer_spec(p: int = 11, extra: dict | None = None, **arch) -> trainer_pb2.TrainSpec:
    values = {"vocab_size": p, "context": 2, "width": 16, "heads": 2, "layers": 1, "outputs": p}
    values.update(arch)
    return spec_of({"architecture": {"transformer": values},
                    "dataset": {"modular_addition": {"modulus": p}, "test_fraction": 0.2},
                    **(extra or {})})


def test_a_transformer_trains_on_modular_addition_token_ids():
    config = train_spec.train_config(transformer_spec())
    assert config.task_outputs == 11 and config.loss == "cross_entropy"
    assert train_spec.takes_token_ids(transformer_spec().architecture)
    assert not train_spec.takes_token_ids(spec_of({}).architecture)
    assert train_spec.data_facts(transformer_spec()) == train_spec.DataFacts(121, 11, 11)
    assert train_spec.data_facts(spec_of({
        "architecture": {"mlp": {"widths": [22, 8, 11]}},
        "dataset": {"modular_addition": {"modulus": 11}}})).tokens is None  # one-hot floats
    # its one site is the head's input: self-modeling, penalties and routing take it
    techniques = transformer_spec(extra={
        "self_modeling": {"layer": 1, "weight": 1},
        "penalties": [{"site": "hidden.1", "kind": "PENALTY_KIND_L1", "weight": 0.1}],
        "routing": {"rules": [{"site": "hidden.1", "groups": [
            {"labels": {"labels": [0, 1]}, "units": {"start": 0, "stop": 8}}]}]}})
    config = train_spec.train_config(techniques)
    assert config.self_model_site == "hidden.1" and [r.width for r in config.routing] == [16]
    assert train_spec.model_architecture(techniques).transformer.outputs == 11 + 16


@pytest.mark.parametrize("arch, message", [
    ({"vocab_size": 10}, "spec.architecture.transformer: modular_addition with modulus 11 gives "
     "token ids 0..10 at 2 positions and 11 classes; set {vocab_size: 11, context: 2, "
     "outputs: 11} (got {vocab_size: 10, context: 2, outputs: 11})"),
    ({"context": 3}, "(got {vocab_size: 11, context: 3, outputs: 11})"),
    ({"outputs": 12}, "set {vocab_size: 11, context: 2, outputs: 11}"),
    ({"heads": 3}, "spec.architecture.transformer.width (16) must be a multiple of heads (3)"),
])
def test_transformer_sizes_must_fit_modular_addition(arch, message):
    with pytest.raises(SpecError) as err:
        train_spec.train_config(transformer_spec(**arch))
    assert message in str(err.value)


def test_transformer_refuses_float_sources_and_names_what_fits():
    spec = transformer_spec()
    spec.dataset.builtin = "digits"
    with pytest.raises(SpecError) as err:
        train_spec.train_config(spec)
    assert str(err.value).startswith("spec.dataset.builtin: architecture.transformer takes token "
                                     "ids") and "modular_addition" in str(err.value)


def test_vocabulary_is_checked_against_the_loaded_data():
    spec = transformer_spec()
    spec.dataset.dataset_id = "ds-1"
    train_spec.train_config(spec)  # before the data is loaded nothing is known
    train_spec.train_config(spec, train_spec.DataFacts(100, 11, 11))
    with pytest.raises(SpecError) as err:
        train_spec.train_config(spec, train_spec.DataFacts(100, 11, 40))
    assert str(err.value) == ("spec.architecture.transformer.vocab_size: the data has token ids "
                              "up to 39; set vocab_size to at least 40 (got 11)")


def test_registry_dataset_dtype_must_fit_the_architecture():
    from lambdascope.v1 import registry_pb2

    tokens = registry_pb2.Dataset(x_shape=[100, 2], x_dtype="int64")
    floats = registry_pb2.Dataset(x_shape=[100, 2], x_dtype="float32")
    train_spec.check_dataset(transformer_spec(), tokens)
    with pytest.raises(SpecError, match="dataset x is float32 but architecture.transformer takes "
                                        "integer token ids"):
        train_spec.check_dataset(transformer_spec(), floats)
    mlp = spec_of({"architecture": {"mlp": {"widths": [2, 4, 3]}}})
    train_spec.check_dataset(mlp, floats)
    with pytest.raises(SpecError, match=r"dataset x holds integer ids \(int64\) but "
                                        "architecture.mlp takes floating-point inputs"):
        train_spec.check_dataset(mlp, tokens)
    with pytest.raises(SpecError, match=r"takes \[batch, 2\]"):
        train_spec.check_dataset(transformer_spec(), registry_pb2.Dataset(x_shape=[100, 3],
                                                                          x_dtype="int64"))
