"""fe-train: train the non-frozen parts of FreezeEmpath at cluster scale.

Importing this package is light: DeepSpeed, WebDataset and wandb are imported only
inside ``fe_train.engine``, ``fe_train.data`` and ``fe_train.tracking``.
"""

__version__ = "0.1.0"
