"""Differentiable ops: Function classes pairing a forward with its backward."""
