"""Model Trainer worker: RQ jobs and the training engine."""
