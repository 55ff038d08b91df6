"""Training as a plain-PyTorch library: a seeded minibatch loop that resumes exactly from its
checkpoints, with the techniques the trainer offers (self-modeling, Anti-PGD noise, gradient
routing, activation penalties), the synthetic tasks and the gradient-routing certificates. No
gRPC or protobuf here: the trainer service (which turns a TrainSpec into these terms), the
benchmarks and notebooks all call this.

    from lambdascope.training import TrainConfig, train
    config = TrainConfig(epochs=20, batch_size=64, lr=0.05, optimizer="sgd",
                         loss="cross_entropy", task_outputs=10)
    result = train(module, x_train, y_train, x_test, y_test, config)

Modules: `loop` (the loop, its config and resume state), `self_modeling`, `anti_pgd`,
`routing`, `penalties`, `sites` (activation sites via forward hooks), `datasets` (digits, the
synthetic tasks, the seeded split), `certificates`.
"""
from lambdascope.training.loop import (
    NoiseConfig,
    Schedule,
    TrainConfig,
    TrainResult,
    TrainState,
    evaluate,
    train,
)

__all__ = ["NoiseConfig", "Schedule", "TrainConfig", "TrainResult", "TrainState", "evaluate",
           "train"]
