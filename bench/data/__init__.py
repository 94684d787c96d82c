from bench.data.datasets import RealData, load_dataset, DATASETS

__all__ = ["RealData", "load_dataset", "DATASETS"]
