"""The MesoNet detector: models, shard reader, training, SVM head, evaluation and reports.

`from mesodata.detector import load_model` gives a run's network in eval mode (torch is imported
only when it is asked for, so `mesodata` without the detector extra still starts)."""

__all__ = ["load_model"]


def __getattr__(name: str):
    if name == "load_model":
        from .infer import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
