"""Per-step training time of every registered method on the embedded default (SmolLM2-135M), CPU.

    .venv/bin/python benchmarks/method_steps.py [--steps 4] [--methods lora,dora] [--set method.init=eva ...]

Each method runs the real `oneml.train` path (SFT on alpaca-demo, batch 4, max_length 256) for a few
steps; the figure is the mean optimizer-step time after the first step (which pays one-off costs).
The list of methods comes from the registry, so a new method is measured without editing this file.
``--set`` adds config overrides to every method measured (a LoRA init, say); ``setup s`` is the time from the
call to the first step: loading the model and data and applying the method (an SVD or a data-driven init shows
there, against the plain method's setup).
"""

from __future__ import annotations

import argparse
import tempfile

from transformers import TrainerCallback

from oneml import load_run_config, train
from oneml.methods import METHODS


class StepTimes(TrainerCallback):
    def __init__(self):
        import time

        self.clock, self.times, self._start = time.perf_counter, [], None
        self.called, self.setup = self.clock(), 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.setup = self.clock() - self.called

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(self.clock() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    parser.add_argument("--set", action="append", default=[], help="a config override for every method (repeatable)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="oneml-bench-")
    print(f"{'method':<12}{'s/step':>10}{'trainable %':>14}{'setup s':>10}  {' '.join(args.set)}")
    for name in args.methods.split(","):
        cfg = load_run_config(
            None,
            [f"method.name={name}", "model.name=smollm2-135m", "data.max_samples=64", "data.eval_size=4",
             "data.max_length=256", f"train.max_steps={args.steps}", "train.batch_size=4", "train.eval_before=false",
             "train.save_adapter=false", f"tracking.root={root}", *args.set],
        )  # fmt: skip
        timer = StepTimes()
        result = train(cfg, progress=False, callbacks=[timer])
        steady = timer.times[1:] or timer.times
        mean, share = sum(steady) / len(steady), result.metrics["trainable_percent"]
        print(f"{name:<12}{mean:>10.2f}{share:>14.3f}{timer.setup:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
