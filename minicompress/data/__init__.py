"""Datasets and loading: TensorDataset, DataLoader, the bundled UCI digits and the digit scenes made from them."""
from .digits import load_digits, train_test_split_digits
from .loader import DataLoader, TensorDataset
from .scenes import DigitScenes, digit_scene_sampler, load_digit_scenes
