"""Datasets for the examples: MNIST, read straight from its IDX files.

>>> from tapegrad.datasets import resolve_data_dir
>>> resolve_data_dir("../shared/data").name
'data'
"""

from ._datasets import DatasetError as DatasetError
from ._datasets import load_mnist as load_mnist
from ._datasets import resolve_data_dir as resolve_data_dir
