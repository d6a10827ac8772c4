"""Independent tasks of a sweep, run here one after another or on any `concurrent.futures.Executor`.

    results = run_tasks(evaluate_one, [(model_bytes, "conv1", 0.5, seed), ...], executor=None)

A sweep (`prune.sensitivity_analysis`, `quant.compare_quantization_methods`) is many independent
evaluations. With `executor=None` they run in this process, in order. With an executor (a local
`concurrent.futures.ProcessPoolExecutor`, Dask's `distributed.Client(...).get_executor()`, Ray's
`RayExecutor`) every task is submitted at once and the results are collected in task order, so the
sweep returns the same list either way. There is no scheduler here: placement, retries and scaling
are the executor's.

Each task must be self-contained, since it may run in another process or on another machine: the
function and its arguments (model, data, seed) are pickled by the executor (ProcessPoolExecutor uses
pickle, so `fn` and callables among the arguments must be module-level functions or
`functools.partial` of them; Dask and Ray use cloudpickle, which also takes lambdas), and nothing
may rely on state of the calling process such as the default random generator.
"""
import pickle

__all__ = ["run_tasks", "check_executor"]


def check_executor(executor):
    """Raise TypeError unless `executor` is None or has the `concurrent.futures.Executor` `submit`."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures.Executor (with a submit method) or None, "
                        f"got {type(executor).__name__}")
    return executor


def run_tasks(fn, tasks, executor=None):
    """[fn(*args) for args in tasks], in this process or on `executor`, in task order.

    On the first task that fails, the tasks not yet started are cancelled and its exception is
    raised; a task the executor cannot pickle raises TypeError saying what to pass instead.
    """
    check_executor(executor)
    tasks = [tuple(args) for args in tasks]
    if executor is None:
        return [fn(*args) for args in tasks]
    futures = []
    try:
        for args in tasks:
            futures.append(executor.submit(fn, *args))
        return [future.result() for future in futures]
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        if "pickle" not in str(exc).lower():
            raise
        raise TypeError(f"the executor could not send a task to its worker ({exc}); with a process pool, pass "
                        f"module-level functions (or functools.partial of them), not lambdas or local "
                        f"functions") from exc
    finally:
        for future in futures:
            future.cancel()
