"""The MesoNet detector: models, shard reader, training, SVM head, evaluation and reports."""
