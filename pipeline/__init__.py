"""The stream pipeline: event-time join, learning runs, checkpoints, replay, simulation and Kafka I/O."""
