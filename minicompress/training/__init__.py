"""Training and measuring a model: the loops the tutorials, the compression stages and the jobs share.

    loops      digits_loaders, fit, train_epoch, predict, accuracy, parameter_count
    latency    measure_latency, latency_per_image: median wall time of a forward pass
    parallel   run_tasks: the independent evaluations of a sweep, here or on any Executor

    train_loader, test_loader = digits_loaders()
    fit(model, train_loader, epochs=15)
    print(accuracy(model, test_loader))
"""
from .latency import latency_per_image, measure_latency
from .loops import accuracy, digits_loaders, fit, parameter_count, predict, train_epoch

__all__ = ["accuracy", "digits_loaders", "fit", "latency_per_image", "measure_latency", "parameter_count", "predict",
           "train_epoch"]
