"""MLflow tracking of every run, as one more sink of the run's events (see `tracker`).

The lifecycle (`trainer_worker.job_context.run_job`) makes a `Tracker` per attempt when
tracking is on and hands it every event the run publishes; nothing in the training loop or
in any model family knows about MLflow. mlflow itself is imported lazily on the sender thread
(`backend`).
"""
