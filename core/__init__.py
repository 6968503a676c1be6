"""PneumoFL engine: data, model, training, events and persistence. Qt-free by contract."""

__version__ = "0.1.0"
