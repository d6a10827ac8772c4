"""Tutorial 3: pruning, from a mask to a smaller, faster model.

Run it:  python tutorials/03_pruning.py

1. A mask: `weight = weight_orig * weight_mask`, as torch.nn.utils.prune does it.
2. Gradual pruning while fine-tuning: a schedule raises the sparsity step by step.
3. Sensitivity: which layers tolerate pruning, one layer at a time.
4. Channel pruning + shrink: a genuinely smaller dense model.
5. Sparse inference: CSR weights and the sparse kernel, and a size report.
"""
import copy
import warnings

import numpy as np

import minicompress as mc
import minicompress.functional as F
import minicompress.prune as P
from minicompress import nn
from minicompress.optim import Adam
from minicompress.training import accuracy, digits_loaders, fit, parameter_count


def main(epochs=4, finetune_epochs=2, seed=0):
    results = {}
    # 1. Pruning a layer keeps the original weight as a Parameter and adds a 0/1 mask buffer; a forward
    #    pre-hook recomputes weight = weight_orig * weight_mask before each forward.
    layer = nn.Linear(4, 3)
    P.l1_unstructured(layer, "weight", amount=0.5)
    print("parameters:", [n for n, _ in layer.named_parameters()], " buffers:", [n for n, _ in layer.named_buffers()])
    print("mask (the 6 smallest |w| are pruned):\n", layer.weight_mask.numpy())
    P.remove(layer, "weight")  # make it permanent: a plain Parameter with zeros
    print("after remove:", [n for n, _ in layer.named_parameters()])

    # Train the float model once; every step below starts from a copy of it.
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=seed)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=epochs, lr=1e-2)
    results["float"] = accuracy(model, test_loader)
    print(f"\nfloat model: test accuracy {results['float']:.4f}, {parameter_count(model)} parameters")

    # 2. Gradual pruning to 50% (one L1 threshold across all conv and linear weights), the sparsity
    #    rising along a cubic (Zhu & Gupta 2017) while the model fine-tunes, then the masks stripped.
    gradual = copy.deepcopy(model)
    steps = finetune_epochs * len(train_loader)
    schedule = P.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=max(1, steps // 2), frequency=2)
    pruner = P.GradualPruner(gradual, schedule, method="global")
    optimizer = Adam(gradual.parameters(), lr=2e-3)
    for _ in range(finetune_epochs):
        gradual.train()
        for x, y in train_loader:
            pruner.step()
            optimizer.zero_grad()
            F.cross_entropy(gradual(x), y).backward()
            optimizer.step()
    P.strip_pruning(gradual)
    results["gradual 50%"] = accuracy(gradual, test_loader)
    print(f"gradual 50% global pruning: test accuracy {results['gradual 50%']:.4f}")
    print(P.sparsity_report(gradual))

    # 3. Sensitivity: prune each layer alone and measure; the model is left exactly as it was.
    sensitivity = P.sensitivity_analysis(model, lambda m: accuracy(m, test_loader), ratios=[0.5, 0.8, 0.95])
    print()
    print(sensitivity)
    results["sensitivity"] = sensitivity

    # 4. L2 channel pruning of every full convolution, then shrink: the zero channels are cut out of the
    #    conv, its BatchNorm, the depthwise conv that follows and the next layer's inputs. BatchNorm
    #    turns a pruned channel into a constant: shrink folds it into the next layer's bias where it is
    #    uniform and warns where a padded conv spreads it unevenly; the fine-tune below recovers that.
    channels = copy.deepcopy(model)
    for module in channels.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            P.ln_structured(module, "weight", amount=0.3, n=2, dim=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shrunk = P.shrink(channels)
    fit(shrunk, train_loader, epochs=finetune_epochs + 1, lr=1e-2)
    results["shrunk"] = accuracy(shrunk, test_loader)
    print(f"\n30% channels pruned and shrunk: {parameter_count(model)} -> {parameter_count(shrunk)} parameters, "
          f"test accuracy after fine-tuning {results['shrunk']:.4f}")
    print("stem:", shrunk.stem[0], " first block:", shrunk.blocks[0].conv.pointwise)

    # 5. Sparse inference: layers at least 50% zero keep their weight in CSR form and run the Numba
    #    sparse kernel; same outputs, fewer bytes.
    sparse_model = P.to_sparse(gradual, min_sparsity=0.5)
    x = next(iter(test_loader))[0]
    gradual.eval()
    difference = float(np.abs(sparse_model(x).data - gradual(x).data).max())
    results["sparse"] = accuracy(sparse_model, test_loader)
    print(f"\nsparse model: {sum(type(m).__name__.startswith('Sparse') for m in sparse_model.modules())} sparse "
          f"layers, test accuracy {results['sparse']:.4f}, largest difference from dense {difference:.2e}")
    report = P.sparsity_report(gradual)
    print(f"weights: {report.dense_bytes:,} bytes dense, {report.csr_bytes:,} bytes in CSR")
    return results


if __name__ == "__main__":
    main()
