"""minicompress.prune.schedules: ConstantSparsity and PolynomialDecay, as tfmot's pruning_schedule.py.

Golden values are worked out by hand from the formulas (and tfmot's own test values for
PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)); the property tests use exact rational arithmetic and
the list of pruning steps spelled out with `range`, not the code under test.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.prune.schedules import ConstantSparsity, PolynomialDecay

SETTINGS = settings(max_examples=25, deadline=None)


def test_constant_sparsity_golden_values():
    schedule = ConstantSparsity(0.5, begin_step=100, end_step=200, frequency=10)
    for step, should_prune in [(90, False), (99, False), (100, True), (109, False), (110, True),
                               (111, False), (200, True), (201, False), (210, False)]:
        assert schedule(step) == (should_prune, 0.5), step


def test_constant_sparsity_prunes_forever_with_end_step_minus_one():
    schedule = ConstantSparsity(0.5, 0, -1, 10)
    assert schedule(10000) == (True, 0.5)
    assert schedule(100000000) == (True, 0.5)
    assert schedule(100000005) == (False, 0.5)


def test_constant_sparsity_with_end_equal_to_begin_prunes_once():
    schedule = ConstantSparsity(0.3, 10, 10, 1)
    assert [step for step in range(30) if schedule(step)[0]] == [10]


def test_polynomial_decay_golden_values():
    # tfmot's test: (0.2, 0.8, begin 100, end 110, power 3, frequency 2). By hand, step 102:
    # p = 0.2, 0.8 + (0.2 - 0.8) * 0.8 ** 3 = 0.8 - 0.6 * 0.512 = 0.4928; step 105: 0.8 - 0.6 * 0.125 = 0.725.
    schedule = PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    for step, should_prune, sparsity in [(90, False, 0.2), (100, True, 0.2), (102, True, 0.4928),
                                         (105, False, 0.725), (110, True, 0.8), (112, False, 0.8)]:
        got_prune, got_sparsity = schedule(step)
        assert got_prune is should_prune, step
        assert got_sparsity == pytest.approx(sparsity, rel=1e-12, abs=1e-15), step


def test_polynomial_decay_example_of_the_docstring():
    assert PolynomialDecay(0.0, 0.8, 0, 1000)(500) == (True, pytest.approx(0.7, rel=1e-12))
    assert PolynomialDecay(0.0, 0.9, 0, 100, power=1, frequency=1)(25) == (True, pytest.approx(0.225, rel=1e-12))


@SETTINGS
@given(begin=st.integers(0, 50), length=st.integers(0, 60), frequency=st.integers(1, 20),
       forever=st.booleans(), target=st.floats(0.0, 0.999))
def test_constant_sparsity_prunes_exactly_on_the_frequency_grid(begin, length, frequency, forever, target):
    end = -1 if forever else begin + length
    schedule = ConstantSparsity(target, begin, end, frequency)
    last = begin + length
    expected = list(range(begin, last + 1, frequency))
    assert [s for s in range(last + 1) if schedule(s)[0]] == expected
    assert schedule(begin + 1000 * frequency)[0] is forever
    assert all(schedule(s)[1] == target for s in range(last + 2))


@SETTINGS
@given(begin=st.integers(0, 50), length=st.integers(1, 60), frequency=st.integers(1, 20),
       initial=st.fractions(0, Fraction(99, 100), max_denominator=100),
       final=st.fractions(0, Fraction(99, 100), max_denominator=100), power=st.integers(1, 5))
def test_polynomial_decay_matches_exact_arithmetic(begin, length, frequency, initial, final, power):
    end = begin + length
    schedule = PolynomialDecay(float(initial), float(final), begin, end, power, frequency)
    for step in range(max(0, begin - 3), end + 4):
        fraction_done = min(Fraction(1), max(Fraction(0), Fraction(step - begin, length)))
        exact = final + (initial - final) * (1 - fraction_done) ** power
        should_prune, sparsity = schedule(step)
        assert sparsity == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
        assert should_prune is (begin <= step <= end and (step - begin) % frequency == 0)


@pytest.mark.parametrize("make, error, match", [
    (lambda: ConstantSparsity(0.5, -1), ValueError, "begin_step=-1"),
    (lambda: ConstantSparsity(0.5, 10, -5), ValueError, "end_step=-5"),
    (lambda: ConstantSparsity(0.5, 10, 5), ValueError, "end_step=5"),
    (lambda: ConstantSparsity(0.5, 10, 100, 0), ValueError, "frequency=0"),
    (lambda: ConstantSparsity(1.0, 0), ValueError, "target_sparsity=1.0"),
    (lambda: ConstantSparsity(-0.001, 0), ValueError, "target_sparsity"),
    (lambda: ConstantSparsity("0.5", 0), TypeError, "target_sparsity"),
    (lambda: ConstantSparsity(0.5, 1.5), TypeError, "begin_step"),
    (lambda: PolynomialDecay(0.4, 0.8, 10, -1), ValueError, "end_step=-1"),
    (lambda: PolynomialDecay(0.4, 0.8, 10, 10), ValueError, "greater than begin_step"),
    (lambda: PolynomialDecay(0.4, 0.8, 10, 5), ValueError, "end_step=5"),
    (lambda: PolynomialDecay(1.0, 0.8, 0, 10), ValueError, "initial_sparsity"),
    (lambda: PolynomialDecay(0.2, 10.0, 0, 10), ValueError, "final_sparsity"),
    (lambda: PolynomialDecay(0.2, 0.8, 0, 10, power=0), ValueError, "power=0"),
    (lambda: PolynomialDecay(0.2, 0.8, 0, 10, power="3"), TypeError, "power"),
    (lambda: PolynomialDecay(0.2, 0.8, 0, 10, frequency=-5), ValueError, "frequency=-5"),
    (lambda: ConstantSparsity(0.5, 0)(2.0), TypeError, "step"),
])
def test_bad_arguments_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_valid_edges_are_accepted():
    for sparsity in (0.0, 0.001, 0.5, 0.99):
        assert ConstantSparsity(sparsity, 0)(0) == (True, sparsity)
        assert PolynomialDecay(sparsity, 0.8, 0, 10)(0) == (True, pytest.approx(sparsity, rel=1e-12, abs=1e-15))
    assert ConstantSparsity(np.float32(0.5), np.int64(3))(3) == (True, 0.5)
