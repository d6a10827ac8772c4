"""Datasets and loading: TensorDataset, DataLoader and the bundled UCI digits."""
from .digits import load_digits, train_test_split_digits
from .loader import DataLoader, TensorDataset
