"""Pruning schedules: when to prune during training, and to what sparsity.

Mirrors tensorflow_model_optimization's `pruning_schedule.py` (`ConstantSparsity`, `PolynomialDecay`).
A schedule is called with the training step and returns `(should_prune, sparsity)`:

    should_prune = begin_step <= step and (step <= end_step or end_step < 0)
                   and (step - begin_step) % frequency == 0

so pruning happens at begin_step, begin_step + frequency, ... up to end_step inclusive (forever if
end_step is -1). `sparsity` is the fraction of weights to be zero after pruning at that step; the caller
prunes to it (e.g. L1Unstructured(amount=sparsity) on the weight, not composed with the old mask).

Sparsity is a Python float computed in float64 (tfmot returns a float32 tensor).
"""
import numbers


def _check_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


def _check_sparsity(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {value!r} of type {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value} must be in the range [0, 1)")
    return float(value)


def _check_steps(begin_step, end_step, frequency, allow_forever):
    """tfmot's `_validate_step`, plus types. Returns the three as ints."""
    begin_step = _check_int(begin_step, "begin_step")
    end_step = _check_int(end_step, "end_step")
    frequency = _check_int(frequency, "frequency")
    if begin_step < 0:
        raise ValueError(f"begin_step={begin_step} must be >= 0")
    if end_step == -1 and not allow_forever:
        raise ValueError("end_step=-1 (prune forever) is not allowed here: the schedule needs an end")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(f"end_step={end_step} must be -1 or >= begin_step={begin_step}")
    if frequency < 1:
        raise ValueError(f"frequency={frequency} must be >= 1")
    return begin_step, end_step, frequency


class PruningSchedule:
    """Base class: `__call__(step) -> (should_prune, sparsity)`; subclasses set begin_step, end_step,
    frequency and define `sparsity(step)`."""

    def should_prune(self, step):
        """True at begin_step + k * frequency (k = 0, 1, ...) up to end_step inclusive (always if end_step < 0)."""
        step = _check_int(step, "step")
        in_range = self.begin_step <= step and (step <= self.end_step or self.end_step < 0)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def __call__(self, step):
        return self.should_prune(step), self.sparsity(step)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ConstantSparsity(PruningSchedule):
    """The same `target_sparsity` at every pruning step in [begin_step, end_step], every `frequency` steps.

    end_step=-1 prunes until training ends; end_step == begin_step prunes once, at begin_step.

    Example: ConstantSparsity(0.5, begin_step=100, frequency=100)(300) is (True, 0.5),
    and (250) is (False, 0.5).
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.begin_step, self.end_step, self.frequency = _check_steps(begin_step, end_step, frequency, True)
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")

    def sparsity(self, step):
        return self.target_sparsity


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial (Zhu & Gupta 2017,
    "To prune, or not to prune", arXiv:1710.01878):

        p        = clip((step - begin_step) / (end_step - begin_step), 0, 1)
        sparsity = final_sparsity + (initial_sparsity - final_sparsity) * (1 - p) ** power

    Fast at first, flattening out at final_sparsity: before begin_step it is initial_sparsity, after
    end_step final_sparsity. Pruning happens every `frequency` steps in [begin_step, end_step].
    end_step must be greater than begin_step (the formula divides by their difference; tfmot allows
    equality and divides by zero) and power positive.

    Example: PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000, power=3)(500)
    is (True, 0.8 - 0.8 * 0.5 ** 3) = (True, 0.7).
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        self.begin_step, self.end_step, self.frequency = _check_steps(begin_step, end_step, frequency, False)
        if self.end_step == self.begin_step:
            raise ValueError(f"end_step={end_step} must be greater than begin_step={begin_step}")
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
        if not isinstance(power, numbers.Real) or isinstance(power, bool):
            raise TypeError(f"power must be a number, got {power!r} of type {type(power).__name__}")
        if not power > 0:
            raise ValueError(f"power={power} must be > 0")
        self.power = power

    def sparsity(self, step):
        step = _check_int(step, "step")
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power
